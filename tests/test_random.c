/* test_random.c — randomized differential test of the allocator against a shadow model.
 *
 * A unit test (uses _obm_heap_check_all from src/internal.h).  NSLOTS slots each hold
 * nothing or one live block: pointer, requested size, alignment and an id from which the
 * block's byte pattern is derived (check_pattern_byte(id, offset)).  Each step picks a slot:
 * an empty one gets a block from malloc, calloc, realloc(NULL), aligned_alloc or
 * posix_memalign; a full one is checked and then freed, realloc'ed (prefix checked after)
 * or just checked.  Sizes lean small but cover medium and large.  Every CHECK_EVERY steps the
 * live blocks are sorted by address and their [p, p + usable_size) ranges must not overlap,
 * stats must count exactly the live blocks, and the heap checker must find nothing.
 *
 * Patterns are written at "tracked" offsets: all of [0, 2048) and 64 bytes of every 4 KiB
 * page (a set that does not depend on the block size, so it survives realloc), plus the last
 * 64 bytes of the size at fill time.  Small blocks are thus covered byte for byte.
 *
 * Usage: test_random [SEED] [OPS] [NSLOTS]   (env: OBMEM_TEST_SEED, OBMEM_TEST_OPS)
 */
#include "internal.h"
#include "obmem.h"

#include "check.h"

#include <errno.h>
#include <stdbool.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define TAIL 64

typedef struct slot_s {
  unsigned char *p; /* NULL: empty */
  size_t size;      /* requested */
  size_t alignment; /* promised alignment (16 unless aligned_alloc/posix_memalign) */
  uint64_t id;      /* pattern id */
} slot_t;

static uint64_t rng;
static uint64_t step;
static slot_t *slots;
static long nslots;
static long nlive;

static void on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(0, "step %" PRIu64 ": error report code %d at %p: %s", step, (int)code, address,
         message);
}

/* Runs body for every tracked offset i below size: i < 2048 || (i & 4095) < 64. */
#define FOR_TRACKED(size, i, body)                                                            \
  do {                                                                                        \
    size_t i;                                                                                 \
    size_t lim_ = (size) < 2048 ? (size) : 2048;                                              \
    for (i = 0; i < lim_; i++) {                                                              \
      body;                                                                                   \
    }                                                                                         \
    for (size_t page_ = 4096; page_ < (size); page_ += 4096) {                                \
      size_t end_ = page_ + 64 < (size) ? page_ + 64 : (size);                                \
      for (i = page_; i < end_; i++) {                                                        \
        body;                                                                                 \
      }                                                                                       \
    }                                                                                         \
  } while (0)

static void fill_block(unsigned char *p, size_t size, uint64_t id) {
  FOR_TRACKED(size, i, p[i] = check_pattern_byte(id, i));
  for (size_t i = size > TAIL ? size - TAIL : 0; i < size; i++)
    p[i] = check_pattern_byte(id, i);
}

/* Checks tracked offsets below `upto`, and the tail of the size at fill time if asked. */
static void check_block(const slot_t *s, size_t upto, bool tail, const char *when) {
  const unsigned char *p = s->p;
  FOR_TRACKED(upto, i, {
    if (p[i] != check_pattern_byte(s->id, i))
      CHECKF(0, "step %" PRIu64 " %s: block %p (size %zu, id %" PRIu64 ") byte %zu is 0x%02x",
             step, when, (void *)p, s->size, s->id, i, p[i]);
  });
  if (tail) {
    for (size_t i = s->size > TAIL ? s->size - TAIL : 0; i < s->size; i++)
      if (p[i] != check_pattern_byte(s->id, i))
        CHECKF(0, "step %" PRIu64 " %s: block %p (size %zu) tail byte %zu is 0x%02x", step,
               when, (void *)p, s->size, i, p[i]);
  }
  atomic_fetch_add_explicit(&check_npassed, 1, memory_order_relaxed);
}

static void check_zero(const unsigned char *p, size_t size) {
  FOR_TRACKED(size, i, {
    if (p[i] != 0)
      CHECKF(0, "step %" PRIu64 ": calloc'd %p (size %zu) byte %zu is 0x%02x", step,
             (void *)p, size, i, p[i]);
  });
  for (size_t i = size > TAIL ? size - TAIL : 0; i < size; i++)
    CHECKF(p[i] == 0, "step %" PRIu64 ": calloc'd tail byte %zu", step, i);
}

