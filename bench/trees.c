/* trees.c — binary trees, after the classic GC benchmark (Boehm's GCBench, benchmarks game).
 *
 * Measures: allocation and freeing of many identical small nodes (32 B here), built
 * depth-first and freed bottom-up, with one long-lived tree of MAX_DEPTH held for the whole
 * run.  For each depth d = 4, 6, ..., MAX_DEPTH it builds, checks and frees
 * 2^(MAX_DEPTH - d + 4) * scale trees of depth d.  This is the home ground of a size-class
 * allocator like CPython's pymalloc.
 * Usage: bench_trees [scale]
 */
#include "common.h"

#define MIN_DEPTH 4
#define MAX_DEPTH 16

typedef struct node_s {
  struct node_s *left, *right; /* both NULL (a leaf) or both non-NULL */
  uint64_t value;
  uint64_t pad; /* makes the node 32 bytes, a typical small object */
} node_t;

static node_t *make_tree(unsigned depth, uint64_t value) {
  node_t *n = xmalloc(sizeof *n);
  n->value = value;
  n->pad = 0;
  if (depth == 0) {
    n->left = n->right = NULL;
  } else {
    n->left = make_tree(depth - 1, 2 * value);
    n->right = make_tree(depth - 1, 2 * value + 1);
  }
  return n;
}

/* Sums the values (so the tree is read) and counts the nodes. */
static uint64_t check_tree(const node_t *n, uint64_t *nnodes) {
  (*nnodes)++;
  if (n->left == NULL) return n->value;
  return n->value + check_tree(n->left, nnodes) + check_tree(n->right, nnodes);
}

static void free_tree(node_t *n) {
  if (n->left != NULL) {
    free_tree(n->left);
    free_tree(n->right);
  }
  free(n);
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  uint64_t sum = 0, nnodes = 0;

  node_t *stretch = make_tree(MAX_DEPTH + 1, 1);
  sum = mix64(sum, check_tree(stretch, &nnodes));
  free_tree(stretch);

  node_t *long_lived = make_tree(MAX_DEPTH, 1);
  for (unsigned depth = MIN_DEPTH; depth <= MAX_DEPTH; depth += 2) {
    size_t iterations = scaled((size_t)1 << (MAX_DEPTH - depth + MIN_DEPTH), scale);
    uint64_t depth_sum = 0;
    for (size_t i = 0; i < iterations; i++) {
      node_t *t = make_tree(depth, i);
      depth_sum += check_tree(t, &nnodes);
      free_tree(t);
    }
    sum = mix64(sum, depth_sum);
  }
  sum = mix64(sum, check_tree(long_lived, &nnodes));
  free_tree(long_lived);
  print_checksum(mix64(sum, nnodes));
  return 0;
}
