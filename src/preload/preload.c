/* preload.c — libobmem-preload.so: replaces the C allocation functions for any dynamically
 * linked program (LD_PRELOAD).  The drop-in issue completes the family (C++ operators,
 * __libc_* aliases, fork safety); this covers what C programs call.
 */
#define _GNU_SOURCE
#include "obmem.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <stddef.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

EXPORT void *malloc(size_t size) {
  return obm_malloc(size);
}
/* obm_free preserves errno itself (only its system-call paths could change it). */
EXPORT void free(void *p) {
  obm_free(p);
}
void cfree(void *p);
EXPORT void cfree(void *p) {
  free(p);
}
EXPORT void *calloc(size_t n, size_t size) {
  return obm_calloc(n, size);
}
EXPORT void *realloc(void *p, size_t size) {
  return obm_realloc(p, size);
}
EXPORT void *reallocarray(void *p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return obm_realloc(p, total);
}
EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
  return obm_posix_memalign(out, alignment, size);
}
EXPORT void *aligned_alloc(size_t alignment, size_t size) {
  return obm_aligned_alloc(alignment, size);
}
EXPORT void *memalign(size_t alignment, size_t size) {
  return obm_aligned_alloc(alignment, size);
}
EXPORT void *valloc(size_t size) {
  return obm_aligned_alloc((size_t)sysconf(_SC_PAGESIZE), size);
}
EXPORT void *pvalloc(size_t size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return obm_aligned_alloc(page, (size + page - 1) & ~(page - 1));
}
EXPORT size_t malloc_usable_size(void *p) {
  return obm_usable_size(p);
}