/* 80 % small (mostly tiny), 18 % medium, ~2 % large; a few zeros. */
static size_t random_size(void) {
  uint64_t r = check_rand_below(&rng, 10000);
  if (r < 100)
    return 0;
  if (r < 8000) {
    uint64_t max = check_rand_below(&rng, 4) == 0 ? 512 : 128;
    return 1 + (size_t)check_rand_below(&rng, max);
  }
  if (r < 9800) { /* medium, log-uniform over 513 .. 64 KiB */
    int bits = 9 + (int)check_rand_below(&rng, 7);
    size_t lo = (size_t)1 << bits;
    return lo + 1 + (size_t)check_rand_below(&rng, lo);
  }
  if (r < 9990)
    return OBM_MEDIUM_MAX + 1 + (size_t)check_rand_below(&rng, MiB - OBM_MEDIUM_MAX);
  return MiB + (size_t)check_rand_below(&rng, 7 * MiB);
}

static size_t random_alignment(void) {
  uint64_t r = check_rand_below(&rng, 1000);
  if (r < 990)
    return (size_t)1 << check_rand_below(&rng, 13); /* 1 .. 4 KiB */
  return (size_t)1 << (13 + check_rand_below(&rng, 9)); /* 8 KiB .. 2 MiB */
}

static void allocate(slot_t *s) {
  size_t size = random_size();
  size_t alignment = OBM_ALIGNMENT;
  uint64_t op = check_rand_below(&rng, 100);
  bool zeroed = false;
  unsigned char *p;
  errno = 0;
  if (op < 50) {
    p = obm_malloc(size);
  } else if (op < 65) {
    size_t count = 1 + (size_t)check_rand_below(&rng, 4);
    size = (size + count - 1) / count;
    p = obm_calloc(count, size);
    size *= count;
    zeroed = true;
  } else if (op < 75) {
    p = obm_realloc(NULL, size);
  } else if (op < 88) {
    size_t a = random_alignment();
    p = obm_aligned_alloc(a, size);
    alignment = a > alignment ? a : alignment;
  } else {
    size_t a = random_alignment();
    if (a < sizeof(void *))
      a = sizeof(void *);
    void *out = NULL;
    int rc = obm_posix_memalign(&out, a, size);
    CHECKF(rc == 0, "step %" PRIu64 ": posix_memalign(%zu, %zu) = %d", step, a, size, rc);
    p = out;
    alignment = a > alignment ? a : alignment;
  }
  CHECKF(p != NULL, "step %" PRIu64 ": allocation of %zu bytes (op %" PRIu64 ") failed errno %d",
         step, size, op, errno);
  CHECKF(((uintptr_t)p & (alignment - 1)) == 0, "step %" PRIu64 ": %p not aligned to %zu", step,
         (void *)p, alignment);
  if (zeroed)
    check_zero(p, size);
  s->p = p;
  s->size = size;
  s->alignment = alignment;
  s->id = check_rand(&rng) | 1;
  fill_block(p, size, s->id);
  nlive++;
}

static void release(slot_t *s) {
  check_block(s, s->size, true, "before free");
  obm_free(s->p);
  s->p = NULL;
  nlive--;
}

static void reallocate(slot_t *s) {
  check_block(s, s->size, true, "before realloc");
  size_t size = check_rand_below(&rng, 4) == 0 ? s->size + check_rand_below(&rng, 64)
                                                 : random_size();
  if (check_rand_below(&rng, 8) == 0 && s->size > 0) /* shrink a little */
    size = s->size - (size_t)check_rand_below(&rng, s->size / 4 + 1);
  errno = 0;
  unsigned char *q = obm_realloc(s->p, size);
  CHECKF(q != NULL, "step %" PRIu64 ": realloc(%p, %zu -> %zu) failed errno %d", step,
         (void *)s->p, s->size, size, errno);
  CHECKF(((uintptr_t)q & (OBM_ALIGNMENT - 1)) == 0, "step %" PRIu64 ": realloc gave %p", step,
         (void *)q);
  size_t old_size = s->size;
  s->p = q;
  /* Tracked offsets of the common prefix survive; so does the old tail if it still fits. */
  check_block(s, old_size < size ? old_size : size, false, "after realloc");
  if (old_size <= size)
    check_block(s, 0, true, "after realloc (old tail)");
  s->size = size;
  s->alignment = OBM_ALIGNMENT;
  fill_block(q, size, s->id);
}

static int cmp_slot(const void *a, const void *b) {
  const slot_t *x = *(const slot_t *const *)a, *y = *(const slot_t *const *)b;
  return x->p < y->p ? -1 : x->p > y->p;
}

