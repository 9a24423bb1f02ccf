/* obmem.h — the obmem allocator: allocation API, statistics, options and errors.
 *
 * obmem is CPython's small-object allocator (size classes -> blocks, pools, arenas) made
 * thread-safe and extended to every size:
 *   small   1 .. 512 B       32 classes, 16 B apart, in 16 KiB pools
 *   medium  513 B .. 64 KiB  28 geometric classes (4 per doubling, <= 25 % apart, ~12.5 % mean),
 *                            in pools of 1..16 contiguous 16 KiB slots
 *   large   > 64 KiB         mapped directly, 1 MiB aligned, with a cache of freed mappings
 * Every returned pointer is 16-byte aligned.  All functions are thread-safe.
 * Failure is NULL with errno == ENOMEM; nothing aborts on a request the caller can handle.
 */
#ifndef OBMEM_H
#define OBMEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OBM_VERSION_MAJOR 0
#define OBM_VERSION_MINOR 1
#define OBM_VERSION_PATCH 0
#define OBM_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define OBM_API __attribute__((visibility("default")))
#define OBM_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define OBM_ALLOC_SIZE(...) __attribute__((alloc_size(__VA_ARGS__)))
#else
#define OBM_API
#define OBM_MALLOC_ATTR
#define OBM_ALLOC_SIZE(...)
#endif

/* ---- geometry (fixed; docs/cpython.md explains each) ---------------------------------- */
#define OBM_ALIGNMENT 16               /* every block is aligned to this */
#define OBM_SMALL_MAX 512              /* largest small request */
#define OBM_NSMALL_CLASSES 32          /* 16, 32, ..., 512 */
#define OBM_MEDIUM_MAX (64 * 1024)     /* largest medium request */
#define OBM_NCLASSES 60                /* 32 small + 28 medium */
#define OBM_POOL_SIZE (16 * 1024)      /* a pool slot */
#define OBM_ARENA_SIZE (1024 * 1024)   /* an arena: 64 slots, slot 0 holds the descriptors */
#define OBM_MAX_ALIGNMENT ((size_t)1 << 30) /* largest supported power-of-two alignment */

/* ---- allocation ------------------------------------------------------------------------ */

/* malloc(0) returns a unique pointer (a 16-byte block); CPython's pymalloc likewise never
 * returns NULL for 0 (it asks for 1 byte). */
OBM_API void *obm_malloc(size_t size) OBM_MALLOC_ATTR OBM_ALLOC_SIZE(1);
/* Zeroed memory; NULL + ENOMEM when count * size overflows. */
OBM_API void *obm_calloc(size_t count, size_t size) OBM_MALLOC_ATTR OBM_ALLOC_SIZE(1, 2);
/* In place when the new size fits the block's class (a shrink keeps the block unless the
 * smaller class saves at least 25 %); large blocks grow or move with mremap, without copying.
 * realloc(NULL, n) == malloc(n); realloc(p, 0) returns a minimum block (p itself when p is
 * already in the smallest class).
 * On failure returns NULL, sets ENOMEM and leaves p untouched. */
OBM_API void *obm_realloc(void *ptr, size_t size) OBM_ALLOC_SIZE(2);
/* NULL is a no-op.  A pointer obmem never handed out is reported via the error handler. */
OBM_API void obm_free(void *ptr);
/* obm_free for a program that layers obmem over another allocator: frees ptr and returns 1
 * when ptr is in obmem's memory, returns 0 and leaves it alone (no report) otherwise or when
 * ptr is NULL, at the cost of obm_free (no separate obm_owns lookup).  A pointer inside
 * obmem's memory that is not a live block is still reported. */
OBM_API int obm_free_if_owned(void *ptr);
/* The same for the layer's free: other(ctx, ptr) when obmem does not own ptr (NULL too), as a
 * tail call, so that a wrapper around this costs no frame (CPython's installed free). */
OBM_API void obm_free_or(void *ptr, void (*other)(void *ctx, void *ptr), void *ctx);
/* alignment must be a power of two (any, up to OBM_MAX_ALIGNMENT); else NULL + EINVAL. */
OBM_API void *obm_aligned_alloc(size_t alignment, size_t size) OBM_MALLOC_ATTR OBM_ALLOC_SIZE(2);
/* POSIX: returns 0, EINVAL (alignment not a power of two multiple of sizeof(void*)) or ENOMEM. */
OBM_API int obm_posix_memalign(void **out, size_t alignment, size_t size);
/* Bytes usable at ptr (>= the request); 0 for NULL.  A foreign pointer is reported. */
OBM_API size_t obm_usable_size(const void *ptr);
/* The process's resident set size now, in bytes (/proc/self/statm), or 0 if unknown. */
OBM_API size_t obm_rss_bytes(void);
/* 1 when ptr points into memory obmem handed out (any interior address of a live mapping),
 * 0 otherwise.  Never touches memory that obmem does not own. */
