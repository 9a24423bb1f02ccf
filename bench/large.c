/* large.c — multi-MiB churn: allocate big blocks, touch every page, free them again.
 *
 * Measures: the large-block path — mmap/munmap cost, page faults on fresh memory, and whether
 * the allocator caches freed mappings.  Two slots; each step frees the block in one slot and
 * puts a new one of random size (not page-aligned) there, writing one byte per 4 KiB page as a
 * program filling a buffer would.  Two programs are built from this file:
 *   bench_large  1..8 MiB blocks, 5000 steps: what a cache of freed mappings serves well;
 *   bench_huge   8..64 MiB blocks (BENCH_HUGE), 100 steps: beyond mimalloc's and jemalloc's
 *                caching, where mimalloc is slower than glibc (DESIGN.md's multi-MiB churn:
 *                glibc 3.4 s, mimalloc 20 s, tcmalloc 2.3 s on a long run).
 * At most two blocks are live at once.
 * Usage: bench_large [scale], bench_huge [scale]
 */
#include "common.h"

#define NSLOTS 2
#define PAGE   4096
#define MIB    ((size_t)1 << 20)
#ifdef BENCH_HUGE
#define MIN_SIZE   (8 * MIB)
#define MAX_SIZE   (64 * MIB)
#define BASE_STEPS 100
#else
#define MIN_SIZE   (1 * MIB)
#define MAX_SIZE   (8 * MIB)
#define BASE_STEPS 5000
#endif

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nsteps = scaled(BASE_STEPS, scale);
  unsigned char *slots[NSLOTS] = {0};
  size_t sizes[NSLOTS] = {0};
  rng_t rng = rng_make(2024);
  uint64_t sum = 0;

  for (size_t step = 0; step < nsteps; step++) {
    size_t k = step % NSLOTS;
    if (slots[k] != NULL) {
      for (size_t off = 0; off < sizes[k]; off += PAGE * 64) /* read back a sample */
        sum += slots[k][off];
      free(slots[k]);
    }
    size_t size = rng_range(&rng, MIN_SIZE, MAX_SIZE);
    unsigned char *p = xmalloc(size);
    for (size_t off = 0; off < size; off += PAGE)
      p[off] = (unsigned char)(off >> 12);
    p[size - 1] = 1;
    slots[k] = p;
    sizes[k] = size;
  }
  for (size_t k = 0; k < NSLOTS; k++)
    free(slots[k]);
  print_checksum(mix64(sum, nsteps));
  return 0;
}
