/* lifo.c — LIFO churn: blocks are freed in the reverse order of their allocation.
 *
 * Measures: the stack-like pattern of recursive code and scoped buffers.  Each round pushes a
 * random number (1..4096) of blocks and then pops them all, newest first.  Sizes: mostly small,
 * some medium, no large (rng_mixed_size with max_large 0).  An allocator with a LIFO free
 * list hands every block straight back to the next push.
 * Usage: bench_lifo [scale]
 */
#include "common.h"

#define MAX_DEPTH   4096
#define BASE_ROUNDS 4000

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nrounds = scaled(BASE_ROUNDS, scale);
  static void *stack[MAX_DEPTH];
  static size_t sizes[MAX_DEPTH];
  rng_t rng = rng_make(7);
  uint64_t sum = 0, serial = 0;

  for (size_t round = 0; round < nrounds; round++) {
    size_t depth = rng_range(&rng, 1, MAX_DEPTH);
    for (size_t i = 0; i < depth; i++) {
      sizes[i] = rng_mixed_size(&rng, 0);
      stack[i] = xmalloc(sizes[i]);
      tag_block(stack[i], sizes[i], ++serial);
    }
    while (depth > 0) {
      depth--;
      sum += check_block(stack[depth], sizes[depth]);
      free(stack[depth]);
    }
  }
  print_checksum(mix64(sum, serial));
  return 0;
}