OBM_API int obm_owns(const void *ptr);
/* Gives free memory back to the OS now: collects pending cross-thread frees, empties the
 * large-block cache, releases spare arenas and reclaims heaps of exited threads. */
OBM_API void obm_trim(void);

/* ---- statistics ------------------------------------------------------------------------ */

typedef struct obm_class_stats_s {
  uint32_t block_size;       /* bytes per block in this class */
  uint32_t pool_size;        /* bytes per pool of this class (a multiple of OBM_POOL_SIZE) */
  uint64_t npools;           /* pools of this class */
  uint64_t nfull_pools;      /* of which full */
  uint64_t blocks_in_use;    /* allocated, not freed; frees still pending on another live
                                thread's heap count as in use until that thread collects */
  uint64_t blocks_free;      /* carved or not yet carved, in pools of this class */
  uint64_t nmalloc;          /* cumulative allocations served by this class */
  uint64_t requested_bytes;  /* cumulative bytes requested by those allocations */
  uint64_t rounding_bytes;   /* live bytes lost to rounding requests up to block_size
                                (exact in debug mode, else from the cumulative mean) */
  uint64_t tail_bytes;       /* bytes at the end of this class's pools that fit no block */
} obm_class_stats_t;

typedef struct obm_stats_s {
  obm_class_stats_t classes[OBM_NCLASSES];
  /* arenas (1 MiB regions holding pools) */
  uint64_t arenas_allocated;     /* cumulative, from the OS */
  uint64_t arenas_reclaimed;     /* cumulative, given back to the OS */
  uint64_t arenas_current;       /* mapped now (in heaps + spare) */
  uint64_t arenas_highwater;     /* most mapped at once */
  uint64_t arenas_spare;         /* empty, kept for reuse (OBMEM_ARENA_SPARE + recent ones) */
  /* large blocks (> OBM_MEDIUM_MAX) */
  uint64_t large_blocks;         /* live */
  uint64_t large_bytes;          /* usable bytes of live large blocks */
  uint64_t large_mapped_bytes;   /* mapped for live large blocks */
  uint64_t large_cached_blocks;  /* freed mappings kept for reuse */
  uint64_t large_cached_bytes;
  uint64_t large_nmalloc;        /* cumulative */
  uint64_t large_cache_hits;     /* cumulative reuses from the cache */
  uint64_t os_maps;              /* cumulative mmap calls for arenas and large blocks */
  uint64_t os_unmaps;
  /* byte summary: for arenas, block bytes (in use + free) + tails + free pools + slot 0
   * == arenas * 1 MiB; bytes_in_use also counts large blocks, bytes_metadata heaps and the
   * page map (heap structs come from 64 KiB chunks, so mapped is a little more) */
  uint64_t bytes_in_use;         /* block bytes handed out (small + medium + large usable) */
  uint64_t bytes_requested_est;  /* bytes_in_use - rounding (estimate, exact in debug mode) */
  uint64_t bytes_free_in_pools;  /* free blocks inside used pools */
  uint64_t bytes_pool_tails;     /* lost to unused pool tails */
  uint64_t bytes_rounding;       /* lost to size-class rounding (see obm_class_stats_t) */
  uint64_t bytes_free_pools;     /* whole free pool slots in arenas */
  uint64_t bytes_metadata;       /* arena descriptor slots, page map, heaps */
  uint64_t bytes_mapped;         /* all memory obmem has mapped now */
  uint64_t bytes_mapped_peak;    /* the most it had mapped at once */
  uint64_t nheaps;               /* thread heaps that exist (live + abandoned) */
  uint64_t nheaps_abandoned;     /* heaps of exited threads waiting for a new owner */
  uint64_t purge_delay_ms_max;   /* the longest purge delay of a heap now: OBMEM_PURGE_DELAY_MS,
                                    or more where a heap's rounds made it adapt (arena.c) */
  uint64_t remote_frees_pending; /* cross-thread frees that were waiting in the caller's heap
                                    and exited threads' heaps; obm_stats_get collects them
                                    (other live threads collect their own at their next
                                    allocation: until then their blocks count as in use) */
} obm_stats_t;

