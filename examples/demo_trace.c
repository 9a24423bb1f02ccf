/* demo_trace.c — `make demo`'s second part: a small program with the memory problems the
 * tracer is for, run under `obmem run` and then `obmem report`.
 *
 * It parses "requests" into records kept in a cache.  Three things to find in the report:
 *   - a leak: cache_insert replaces an entry without freeing the old one (3 000 x 88 bytes);
 *   - the peak: load_batch holds a 4 MiB batch buffer while the cache is full;
 *   - temporary allocations: format_key builds a key string that is freed right away.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS 1000

typedef struct record_s {
  char key[32];
  long value;
  char payload[48];
} record_t;

static record_t *cache[NSLOTS];

__attribute__((noinline)) static char *format_key(int id) {
  char *key = malloc(32); /* temporary: freed by the caller at once */
  snprintf(key, 32, "request-%d", id);
  return key;
}

__attribute__((noinline)) static void cache_insert(int id, long value) {
  record_t *r = malloc(sizeof *r);
  char *key = format_key(id);
  snprintf(r->key, sizeof r->key, "%s", key);
  free(key);
  r->value = value;
  memset(r->payload, 'x', sizeof r->payload);
  cache[id % NSLOTS] = r; /* the leak: the old entry is dropped, never freed */
}

__attribute__((noinline)) static long load_batch(int n) {
  char *batch = malloc((size_t)n << 12); /* the peak: 4 KiB per request, all at once */
  memset(batch, 1, (size_t)n << 12);
  long sum = 0;
  for (int i = 0; i < n; i++)
    sum += batch[(size_t)i << 12];
  free(batch);
  return sum;
}

int main(void) {
  long sum = 0;
  for (int i = 0; i < 4000; i++)
    cache_insert(i, i * 7L);
  sum += load_batch(1024);
  for (int i = 0; i < NSLOTS; i++)
    free(cache[i]);
  printf("demo_trace: processed 4000 requests (checksum %ld)\n", sum);
  return 0;
}
