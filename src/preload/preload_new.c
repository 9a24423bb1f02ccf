/* preload_new.c — every C++ replaceable allocation operator on obmem ([new.delete]), written
 * in C under their Itanium-ABI names (x86-64: size_t is `m`): new and new[] (plain, nothrow,
 * aligned, aligned + nothrow) and delete and delete[] (plain, sized, nothrow, aligned,
 * sized + aligned, aligned + nothrow): 8 + 12 functions, exported from libobmem-preload.so
 * and libobmem-override.a next to the C family in preload.c.
 *
 * Why C and not C++: a C++ file would make the preloaded library depend on libstdc++.so.6,
 * which then loads into every C program run on obmem (python3, git, sort...) and costs it
 * about 1 MiB of resident memory for nothing.  The operators need libstdc++ only when an
 * allocation fails, so its two functions are referenced weakly: they resolve when the
 * program has the C++ runtime (every program that calls operator new does), and are NULL
 * otherwise:
 *   std::get_new_handler()   _ZSt15get_new_handlerv
 *   std::__throw_bad_alloc() _ZSt17__throw_bad_allocv   (throws std::bad_alloc)
 *
 * Failure rules, as [new.delete.single]/4: the throwing forms call the installed new-handler
 * and retry, in a loop; with no handler they throw std::bad_alloc.  The exception passes
 * through these C frames by their unwind tables (the file is compiled with -fexceptions).
 * The nothrow forms return NULL where the throwing form would throw — also when the handler
 * itself throws bad_alloc, which needs a catch, which C cannot write: with a handler
 * installed, a failed nothrow allocation is handed to libstdc++'s own nothrow operator
 * (found with dlsym(RTLD_NEXT) on this failure path only, never on the allocation path),
 * which calls our throwing form inside its try/catch.  The fast path of every form is one
 * obmem call.  Sizes given to the sized deletes are not needed (obmem finds a block's size
 * from its address), and an alignment given to delete is implied by the block.
 */
#define _GNU_SOURCE
#include "obmem.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define COLD   __attribute__((noinline, cold))
#define UNUSED __attribute__((unused))

typedef void (*new_handler_t)(void);
extern new_handler_t _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));

/* Defined in preload.c: this reference makes a static link that takes the operators from
 * libobmem-override.a take the C family too, so that no program mixes two allocators. */
extern __attribute__((visibility("hidden"))) const char _obm_preload_c_family[];
__attribute__((used)) static const char *const keep_c_family = _obm_preload_c_family;

static void *allocate(size_t size, size_t alignment) {
  if (alignment <= OBM_ALIGNMENT) return obm_malloc(size);
  return obm_aligned_alloc(alignment, size);
}

static new_handler_t current_handler(void) {
  return _ZSt15get_new_handlerv ? _ZSt15get_new_handlerv() : NULL;
}

