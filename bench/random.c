/* random.c — random sizes, random order: the general-purpose case.
 *
 * Measures: malloc/free/realloc throughput and fragmentation with a live set of 20000 slots.
 * Each step picks a random slot; an empty slot gets a new block, a full one is freed (or, one
 * time in 16, resized with realloc, which must keep the contents).  Sizes: mostly small
 * (8..512 B), some medium (up to 64 KiB), few large (up to 512 KiB) — see rng_mixed_size().
 * Usage: bench_random [scale]
 */
#include "common.h"

#define NSLOTS     20000
#define BASE_STEPS 12000000

typedef struct slot_s {
  void *ptr;
  size_t size; /* ptr != NULL => size >= 8 bytes are allocated at ptr */
} slot_t;

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nsteps = scaled(BASE_STEPS, scale);
  static slot_t slots[NSLOTS];
  rng_t rng = rng_make(42);
  uint64_t sum = 0, serial = 0;

  for (size_t step = 0; step < nsteps; step++) {
    slot_t *s = &slots[rng_below(&rng, NSLOTS)];
    if (s->ptr == NULL) {
      s->size = rng_mixed_size(&rng, 512 * 1024);
      s->ptr = xmalloc(s->size);
      tag_block(s->ptr, s->size, ++serial);
    } else if (rng_below(&rng, 16) == 0) {
      uint64_t tag = check_block(s->ptr, s->size);
      size_t new_size = rng_mixed_size(&rng, 512 * 1024);
      void *p = realloc(s->ptr, new_size);
      if (p == NULL) bench_fail("realloc returned NULL");
      uint64_t kept;
      memcpy(&kept, p, sizeof kept);
      if (kept != tag) bench_fail("realloc lost the block's contents");
      s->ptr = p;
      s->size = new_size;
      tag_block(p, new_size, tag);
    } else {
      sum = mix64(sum, check_block(s->ptr, s->size));
      free(s->ptr);
      s->ptr = NULL;
    }
  }
  for (size_t i = 0; i < NSLOTS; i++) {
    if (slots[i].ptr != NULL) {
      sum = mix64(sum, check_block(slots[i].ptr, slots[i].size));
      free(slots[i].ptr);
    }
  }
  print_checksum(mix64(sum, serial));
  return 0;
}