static void check_everything(void) {
  static slot_t **live;
  static obm_stats_t st;
  if (live == NULL) {
    live = malloc((size_t)nslots * sizeof *live);
    CHECK(live != NULL);
  }
  long n = 0;
  uint64_t bytes = 0;
  for (long i = 0; i < nslots; i++) {
    if (slots[i].p == NULL)
      continue;
    live[n++] = &slots[i];
    bytes += slots[i].size;
  }
  CHECK(n == nlive);
  qsort(live, (size_t)n, sizeof *live, cmp_slot);
  unsigned char *prev_end = NULL;
  for (long i = 0; i < n; i++) {
    slot_t *s = live[i];
    size_t usable = obm_usable_size(s->p);
    CHECKF(usable >= s->size, "step %" PRIu64 ": usable_size(%p) = %zu < %zu", step,
           (void *)s->p, usable, s->size);
    CHECKF(prev_end == NULL || s->p >= prev_end,
           "step %" PRIu64 ": block %p (size %zu) overlaps the previous one ending at %p", step,
           (void *)s->p, s->size, (void *)prev_end);
    CHECK(obm_owns(s->p));
    CHECK(usable == 0 || obm_owns(s->p + usable - 1));
    prev_end = s->p + usable;
  }
  obm_stats_get(&st);
  uint64_t blocks = st.large_blocks;
  for (int c = 0; c < OBM_NCLASSES; c++)
    blocks += st.classes[c].blocks_in_use;
  CHECKF(blocks == (uint64_t)n, "step %" PRIu64 ": stats count %" PRIu64 " live blocks, model %ld",
         step, blocks, n);
  CHECKF(st.bytes_in_use >= bytes, "step %" PRIu64 ": bytes_in_use %" PRIu64 " < %" PRIu64, step,
         st.bytes_in_use, bytes);
  CHECK(st.remote_frees_pending == 0);
  size_t problems = _obm_heap_check_all();
  CHECKF(problems == 0, "step %" PRIu64 ": _obm_heap_check_all() found %zu problems", step,
         problems);
}

int main(int argc, char **argv) {
  check_seed_init("test_random", argc, argv, 1, 20240601);
  long nops = check_arg_long(argc, argv, 2, "OBMEM_TEST_OPS", 2000000);
  nslots = check_arg_long(argc, argv, 3, NULL, 4096);
  CHECK(nops > 0 && nslots > 0);
  long check_every = nops / 40 > 1000 ? nops / 40 : 1000;
  if (check_every > 50000)
    check_every = 50000;
  rng = check_seed;
  obm_set_error_handler(on_error, NULL);
  slots = calloc((size_t)nslots, sizeof *slots);
  CHECK(slots != NULL);
  printf("test_random: seed %" PRIu64 ", %ld operations, %ld slots\n", check_seed, nops, nslots);
  fflush(stdout);

  for (step = 1; step <= (uint64_t)nops; step++) {
    slot_t *s = &slots[check_rand_below(&rng, (uint64_t)nslots)];
    if (s->p == NULL) {
      allocate(s);
    } else {
      uint64_t r = check_rand_below(&rng, 100);
      if (r < 50)
        release(s);
      else if (r < 85)
        reallocate(s);
      else
        check_block(s, s->size, true, "check");
    }
    if (step % (uint64_t)check_every == 0)
      check_everything();
    /* Now and then free a burst, so pools and arenas empty out and come back. */
    if (step % 200003 == 0) {
      for (long i = 0; i < nslots; i++)
        if (slots[i].p != NULL && check_rand_below(&rng, 8) != 0)
          release(&slots[i]);
      check_everything();
    }
  }
  check_everything();
  for (long i = 0; i < nslots; i++)
    if (slots[i].p != NULL)
      release(&slots[i]);
  check_everything();

  obm_stats_t *st = calloc(1, sizeof *st);
  CHECK(st != NULL);
  obm_stats_get(st);
  uint64_t in_use = 0;
  for (int c = 0; c < OBM_NCLASSES; c++)
    in_use += st->classes[c].blocks_in_use;
  CHECKF(in_use == 0, "%" PRIu64 " small/medium blocks in use after freeing all", in_use);
  CHECKF(st->large_blocks == 0, "%" PRIu64 " large blocks live after freeing all",
         st->large_blocks);
  CHECK(st->large_bytes == 0);
  CHECK(st->bytes_in_use == 0);
  obm_trim();
  obm_stats_get(st);
  CHECK(st->arenas_spare == 0);
  CHECK(st->large_cached_blocks == 0);
  CHECK(_obm_heap_check_all() == 0);
  free(st);
  free(slots);
  return check_done();
}
