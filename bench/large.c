/* large.c — multi-MiB churn: allocate big blocks, touch every page, free them again.
 *
 * Measures: the large-block path — mmap/munmap cost, page faults on fresh memory, and whether
 * the allocator caches freed mappings.  Two slots; each step frees the block in one slot and
 * puts a new one of 1..8 MiB (random, not page-aligned) there, writing one byte per 4 KiB page
 * as a program filling a buffer would.  At most two blocks (16 MiB) are live at once.
 * DESIGN.md: on a long run of this pattern glibc took 3.4 s, mimalloc 20 s, tcmalloc 2.3 s.
 * Usage: bench_large [scale]
 */
#include "common.h"

#define NSLOTS 2
#define PAGE 4096
#define MIN_SIZE ((size_t)1 << 20)
#define MAX_SIZE ((size_t)8 << 20)
#define BASE_STEPS 5000

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
