/* fifo.c — FIFO churn: a queue of blocks in which the oldest block is always freed first.
 *
 * Measures: the pattern of message queues, caches with LRU eviction and request pipelines,
 * where blocks live for a fixed number of steps.  A ring of 50000 slots; each step frees the
 * oldest block (once the ring is full) and allocates a new one.  Sizes: mostly small, some
 * medium, a few large up to 256 KiB.  Free lists are walked in the opposite order from a LIFO
 * pattern, so this exposes allocators whose reuse depends on recency.
 * Usage: bench_fifo [scale]
 */
#include "common.h"

#define QUEUE_LEN  50000
#define BASE_STEPS 3000000

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nsteps = scaled(BASE_STEPS, scale);
  static void *ring[QUEUE_LEN];
  static size_t sizes[QUEUE_LEN];
  rng_t rng = rng_make(11);
  uint64_t sum = 0, serial = 0;
  size_t head = 0, count = 0; /* oldest block at ring[head]; count blocks queued */

  for (size_t step = 0; step < nsteps; step++) {
    if (count == QUEUE_LEN) {
      sum += check_block(ring[head], sizes[head]);
      free(ring[head]);
      head = (head + 1) % QUEUE_LEN;
      count--;
    }
    size_t tail = (head + count) % QUEUE_LEN;
    sizes[tail] = rng_mixed_size(&rng, 256 * 1024);
    ring[tail] = xmalloc(sizes[tail]);
    tag_block(ring[tail], sizes[tail], ++serial);
    count++;
  }
  while (count > 0) {
    sum += check_block(ring[head], sizes[head]);
    free(ring[head]);
    head = (head + 1) % QUEUE_LEN;
    count--;
  }
  print_checksum(mix64(sum, serial));
  return 0;
}
