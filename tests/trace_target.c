/* trace_target.c — a program with a known leak, temporary allocations and a peak, for
 * `obmem run` end to end (test_trace run): plain malloc/free, no stdio, so its own sites are
 * the only ones besides the C library's start-up.  The lines the test expects are marked. */
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

__attribute__((noinline)) static void *leak_site(size_t n) {
  void *p = malloc(n); /* LEAK_LINE */
  memset(p, 1, n);
  return p;
}

__attribute__((noinline)) static void temp_site(void) {
  for (int i = 0; i < 1000; i++) {
    char *p = malloc(64); /* TEMP_LINE */
    sink = p;
    free(p);
  }
}

__attribute__((noinline)) static void peak_site(void) {
  char *big = malloc(1 << 20); /* PEAK_LINE */
  sink = big;
  memset(big, 0, 1 << 20);
  free(big);
}

int main(void) {
  for (int i = 0; i < 7; i++)
    sink = leak_site(1000);
  temp_site();
  peak_site();
  return 0;
}
