/* preload_test.h — what the C programs of tests/preload/ share (the C++ ones have their own
 * few lines: ../check.h is C11, with <stdatomic.h>).
 *
 * These programs allocate only through libc's names (malloc, free, new, ...), as any program
 * does, and run under LD_PRELOAD=libobmem-preload.so (or are linked with
 * libobmem-override.a).  They reach obmem itself only through dlsym(RTLD_DEFAULT, ...), to ask
 * whether a pointer is obmem's: preload_require_obmem() fails the test at once when obmem
 * does not serve the process (no preload, or a malloc that is not obmem's), so every test
 * here fails rather than passes vacuously when the preload is missing.
 * CHECK / CHECKF / check_rand come from ../check.h.
 */
#ifndef OBMEM_TESTS_PRELOAD_TEST_H
#define OBMEM_TESTS_PRELOAD_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../check.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int preload_owns_fn(const void *ptr);
static preload_owns_fn *preload_owns_ptr;

/* 1 when obmem handed out the memory at ptr. */
static inline int preload_owns(const void *ptr) {
  return preload_owns_ptr(ptr);
}

/* Finds obm_owns in the process and checks that malloc and glibc's own internal callers
 * (strdup) get their memory from obmem. */
static __attribute__((unused)) void preload_require_obmem(void) {
  union {
    void *object;
    preload_owns_fn *function;
  } sym;
  sym.object = dlsym(RTLD_DEFAULT, "obm_owns");
  CHECKF(sym.object != NULL,
         "obm_owns not found: is the program running with LD_PRELOAD=libobmem-preload.so?");
  preload_owns_ptr = sym.function;
  void *volatile p = malloc(24);
  CHECKF(preload_owns(p), "malloc is not obmem's");
  free(p);
  char *s = strdup("served by obmem");
  CHECKF(preload_owns(s), "strdup (glibc calling malloc) is not obmem's");
  free(s);
}

/* Keeps the compiler from removing an allocation it can see is never used. */
static __attribute__((unused, noinline)) void *preload_sink(void *p) {
  static void *volatile last;
  last = p;
  return last;
}

/* A size the compiler cannot see (no warnings about impossible requests made on purpose). */
static __attribute__((unused, noinline)) size_t preload_opaque(size_t size) {
  static volatile size_t value;
  value = size;
  return value;
}

#endif /* OBMEM_TESTS_PRELOAD_TEST_H */
