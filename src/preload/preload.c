/* preload.c — the C allocation family on obmem, for LD_PRELOAD (libobmem-preload.so) and for
 * linking into a program (libobmem-override.a).
 *
 * Every name a dynamically linked program or glibc itself may call to allocate is defined
 * here with default visibility, so the first definition the dynamic linker finds (the
 * preloaded library, or the executable that linked the override archive) serves the whole
 * process: the program, every shared library, and glibc's own internal calls (strdup,
 * fopen, getline, qsort, dlopen's bookkeeping...), which go through the PLT to `malloc`.
 *
 *   standard        malloc free calloc realloc reallocarray posix_memalign aligned_alloc
 *   obsolete        memalign valloc pvalloc cfree malloc_usable_size
 *   glibc's names   __libc_malloc __libc_free __libc_calloc __libc_realloc __libc_memalign
 *                   __libc_valloc __libc_pvalloc: aliases of the above (glibc 2.36 exports
 *                   exactly these; code that wants "the real malloc" calls them, and memory
 *                   from glibc's allocator freed by ours would be a foreign pointer).
 *                   __posix_memalign is not exported by glibc 2.36, so nothing can bind it.
 *   glibc's extras  malloc_trim (obm_trim), malloc_stats (obm_stats_print), mallopt (accepted
 *                   and ignored), mallinfo / mallinfo2 (from obm_stats_get), so that programs
 *                   that report on their heap see obmem's, not glibc's empty one.
 * The C++ operators are in preload_new.c.
 *
 * Rules kept (as every malloc replacement must): no dlsym and no lazy lookup on the
 * allocation path (each function is a direct call into obmem, bound inside the library);
 * obmem initializes itself at its first call, so allocations made by ld.so after relocation,
 * by other libraries' constructors and before main work; thread heaps live in initial-exec
 * TLS; free preserves errno; fork safety and thread-exit release are the engine's
 * (pthread_atfork and a TLS key destructor, src/alloc/init.c).  A pointer obmem never handed
 * out goes through obmem's error path, which names the program and the address and aborts.
 *
 * Semantics where the standards leave a choice follow glibc 2.36, except realloc(p, 0),
 * which returns a minimum block (as obm_realloc, jemalloc and mimalloc) instead of freeing p
 * and returning NULL.  memalign/valloc/pvalloc accept any alignment up to OBM_MAX_ALIGNMENT
 * and round one that is not a power of two up to the next (glibc); aligned_alloc requires a
 * power of two (C17, and glibc from 2.38).
 */
#define _GNU_SOURCE
#include "obmem.h"

#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define EXPORT      __attribute__((visibility("default")))
#define ALIAS(name) __attribute__((alias(#name), copy(name), visibility("default")))

/* Referenced by preload_new.c so that linking the archive for the C++ operators also
 * brings in this object: the whole family then comes from obmem or none of it does. */
__attribute__((visibility("hidden"))) const char _obm_preload_c_family[] = "obmem";

static size_t page_size(void) {
  static size_t cached;
  size_t page = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (page == 0) {
    long value = sysconf(_SC_PAGESIZE);
    page = value > 0 ? (size_t)value : 4096;
    __atomic_store_n(&cached, page, __ATOMIC_RELAXED);
  }
  return page;
}

/* glibc's memalign: a small alignment is malloc's own, one that is not a power of two is
 * rounded up to the next power of two; beyond what obmem supports fails with EINVAL. */
static void *memalign_like_glibc(size_t alignment, size_t size) {
  if (alignment <= OBM_ALIGNMENT) return obm_malloc(size);
  if (alignment > OBM_MAX_ALIGNMENT) {
    errno = EINVAL;
    return NULL;
  }
  if (alignment & (alignment - 1)) alignment = (size_t)1 << (64 - __builtin_clzll(alignment));
  return obm_aligned_alloc(alignment, size);
}

/* ---- the standard family ------------------------------------------------------------- */

EXPORT void *malloc(size_t size) {
  return obm_malloc(size);
}

/* obm_free preserves errno itself (only its system-call paths could change it). */
EXPORT void free(void *ptr) {
  obm_free(ptr);
}

