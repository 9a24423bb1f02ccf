/* internal.h — declarations shared by obmem's layers; never included by include/ or tools.
 *
 * Naming: `_obm_<module>_<verb>` for hidden cross-file functions (OBM_HIDDEN), `static`
 * for everything else.  Checks come in levels: obm_assert (debug builds, cheap),
 * obm_assert_internal (debug builds), obm_assert_expensive (OBM_DEBUG > 2, whole structures).
 */
#ifndef OBM_INTERNAL_H
#define OBM_INTERNAL_H

#include "obmem.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef OBM_DEBUG
#define OBM_DEBUG 0
#endif
#ifndef OBM_DEBUG_DEFAULT
#define OBM_DEBUG_DEFAULT 0
#endif

#define OBM_HIDDEN      __attribute__((visibility("hidden")))
#define OBM_INLINE      static inline __attribute__((always_inline))
#define OBM_NOINLINE    __attribute__((noinline))
#define OBM_COLD        __attribute__((cold, noinline))
#define obm_likely(x)   __builtin_expect(!!(x), 1)
#define obm_unlikely(x) __builtin_expect(!!(x), 0)
#define OBM_CACHE_LINE  64

#define obm_assert(cond)                                                                           \
  do {                                                                                             \
    if (OBM_DEBUG > 0 && obm_unlikely(!(cond))) _obm_assert_fail(#cond, __FILE__, __LINE__);       \
  } while (0)
#define obm_assert_internal(cond) obm_assert(cond)
#define obm_assert_expensive(cond)                                                                 \
  do {                                                                                             \
    if (OBM_DEBUG > 2 && obm_unlikely(!(cond))) _obm_assert_fail(#cond, __FILE__, __LINE__);       \
  } while (0)

/* ---- error.c --------------------------------------------------------------------------- */
OBM_HIDDEN OBM_COLD void _obm_assert_fail(const char *cond, const char *file, int line);
/* The one path for detected misuse and corruption: formats one paragraph and calls the
 * handler set with obm_set_error_handler() (the default prints it and aborts). */
OBM_HIDDEN OBM_COLD void _obm_error(obm_error_t code, void *address, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A warning (unknown option, OS failure with OBMEM_VERBOSE): one line on stderr. */
OBM_HIDDEN OBM_COLD void _obm_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Formats into buf without allocating (safe inside the allocator, at exit and in a signal
 * handler); returns the length the whole text needs, as snprintf. */
OBM_HIDDEN int _obm_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
OBM_HIDDEN int _obm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Writes all of buf to fd without allocating. */
OBM_HIDDEN void _obm_write_fd(int fd, const char *buf, size_t len);
OBM_HIDDEN const char *_obm_program_name(void);

/* MurmurHash3's 64-bit finalizer: every bit of x moves every bit of the result (the tracer's
 * tables and stack hashes, str's hash, the sampler's seeds). */
OBM_INLINE uint64_t _obm_mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* ---- options.c ------------------------------------------------------------------------- */
OBM_HIDDEN void _obm_options_init(void); /* reads the environment once; idempotent */
extern OBM_HIDDEN long _obm_options[OBM_OPTION_COUNT];
OBM_INLINE long _obm_option(obm_option_t o) {
  return _obm_options[o];
}
/* Options whose value is text (not in the public enum: obm_option_get returns a number). */
typedef enum obm_string_option_e {
  OBM_STRING_OPTION_STATS_FILE, /* OBMEM_STATS_FILE: statistics to this file, %p = pid */
  OBM_STRING_OPTION_TRACE,      /* OBMEM_TRACE: trace from the start into this capture */
  OBM_STRING_OPTION_COUNT
} obm_string_option_t;
/* The value read by _obm_options_init (a copy), or NULL when unset or empty. */
OBM_HIDDEN const char *_obm_option_string(obm_string_option_t o);

/* ---- allocation hooks (alloc calls them, the tracer sets them) ------------------------ */
/* While hooks are installed (the tracer runs), every allocation entry point tests one global
 * (malloc's fast path: one load and a branch) and decides per allocation whether to record it:
 * always in exact mode (next_sample NULL), in sampled mode when the thread's byte countdown runs
 * out (the countdown is drawn again with next_sample).  A recorded block is allocated from the
 * thread's traced heap, whose arenas free's fast path does not serve, so the free hook is called
 * exactly for recorded blocks; other frees keep the fast path.  Hooks are called with no
 * allocator lock held, alloc, free and realloc with the thread muted (an allocation inside one
 * is plain; malloc mutes itself while it records),
 * alloc after success with the requested size, free before the block is released, realloc
 * with old NULL when the old block was not recorded.  After they are removed no hook is called
 * for a call that starts later; one already past the test may still call them.
 * malloc, when set (exact mode): malloc's recorded call whole, jumped to by the allocator in
 * place of allocating and calling alloc (its frame's return address is the program's call);
 * it allocates with _obm_traced_malloc and records the block as alloc would. */
typedef struct obm_alloc_hooks_s {
  void *(*malloc)(size_t size);
  void (*alloc)(void *p, size_t size);
  void (*free)(void *p);
  void (*realloc)(void *old, void *p, size_t size);
  int64_t (*next_sample)(void); /* bytes to the thread's next sample; NULL: record all */
} obm_alloc_hooks_t;
/* Installs (or, with NULL, removes) the hooks.  Not in debug mode (its blocks have their own
 * format): returns ENOTSUP there, else 0. */
OBM_HIDDEN int _obm_alloc_set_hooks(const obm_alloc_hooks_t *hooks);
/* Before installing hooks (none installed; takes the allocator's global lock, so not in a
 * fork handler): every thread's countdown is reset, so that each draws afresh in sampled mode
 * and records everything in exact mode.  A forked child that goes on with its parent's
 * session (same mode) keeps the countdowns it inherited. */
OBM_HIDDEN void _obm_alloc_arm_sampling(void);
/* Nonzero on a thread while its allocations must not be recorded (obmem's own threads, the
 * tracer's own work, a hook in progress). */
extern OBM_HIDDEN __thread int _obm_alloc_muted __attribute__((tls_model("initial-exec")));
/* A block from the thread's traced heap (what a recorded allocation returns), or a large block
 * marked traced; zeroed if asked (alloc.c).  _obm_traced_malloc(size) is
 * _obm_traced_raw(OBM_ALIGNMENT, size, 0) without the tests of the two constants (exact mode's
 * malloc hook). */
OBM_HIDDEN void *_obm_traced_raw(size_t alignment, size_t size, int zero);
OBM_HIDDEN void *_obm_traced_malloc(size_t size);

/* ---- os/os.c: the only code that talks to the kernel about memory ---------------------- */
/* Maps size bytes (a multiple of the page size) aligned to `alignment` (a power of two,
 * >= page size), read-write, zero-filled.  NULL on failure (errno ENOMEM). */
OBM_HIDDEN void *_obm_os_map(size_t size, size_t alignment);
OBM_HIDDEN void _obm_os_unmap(void *addr, size_t size);
/* Gives the physical pages back but keeps the range mapped (reads as zero afterwards). */
OBM_HIDDEN void _obm_os_decommit(void *addr, size_t size);
/* Grows or shrinks a mapping in place; 0 on success. */
OBM_HIDDEN int _obm_os_remap_inplace(void *addr, size_t old_size, size_t new_size);
/* Moves the pages of [addr, addr+old_size) to a fresh mapping of new_size bytes aligned to
 * `alignment`, without copying; returns the new address or NULL (the old one still valid). */
OBM_HIDDEN void *_obm_os_remap_move(void *addr, size_t old_size, size_t new_size, size_t alignment);
OBM_HIDDEN size_t _obm_os_page_size(void);
OBM_HIDDEN uint64_t _obm_os_thread_id(void);
OBM_HIDDEN uint64_t _obm_os_clock_ns(void); /* monotonic */
/* Monotonic with the kernel tick's resolution (a few ms), a few ns to read: purge timing. */
OBM_HIDDEN uint64_t _obm_os_clock_coarse_ns(void);
/* Starts one of obmem's own threads: every signal blocked (the program's signals are not its
 * business), a small stack, named `name` (obmem-...), detached unless `joinable`.  0 or an
 * error number. */
OBM_HIDDEN int _obm_os_thread_start(pthread_t *thread, const char *name, size_t stack_size,
                                    int joinable, void *(*fn)(void *));
OBM_HIDDEN size_t _obm_os_rss_bytes(void); /* resident set size from /proc/self/statm */
/* Fault injection for tests: the n-th fallible OS request from now fails (1 = the next one);
 * 0 turns it off.  Requests are calls of _obm_os_map (one however many mmaps it makes) and
 * in-place growth in _obm_os_remap_inplace.  _obm_os_map_calls counts raw mmap system calls,
 * so the two counts differ. */
OBM_HIDDEN void _obm_os_fail_map_after(long n);
OBM_HIDDEN uint64_t _obm_os_map_calls(void);
OBM_HIDDEN uint64_t _obm_os_unmap_calls(void);

/* ---- alloc: entry points used by other layers and tests --------------------------------- */
OBM_HIDDEN void _obm_init(void); /* process-wide initialization; idempotent, thread-safe */
/* alloc/stats.c: statistics reports (OBMEM_STATS at exit, OBMEM_STATS_SIGNAL, OBMEM_STATS_FILE).
 * _obm_stats_report_init runs once, from _obm_init after initialization (it may allocate);
 * the fork hooks run from init.c's pthread_atfork handlers, before every allocator lock is
 * taken and after they are released. */
OBM_HIDDEN void _obm_stats_report_init(void);
OBM_HIDDEN void _obm_stats_fork_prepare(void);
OBM_HIDDEN void _obm_stats_fork_parent(void);
OBM_HIDDEN void _obm_stats_fork_child(void);
/* From heap.c: the last thread that has a heap has exited (the statistics thread returns, so
 * that it does not keep the process alive), and a thread has a heap again (it restarts). */
OBM_HIDDEN void _obm_stats_threads_gone(void);
OBM_HIDDEN void _obm_stats_threads_back(void);
/* Whole-structure checker: every heap, arena, pool and the page map; returns problems found
 * (each reported through _obm_error with OBM_ERR_CORRUPTION).  Caller: no concurrent use. */
OBM_HIDDEN size_t _obm_heap_check_all(void);

#endif /* OBM_INTERNAL_H */
