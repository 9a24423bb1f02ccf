/* align.c — alignment mix: posix_memalign, aligned_alloc and malloc interleaved.
 *
 * Measures: the cost of aligned requests (16 B .. 64 KiB alignments) and the memory they
 * waste, in a live set of 8192 slots replaced at random.  Alignments are mostly small
 * (16..256, as SIMD and cache-line aligned structures ask for), some page-sized (4 KiB), a few
 * 64 KiB; sizes follow rng_mixed_size (up to 256 KiB).  One request in three goes through
 * posix_memalign, one through aligned_alloc (size rounded up to a multiple of the alignment,
 * as C11 requires), one through plain malloc.  Every returned pointer's alignment is checked;
 * misaligned blocks are counted, reported on stderr and folded into the checksum, so run.sh
 * flags the allocator as "wrong" (Debian's mimalloc 2.0.9 fails here: aligned_alloc(a, n)
 * with n a multiple of a = 256..1024 returns misaligned blocks, upstream issue #700).
 * Usage: bench_align [scale]
 */
#include "common.h"

#define NSLOTS     8192
#define BASE_STEPS 6000000

typedef struct slot_s {
  void *ptr;
  size_t size; /* ptr != NULL => size bytes at ptr */
} slot_t;

static size_t pick_alignment(rng_t *rng) {
  uint64_t p = rng_below(rng, 100);
  if (p < 80) return (size_t)16 << rng_below(rng, 5);  /* 16 .. 256 */
  if (p < 95) return (size_t)512 << rng_below(rng, 4); /* 512 .. 4096 */
  return (size_t)8192 << rng_below(rng, 4);            /* 8 KiB .. 64 KiB */
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nsteps = scaled(BASE_STEPS, scale);
  static slot_t slots[NSLOTS];
  rng_t rng = rng_make(99);
  uint64_t sum = 0, serial = 0;
  size_t nmisaligned = 0, first_alignment = 0, first_size = 0;

  for (size_t step = 0; step < nsteps; step++) {
    slot_t *s = &slots[rng_below(&rng, NSLOTS)];
    if (s->ptr != NULL) {
      sum = mix64(sum, check_block(s->ptr, s->size));
      free(s->ptr);
      s->ptr = NULL;
      continue;
    }
    size_t size = rng_mixed_size(&rng, 256 * 1024);
    size_t alignment;
    void *p = NULL;
    switch (rng_below(&rng, 3)) {
    case 0:
      alignment = pick_alignment(&rng);
      if (posix_memalign(&p, alignment, size) != 0) bench_fail("posix_memalign failed");
      break;
    case 1:
      alignment = pick_alignment(&rng);
      size = (size + alignment - 1) & ~(alignment - 1);
      p = aligned_alloc(alignment, size);
      if (p == NULL) bench_fail("aligned_alloc returned NULL");
      break;
    default:
      /* malloc only promises alignment for the types that fit: mimalloc, jemalloc and
       * tcmalloc return 8-byte blocks aligned to 8, so that is all this checks. */
      alignment = 8;
      p = xmalloc(size);
      break;
    }
    if (((uintptr_t)p & (alignment - 1)) != 0 && nmisaligned++ == 0) {
      first_alignment = alignment;
      first_size = size;
    }
    s->ptr = p;
    s->size = size;
    tag_block(p, size, ++serial);
  }
  for (size_t i = 0; i < NSLOTS; i++) {
    if (slots[i].ptr != NULL) {
      sum = mix64(sum, check_block(slots[i].ptr, slots[i].size));
      free(slots[i].ptr);
    }
  }
  if (nmisaligned > 0)
    fprintf(stderr, "bench_align: %zu blocks misaligned (the first: alignment %zu, size %zu)\n",
            nmisaligned, first_alignment, first_size);
  print_checksum(mix64(mix64(sum, serial), nmisaligned));
  return 0;
}
