/* bad_free.c — hands the preloaded allocator a pointer it never gave out.
 *
 * Usage: bad_free MODE, MODE one of
 *   stack      free() of a local variable's address
 *   static     free() of a global variable's address
 *   interior   free() of an address 16 bytes inside a live malloc'ed block
 *   realloc    realloc() of a local variable's address
 * It prints "bad pointer: 0x..." (the address, as %p) on stdout, then makes the call.  Under
 * LD_PRELOAD=libobmem-preload.so obmem must report it on stderr (program name and address)
 * and abort; bad_free.sh checks that.  Reaching the end of main is a failure (exit 1).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char global_buffer[64];

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: bad_free stack|static|interior|realloc\n");
    return 2;
  }
  char local[64];
  volatile char *bad;
  if (strcmp(argv[1], "stack") == 0 || strcmp(argv[1], "realloc") == 0) {
    bad = local;
  } else if (strcmp(argv[1], "static") == 0) {
    bad = global_buffer;
  } else if (strcmp(argv[1], "interior") == 0) {
    char *block = malloc(200);
    if (!block) return 1;
    bad = block + 16;
  } else {
    fprintf(stderr, "bad_free: unknown mode %s\n", argv[1]);
    return 2;
  }
  printf("bad pointer: %p\n", (void *)bad);
  fflush(stdout);
  if (strcmp(argv[1], "realloc") == 0) {
    void *volatile result = realloc((void *)bad, 100);
    printf("realloc returned %p\n", result);
  } else {
    free((void *)bad);
  }
  printf("the bad pointer was accepted\n");
  return 1;
}
