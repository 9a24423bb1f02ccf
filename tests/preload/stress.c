/* stress.c — randomized stress of the whole C family through libc's names, on the preload.
 *
 * Run with LD_PRELOAD=libobmem-preload.so (it uses no obmem name but obm_owns, found with
 * dlsym).  THREADS threads each run OPS steps over NSLOTS private slots plus a table of
 * shared slots that any thread may take a block from (so blocks are freed and realloc'ed by
 * threads that did not allocate them).  A slot holds nothing or one live block with its size,
 * alignment and an id; the block's bytes are a function of (id, offset).  Each step picks a
 * slot: an empty one gets a block from malloc, calloc (zeroes checked), realloc(NULL),
 * reallocarray, posix_memalign, aligned_alloc, memalign, valloc or pvalloc (alignment
 * checked); a full one is checked in full — or, above 4 KiB, its first and last KiB and 64
 * bytes of every 4 KiB — and then freed (free or cfree), realloc'ed (prefix checked), or
 * swapped with a shared slot.  malloc_usable_size must be at least the size asked for, and
 * every block must be obmem's.  With one thread, every CHECK_EVERY steps the live blocks are
 * sorted by address and their [p, p + usable) ranges must not overlap.
 * Sizes lean small but reach medium and large (up to 4 MiB).
 * Usage: stress [THREADS] [OPS] [SEED]   (env OBMEM_TEST_SEED)
 */
#include "preload_test.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define NSLOTS      2048
#define NSHARED     256
#define CHECK_EVERY 50000
#define KiB         ((size_t)1024)

typedef struct block_s {
  unsigned char *p;
  size_t size;
  size_t alignment; /* asked for; 0 = malloc's own */
  uint64_t id;
} block_t;

static long nthreads = 1, nops = 400000;
static _Atomic(block_t *) shared[NSHARED]; /* heap-allocated descriptors, handed over whole */
static void (*cfree_fn)(void *);

static size_t pick_size(uint64_t *rng) {
  uint64_t r = check_rand_below(rng, 1000);
  if (r < 700) return (size_t)check_rand_below(rng, 513);            /* small, 0 included */
  if (r < 960) return 513 + (size_t)check_rand_below(rng, 64 * KiB); /* medium */
  if (r < 995) return 64 * KiB + (size_t)check_rand_below(rng, 960 * KiB);
  return 1024 * KiB + (size_t)check_rand_below(rng, 3 * 1024 * KiB); /* large */
}

/* Offsets whose bytes are written and checked: all of a block up to 4 KiB; beyond that the
 * first and last KiB and 64 bytes of every 4 KiB. */
static int tracked(size_t i, size_t size) {
  return size <= 4 * KiB || i < KiB || i + KiB >= size || (i & 4095) < 64;
}

static void fill(block_t *b, size_t from) {
  for (size_t i = from; i < b->size; i++) {
    if (!tracked(i, b->size)) {
      i |= 4095;
      continue;
    }
    b->p[i] = check_pattern_byte(b->id, i);
  }
}

/* Checks the pattern over [0, upto) (one CHECK per block: the counter is shared). */
static void verify(const block_t *b, size_t upto) {
  size_t bad = SIZE_MAX;
  for (size_t i = 0; i < upto; i++) {
    if (!tracked(i, b->size)) {
      i |= 4095;
      continue;
    }
    if (b->p[i] != check_pattern_byte(b->id, i)) {
      bad = i;
      break;
    }
  }
  CHECKF(bad == SIZE_MAX, "block %p (id %llu, %zu bytes) damaged at offset %zu", (void *)b->p,
         (unsigned long long)b->id, b->size, bad);
}

static void check_new_block(const block_t *b) {
  CHECKF(b->p != NULL, "allocation of %zu bytes (alignment %zu) failed", b->size, b->alignment);
  CHECK(preload_owns(b->p));
  CHECK(((uintptr_t)b->p & 15) == 0);
  if (b->alignment)
    CHECKF(((uintptr_t)b->p & (b->alignment - 1)) == 0, "%p not aligned to %zu", (void *)b->p,
           b->alignment);
  CHECKF(malloc_usable_size(b->p) >= b->size, "usable %zu < %zu", malloc_usable_size(b->p),
         b->size);
}