static _Noreturn COLD void throw_bad_alloc(size_t size) {
  if (_ZSt17__throw_bad_allocv) _ZSt17__throw_bad_allocv();
  /* operator new without the C++ runtime in the global scope (e.g. a program that loaded
   * its C++ code with dlopen(RTLD_LOCAL)): nothing to throw with */
  char msg[160];
  int n = snprintf(msg, sizeof msg,
                   "obmem: operator new(%zu) failed and std::bad_alloc cannot be thrown "
                   "(libstdc++ is not in the global scope); aborting\n",
                   size);
  if (n > 0) (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
  abort();
}

/* The new-handler loop, reached only after a failed allocation. */
static COLD void *allocate_or_throw_slow(size_t size, size_t alignment) {
  for (;;) {
    new_handler_t handler = current_handler();
    if (handler == NULL) throw_bad_alloc(size);
    handler(); /* may throw; the exception unwinds through here */
    void *p = allocate(size, alignment);
    if (p != NULL) return p;
  }
}

static inline void *allocate_or_throw(size_t size, size_t alignment) {
  void *p = allocate(size, alignment);
  if (__builtin_expect(p != NULL, 1)) return p;
  return allocate_or_throw_slow(size, alignment);
}

/* A failed nothrow allocation: NULL when no handler is installed; otherwise libstdc++'s own
 * operator of that form, `libname`, runs the handler loop under its catch. */
static COLD void *allocate_nothrow_slow(size_t size, size_t alignment, const char *libname) {
  if (current_handler() == NULL) return NULL;
  void *fn = dlsym(RTLD_NEXT, libname);
  if (fn == NULL) return allocate_or_throw_slow(size, alignment); /* cannot catch: let it fly */
  if (alignment <= OBM_ALIGNMENT)
    return ((void *(*)(size_t, const void *))fn)(size, NULL); /* nothrow_t: an empty tag */
  return ((void *(*)(size_t, size_t, const void *))fn)(size, alignment, NULL);
}

static inline void *allocate_nothrow(size_t size, size_t alignment, const char *libname) {
  void *p = allocate(size, alignment);
  if (__builtin_expect(p != NULL, 1)) return p;
  return allocate_nothrow_slow(size, alignment, libname);
}

/* ---- new ------------------------------------------------------------------------------ */
/* The prototypes keep -Wmissing-prototypes quiet; these names are only called from C++. */
#define NOTHROW_T const void * /* const std::nothrow_t &: an empty struct passed by address */

EXPORT void *_Znwm(size_t size);
EXPORT void *_Znam(size_t size);
EXPORT void *_ZnwmRKSt9nothrow_t(size_t size, NOTHROW_T tag);
EXPORT void *_ZnamRKSt9nothrow_t(size_t size, NOTHROW_T tag);
EXPORT void *_ZnwmSt11align_val_t(size_t size, size_t alignment);
EXPORT void *_ZnamSt11align_val_t(size_t size, size_t alignment);
EXPORT void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, NOTHROW_T tag);
EXPORT void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, NOTHROW_T tag);

void *_Znwm(size_t size) {
  return allocate_or_throw(size, 0);
}
void *_Znam(size_t size) {
  return allocate_or_throw(size, 0);
}
void *_ZnwmRKSt9nothrow_t(size_t size, NOTHROW_T tag) {
  (void)tag;
  return allocate_nothrow(size, 0, "_ZnwmRKSt9nothrow_t");
}
void *_ZnamRKSt9nothrow_t(size_t size, NOTHROW_T tag) {
  (void)tag;
  return allocate_nothrow(size, 0, "_ZnamRKSt9nothrow_t");
}
void *_ZnwmSt11align_val_t(size_t size, size_t alignment) {
  return allocate_or_throw(size, alignment);
}
void *_ZnamSt11align_val_t(size_t size, size_t alignment) {
  return allocate_or_throw(size, alignment);
}
void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, NOTHROW_T tag) {
  (void)tag;
  return allocate_nothrow(size, alignment, "_ZnwmSt11align_val_tRKSt9nothrow_t");
}
void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, NOTHROW_T tag) {
  (void)tag;
  return allocate_nothrow(size, alignment, "_ZnamSt11align_val_tRKSt9nothrow_t");
}

/* ---- delete: all twelve are obm_free (the extra arguments are ignored) ----------------- */

#define DELETE(name, ...)                                                                          \
  EXPORT void name(void *p, ##__VA_ARGS__);                                                        \
  void name(void *p, ##__VA_ARGS__) {                                                              \
    obm_free(p);                                                                                   \
  }
DELETE(_ZdlPv)
DELETE(_ZdaPv)
DELETE(_ZdlPvm, size_t size UNUSED)
DELETE(_ZdaPvm, size_t size UNUSED)
DELETE(_ZdlPvRKSt9nothrow_t, NOTHROW_T tag UNUSED)
DELETE(_ZdaPvRKSt9nothrow_t, NOTHROW_T tag UNUSED)
DELETE(_ZdlPvSt11align_val_t, size_t alignment UNUSED)
DELETE(_ZdaPvSt11align_val_t, size_t alignment UNUSED)
DELETE(_ZdlPvmSt11align_val_t, size_t size UNUSED, size_t alignment UNUSED)
DELETE(_ZdaPvmSt11align_val_t, size_t size UNUSED, size_t alignment UNUSED)
DELETE(_ZdlPvSt11align_val_tRKSt9nothrow_t, size_t alignment UNUSED, NOTHROW_T tag UNUSED)
DELETE(_ZdaPvSt11align_val_tRKSt9nothrow_t, size_t alignment UNUSED, NOTHROW_T tag UNUSED)