/* Fills *out.  Exact when no other thread allocates meanwhile; otherwise a close snapshot. */
OBM_API void obm_stats_get(obm_stats_t *out);
/* A table for a person, in the spirit of CPython's sys._debugmallocstats(). NULL = stderr. */
OBM_API void obm_stats_print(FILE *out);
/* The same as one JSON object.  NULL = stderr. */
OBM_API void obm_stats_print_json(FILE *out);
/* Block size of class i (0 <= i < OBM_NCLASSES), and the class serving a request (-1: large). */
OBM_API size_t obm_class_block_size(int class_index);
OBM_API int obm_size_class(size_t size);

/* ---- debug checks and errors ----------------------------------------------------------- */

typedef enum obm_error_e {
  OBM_OK = 0,
  OBM_ERR_FOREIGN_POINTER = 1, /* free/realloc/usable_size of memory obmem never handed out */
  OBM_ERR_NOT_BLOCK_START = 2, /* points into obmem memory but not at a block */
  OBM_ERR_DOUBLE_FREE = 3,
  OBM_ERR_OVERRUN = 4,         /* bytes after the block were overwritten */
  OBM_ERR_UNDERRUN = 5,        /* bytes before the block were overwritten */
  OBM_ERR_WRITE_AFTER_FREE = 6,
  OBM_ERR_CORRUPTION = 7,      /* an internal structure is inconsistent */
  OBM_ERR_REFCOUNT = 8,        /* used by the object layer */
} obm_error_t;

/* Called with the error code, the address at fault (may be NULL) and one paragraph of text.
 * If it returns, the operation that found the error is abandoned (free does nothing,
 * realloc returns NULL with errno EINVAL, usable_size returns 0). */
typedef void obm_error_handler_t(obm_error_t code, void *address, const char *message,
                                 void *arg);
/* Sets the handler (NULL restores the default, which prints the message and aborts). */
OBM_API void obm_set_error_handler(obm_error_handler_t *handler, void *arg);

/* Debug mode (OBMEM_DEBUG=1, or the OBMEM_DEBUG build option) keeps guard bytes, fill patterns
 * and serial numbers around each block.  obm_check() walks every block of every heap and
 * reports damage through the error handler; it returns the number of problems found.
 * Call it while no other thread allocates.  Without debug mode it checks the structures. */
OBM_API size_t obm_check(void);
OBM_API int obm_debug_enabled(void);
/* The serial number of a live block in debug mode (allocation order, from 1); 0 otherwise. */
OBM_API uint64_t obm_debug_serial(const void *ptr);

/* ---- options --------------------------------------------------------------------------- */

/* Options are read once from OBMEM_* environment variables at first use (see README). */
typedef enum obm_option_e {
  OBM_OPTION_STATS = 0,        /* OBMEM_STATS: print statistics at exit (1 = text, 2 = JSON;
                                  where: OBMEM_STATS_FILE, else stderr) */
  OBM_OPTION_DEBUG,            /* OBMEM_DEBUG: guard bytes, fill patterns, serials */
  OBM_OPTION_ARENA_SPARE,      /* OBMEM_ARENA_SPARE: empty arenas kept mapped (default 1) */
  OBM_OPTION_LARGE_CACHE_MB,   /* OBMEM_LARGE_CACHE_MB: freed large mappings kept (MiB) */
  OBM_OPTION_VERBOSE,          /* OBMEM_VERBOSE: print option warnings and OS failures */
  OBM_OPTION_PURGE_DELAY_MS,   /* OBMEM_PURGE_DELAY_MS: keep free arena memory this long (large
                                  blocks 10x) before giving it back to the OS */
  OBM_OPTION_PURGE_THREAD,     /* OBMEM_PURGE_THREAD: a thread purges on schedule while the
                                  program does not allocate (default 1) */
  OBM_OPTION_STATS_SIGNAL,     /* OBMEM_STATS_SIGNAL: print statistics on a signal (1 = SIGUSR2,
                                  n > 1 = signal n), in OBMEM_STATS's format */
  OBM_OPTION_COUNT
} obm_option_t;

OBM_API long obm_option_get(obm_option_t option);
/* Name of the environment variable, e.g. "OBMEM_STATS". */
OBM_API const char *obm_option_name(obm_option_t option);

#ifdef __cplusplus
}
#endif
#endif /* OBMEM_H */