EXPORT void *calloc(size_t count, size_t size) {
  return obm_calloc(count, size);
}

EXPORT void *realloc(void *ptr, size_t size) {
  return obm_realloc(ptr, size);
}

EXPORT void *reallocarray(void *ptr, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return obm_realloc(ptr, total);
}

EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
  return obm_posix_memalign(out, alignment, size);
}

EXPORT void *aligned_alloc(size_t alignment, size_t size) {
  return obm_aligned_alloc(alignment, size);
}

EXPORT size_t malloc_usable_size(void *ptr) {
  return obm_usable_size(ptr);
}

/* ---- obsolete names, still exported by glibc ---------------------------------------- */

EXPORT void *memalign(size_t alignment, size_t size) {
  return memalign_like_glibc(alignment, size);
}

EXPORT void *valloc(size_t size) {
  return obm_aligned_alloc(page_size(), size);
}

/* The size rounded up to whole pages (at least one page). */
EXPORT void *pvalloc(size_t size) {
  size_t page = page_size();
  size_t rounded;
  if (__builtin_add_overflow(size, page - 1, &rounded)) {
    errno = ENOMEM;
    return NULL;
  }
  rounded &= ~(page - 1);
  return obm_aligned_alloc(page, rounded ? rounded : page);
}

/* Removed from glibc's headers in 2.26; old binaries still bind cfree@GLIBC_2.2.5. */
void cfree(void *ptr);
EXPORT void cfree(void *ptr) {
  obm_free(ptr);
}

/* ---- glibc's internal names --------------------------------------------------------- */

void *__libc_malloc(size_t size) ALIAS(malloc);
void __libc_free(void *ptr) ALIAS(free);
void *__libc_calloc(size_t count, size_t size) ALIAS(calloc);
void *__libc_realloc(void *ptr, size_t size) ALIAS(realloc);
void *__libc_memalign(size_t alignment, size_t size) ALIAS(memalign);
void *__libc_valloc(size_t size) ALIAS(valloc);
void *__libc_pvalloc(size_t size) ALIAS(pvalloc);

/* ---- glibc's malloc extras, answered by obmem --------------------------------------- */

EXPORT int malloc_trim(size_t pad) {
  (void)pad;
  obm_trim();
  return 1;
}

EXPORT void malloc_stats(void) {
  obm_stats_print(stderr);
}

/* glibc's tuning parameters (M_ARENA_MAX, M_MMAP_THRESHOLD...) have no meaning here;
 * accepting them keeps programs that set them from complaining. */
EXPORT int mallopt(int param, int value) {
  (void)param;
  (void)value;
  return 1;
}

/* arena: bytes in obmem's arenas; hblks/hblkhd: large blocks and their mappings;
 * uordblks: bytes handed out; fordblks: free bytes in pools and free pool slots. */
EXPORT struct mallinfo2 mallinfo2(void) {
  obm_stats_t st;
  obm_stats_get(&st);
  struct mallinfo2 mi = {0};
  mi.arena = (size_t)(st.arenas_current * OBM_ARENA_SIZE);
  mi.hblks = (size_t)st.large_blocks;
  mi.hblkhd = (size_t)st.large_mapped_bytes;
  mi.uordblks = (size_t)st.bytes_in_use;
  mi.fordblks = (size_t)(st.bytes_free_in_pools + st.bytes_free_pools);
  mi.usmblks = (size_t)st.bytes_mapped_peak;
  return mi;
}

/* The old interface with int fields (values saturate at INT_MAX). */
static int clamp_int(size_t v) {
  return v > (size_t)INT32_MAX ? INT32_MAX : (int)v;
}
EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo mi = {0};
  mi.arena = clamp_int(m2.arena);
  mi.hblks = clamp_int(m2.hblks);
  mi.hblkhd = clamp_int(m2.hblkhd);
  mi.uordblks = clamp_int(m2.uordblks);
  mi.fordblks = clamp_int(m2.fordblks);
  mi.usmblks = clamp_int(m2.usmblks);
  return mi;
}
