/* libc_names.h — reruns the allocator engine's own tests through the preloaded libc names.
 *
 * Force-included (-include) when tests/preload/CMakeLists.txt compiles ../test_api.c,
 * ../test_threads.c and ../test_debug.c a second time: every obm_ allocation call becomes
 * the libc function of the same meaning (obm_malloc -> malloc, obm_free -> free, ...), the
 * executables link against libobmem-preload.so for obmem's other names (statistics, error
 * handler, obm_owns, obm_trim) and run with LD_PRELOAD=libobmem-preload.so.  So each block
 * the tests check went through the exported symbols the preload gives every program, and the
 * same engine answers the tests' questions about it.  Compiled with -fno-builtin, so the
 * compiler does not fold or drop malloc/free pairs as it may do with the known libc names.
 * A constructor fails the test before main when malloc, or glibc calling malloc, is not
 * obmem's.
 */
#ifndef OBMEM_TESTS_LIBC_NAMES_H
#define OBMEM_TESTS_LIBC_NAMES_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "obmem.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* obmem's functions, reached through the preloaded libc names ("(malloc)" is not expanded
 * by the macros below). */
#define obm_malloc(size)                         (malloc)(size)
#define obm_calloc(count, size)                  (calloc)(count, size)
#define obm_realloc(ptr, size)                   (realloc)(ptr, size)
#define obm_free(ptr)                            (free)(ptr)
#define obm_aligned_alloc(alignment, size)       (aligned_alloc)(alignment, size)
#define obm_posix_memalign(out, alignment, size) (posix_memalign)(out, alignment, size)
#define obm_usable_size(ptr)                     (malloc_usable_size)((void *)(ptr))

/* The tests call malloc/free by those names for "another allocator's blocks" (glibc's, when
 * they link obmem statically).  Under the preload malloc is obmem, so such calls get blocks
 * from this stand-in: a bump allocator in a private mapping that obmem never saw.  free()
 * of one of them is a no-op; any other pointer goes to the real free. */
#include <sys/mman.h>
#define LIBC_NAMES_FOREIGN_BYTES ((size_t)64 << 20)
static unsigned char *libc_names_foreign_base;
static size_t libc_names_foreign_used;

static __attribute__((unused)) void *libc_names_foreign_malloc(size_t size) {
  if (libc_names_foreign_base == NULL) {
    void *m = mmap(NULL, LIBC_NAMES_FOREIGN_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return NULL;
    libc_names_foreign_base = m;
  }
  size_t rounded = (size + 15) & ~(size_t)15;
  if (rounded > LIBC_NAMES_FOREIGN_BYTES - libc_names_foreign_used) return NULL;
  void *p = libc_names_foreign_base + libc_names_foreign_used;
  libc_names_foreign_used += rounded;
  return p;
}

static __attribute__((unused)) void libc_names_foreign_free(void *p) {
  unsigned char *c = p;
  if (libc_names_foreign_base != NULL && c >= libc_names_foreign_base &&
      c < libc_names_foreign_base + LIBC_NAMES_FOREIGN_BYTES)
    return;
  (free)(p);
}

#define malloc(size) libc_names_foreign_malloc(size)
#define free(ptr)    libc_names_foreign_free(ptr)

__attribute__((constructor)) static void libc_names_require_obmem(void) {
  void *p = (malloc)(40);
  char *s = strdup("obmem");
  if (!obm_owns(p) || !obm_owns(s)) {
    static const char msg[] = "libc_names: malloc is not obmem's (run with LD_PRELOAD)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(1);
    _exit(1);
  }
  (free)(s);
  (free)(p);
}

#endif /* OBMEM_TESTS_LIBC_NAMES_H */
