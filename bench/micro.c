/* micro.c — microbenchmark: nanoseconds per same-thread malloc+free pair, by size.
 *
 * Measures, for each size from 16 B to 1 MiB, two loops on one thread:
 *   single  malloc(size), write one byte, free — the best case of a thread cache;
 *   batch   malloc 100 blocks, write one byte in each, free the 100 (oldest first).
 * Iteration counts are fixed per size (never derived from timing), so the work is the same
 * under every allocator; only the printed nanoseconds depend on the clock.
 * Output: one line "ns <single|batch> <size> <ns per pair>" per measurement, then the checksum.
 * Usage: bench_micro [scale]
 */
#include "common.h"

#define BATCH 100

static const size_t sizes[] = {16,       64,        256,       512,        1024,
                               4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Pairs per loop, fixed per size and loop so that each takes ~20-150 ms with glibc.  The batch
 * loop gets fewer pairs from 4 KiB up: 100 such blocks no longer fit a thread cache, and glibc
 * then trims and refaults its heap on every batch (1.5-5 us per pair). */
static size_t single_pairs(size_t size) {
  return size <= 1024 ? 2000000 : 1000000;
}

static size_t batch_pairs(size_t size) {
  if (size <= 1024) return 1000000;
  if (size <= 4096) return 100000;
  if (size <= 16 * 1024) return 50000;
  if (size <= 64 * 1024) return 30000;
  return 20000;
}

static uint64_t single_loop(size_t size, size_t npairs) {
  uint64_t sum = 0;
  for (size_t i = 0; i < npairs; i++) {
    unsigned char *p = escape(xmalloc(size));
    p[0] = (unsigned char)i;
    sum += p[0];
    free(p);
  }
  return sum;
}

static uint64_t batch_loop(size_t size, size_t npairs) {
  unsigned char *blocks[BATCH];
  uint64_t sum = 0;
  for (size_t done = 0; done < npairs; done += BATCH) {
    for (size_t k = 0; k < BATCH; k++) {
      blocks[k] = escape(xmalloc(size));
      blocks[k][0] = (unsigned char)k;
    }
    for (size_t k = 0; k < BATCH; k++) {
      sum += blocks[k][0];
      free(blocks[k]);
    }
  }
  return sum;
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  uint64_t sum = 0;
  for (size_t s = 0; s < NSIZES; s++) {
    size_t nsingle = scaled(single_pairs(sizes[s]), scale);
    size_t nbatch = (scaled(batch_pairs(sizes[s]), scale) + BATCH - 1) / BATCH * BATCH;
    sum = mix64(sum, single_loop(sizes[s], nsingle / 10 + 1)); /* warm up the size class */

    double t0 = now_seconds();
    sum = mix64(sum, single_loop(sizes[s], nsingle));
    double t1 = now_seconds();
    sum = mix64(sum, batch_loop(sizes[s], nbatch));
    double t2 = now_seconds();
    printf("ns single %zu %.2f\n", sizes[s], (t1 - t0) * 1e9 / (double)nsingle);
    printf("ns batch %zu %.2f\n", sizes[s], (t2 - t1) * 1e9 / (double)nbatch);
  }
  print_checksum(sum);
  return 0;
}
