/* demo_alloc.c — an allocation-heavy program for `make demo`: it builds what a small
 * interpreter builds (strings, a hash table of records, trees, growing buffers, a few large
 * arrays), frees part of it, and lets OBMEM_STATS=1 show the size classes, pools and arenas
 * at exit.  Deterministic (fixed seed).
 */
#include "obmem.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

typedef struct node_s {
  struct node_s *left, *right;
  long value;
} node_t;

static node_t *tree(int depth) {
  node_t *n = obm_malloc(sizeof *n);
  n->value = depth;
  n->left = depth > 0 ? tree(depth - 1) : NULL;
  n->right = depth > 0 ? tree(depth - 1) : NULL;
  return n;
}

static long tree_free(node_t *n) {
  if (!n) return 0;
  long s = n->value + tree_free(n->left) + tree_free(n->right);
  obm_free(n);
  return s;
}

typedef struct record_s {
  char *key;
  double *values;
  size_t nvalues;
  struct record_s *next;
} record_t;

int main(void) {
  enum { NBUCKETS = 1 << 14, NRECORDS = 200000 };
  record_t **table = obm_calloc(NBUCKETS, sizeof *table);
  long checksum = 0;
  for (int i = 0; i < NRECORDS; i++) {
    record_t *r = obm_malloc(sizeof *r);
    char buf[64];
    int len = snprintf(buf, sizeof buf, "key-%d-%llu", i, (unsigned long long)(next_random() % 1000));
    r->key = obm_malloc((size_t)len + 1);
    memcpy(r->key, buf, (size_t)len + 1);
    r->nvalues = 1 + next_random() % 40;
    r->values = obm_calloc(r->nvalues, sizeof(double));
    size_t b = (size_t)(next_random() % NBUCKETS);
    r->next = table[b];
    table[b] = r;
  }
  /* a growing buffer, as a string builder does */
  char *text = NULL;
  size_t used = 0, cap = 0;
  for (int i = 0; i < 100000; i++) {
    if (used + 32 > cap) {
      cap = cap ? cap * 2 : 64;
      text = obm_realloc(text, cap);
    }
    used += (size_t)snprintf(text + used, cap - used, "%d,", i);
  }
  checksum += (long)used;
  /* trees: many short-lived small objects */
  for (int round = 0; round < 20; round++) checksum += tree_free(tree(14));
  /* a few large arrays */
  for (int i = 0; i < 8; i++) {
    size_t n = (1u << 20) + (size_t)(next_random() % (4u << 20));
    uint8_t *big = obm_malloc(n);
    memset(big, i, n);
    checksum += big[n / 2];
    obm_free(big);
  }
  /* drop every other bucket: partly used pools and arenas remain */
  for (int b = 0; b < NBUCKETS; b += 2) {
    record_t *r = table[b];
    while (r) {
      record_t *next = r->next;
      checksum += (long)r->nvalues;
      obm_free(r->key);
      obm_free(r->values);
      obm_free(r);
      r = next;
    }
    table[b] = NULL;
  }
  printf("demo_alloc: checksum %ld, text of %zu bytes\n", checksum, used);
  printf("demo_alloc: half of the records are still live; OBMEM_STATS=1 prints the allocator's "
         "view at exit\n");
  obm_free(text);
  return 0;
}