static void allocate(block_t *b, uint64_t *rng, uint64_t id) {
  size_t page = 4096;
  b->id = id;
  b->size = pick_size(rng);
  b->alignment = 0;
  size_t a = (size_t)1 << (3 + check_rand_below(rng, 15)); /* 8 B .. 128 KiB */
  int zeroed = 0;
  switch (check_rand_below(rng, 12)) {
  case 0:
  case 1:
  case 2:
  case 3:
    b->p = malloc(b->size);
    break;
  case 4:
    b->p = calloc(1 + b->size / 64, 64);
    b->size = (1 + b->size / 64) * 64;
    zeroed = 1;
    break;
  case 5:
    b->p = realloc(NULL, b->size);
    break;
  case 6:
    b->p = reallocarray(NULL, b->size / 8 + 1, 8);
    b->size = (b->size / 8 + 1) * 8;
    break;
  case 7: {
    void *q = NULL;
    CHECK(posix_memalign(&q, a, b->size) == 0);
    b->p = q;
    b->alignment = a;
    break;
  }
  case 8:
    b->p = aligned_alloc(a, b->size);
    b->alignment = a;
    break;
  case 9:
    b->p = memalign(a, b->size);
    b->alignment = a;
    break;
  case 10:
    b->p = valloc(b->size);
    b->alignment = page;
    break;
  default:
    b->p = pvalloc(b->size);
    b->size = (b->size + page - 1) & ~(page - 1);
    if (b->size == 0) b->size = page;
    b->alignment = page;
    break;
  }
  check_new_block(b);
  if (zeroed) {
    size_t nonzero = 0;
    for (size_t i = 0; i < b->size; i += (i < 8192 ? 1 : 4093))
      nonzero += b->p[i] != 0;
    CHECKF(nonzero == 0, "calloc'ed block %p has %zu non-zero bytes", (void *)b->p, nonzero);
  }
  fill(b, 0);
}

static void release(block_t *b, uint64_t *rng) {
  verify(b, b->size);
  if (check_rand_below(rng, 8) == 0)
    cfree_fn(b->p);
  else
    free(b->p);
  b->p = NULL;
}

static void resize(block_t *b, uint64_t *rng) {
  verify(b, b->size);
  size_t old = b->size;
  size_t size = check_rand_below(rng, 2) ? pick_size(rng) : old + old / 2 + 1;
  unsigned char *q = realloc(b->p, size);
  CHECK(q != NULL && preload_owns(q));
  CHECK(malloc_usable_size(q) >= size);
  b->p = q;
  verify(b, old < size ? old : size); /* the prefix survived (offsets tracked at the old size) */
  b->size = size;
  b->alignment = 0;
  fill(b, 0);
}

static int by_address(const void *x, const void *y) {
  uintptr_t a = (uintptr_t)((const block_t *)x)->p, c = (uintptr_t)((const block_t *)y)->p;
  return a < c ? -1 : a > c;
}

static void check_no_overlap(const block_t *slots) {
  static block_t sorted[NSLOTS];
  size_t n = 0;
  for (size_t i = 0; i < NSLOTS; i++)
    if (slots[i].p) sorted[n++] = slots[i];
  qsort(sorted, n, sizeof sorted[0], by_address);
  for (size_t i = 1; i < n; i++) {
    uintptr_t end = (uintptr_t)sorted[i - 1].p + malloc_usable_size(sorted[i - 1].p);
    CHECKF(end <= (uintptr_t)sorted[i].p, "blocks %p (+%zu) and %p overlap",
           (void *)sorted[i - 1].p, malloc_usable_size(sorted[i - 1].p), (void *)sorted[i].p);
  }
}

static void *run(void *arg) {
  uintptr_t index = (uintptr_t)arg;
  uint64_t rng = check_seed * 0x100000001B3ull + index;
  block_t *slots = calloc(NSLOTS, sizeof *slots);
  CHECK(slots != NULL);
  for (long step = 0; step < nops; step++) {
    block_t *b = &slots[check_rand_below(&rng, NSLOTS)];
    uint64_t id = ((uint64_t)index << 48) | (uint64_t)step;
    if (!b->p) {
      allocate(b, &rng, id);
      continue;
    }
    uint64_t r = check_rand_below(&rng, 10);
    if (r < 5) {
      release(b, &rng);
    } else if (r < 8) {
      resize(b, &rng);
    } else if (nthreads > 1) {
      /* trade with the shared table: the block may be freed by another thread */
      block_t *mine = malloc(sizeof *mine);
      CHECK(mine != NULL);
      *mine = *b;
      block_t *theirs = atomic_exchange(&shared[check_rand_below(&rng, NSHARED)], mine);
      b->p = NULL;
      if (theirs) {
        verify(theirs, theirs->size);
        *b = *theirs;
        free(theirs);
      }
    } else {
      verify(b, b->size);
    }
    if (nthreads == 1 && step % CHECK_EVERY == 0) check_no_overlap(slots);
  }
  if (nthreads == 1) check_no_overlap(slots);
  for (size_t i = 0; i < NSLOTS; i++)
    if (slots[i].p) release(&slots[i], &rng);
  free(slots);
  return NULL;
}

int main(int argc, char **argv) {
  nthreads = check_arg_long(argc, argv, 1, NULL, 1);
  nops = check_arg_long(argc, argv, 2, NULL, 400000);
  check_seed_init("stress", argc, argv, 3, 3);
  preload_require_obmem();
  cfree_fn = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
  CHECK(cfree_fn != NULL);
  pthread_t threads[64];
  CHECK(nthreads >= 1 && nthreads <= 64);
  for (long i = 0; i < nthreads; i++)
    CHECK(pthread_create(&threads[i], NULL, run, (void *)(uintptr_t)i) == 0);
  for (long i = 0; i < nthreads; i++)
    CHECK(pthread_join(threads[i], NULL) == 0);
  for (size_t i = 0; i < NSHARED; i++) {
    block_t *b = atomic_exchange(&shared[i], NULL);
    if (b) {
      verify(b, b->size);
      free(b->p);
      free(b);
    }
  }
  return check_done();
}
