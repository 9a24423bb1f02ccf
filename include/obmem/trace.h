/* obmem/trace.h — the allocation tracer: where memory goes, and when.
 *
 * While tracing, every allocation and free made through obmem (or, sampled, one allocation in
 * every `sample_mean_bytes` bytes on average) is recorded with the native stack that made it,
 * the thread and the time, into a capture file (read with obmem/capture.h or `obmem report`).
 * A timeline of the allocator's numbers and the RSS is sampled every `sample_interval_ms`.
 * Recording costs no global lock: each thread fills its own buffer, which a writer thread
 * appends to the file; a killed program leaves a file readable up to the last write.
 *
 * docs/tracer.md explains the modes and the costs.
 */
#ifndef OBMEM_TRACE_H
#define OBMEM_TRACE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define OBM_TRACE_API __attribute__((visibility("default")))
#else
#define OBM_TRACE_API
#endif

typedef enum obm_trace_mode_e {
  OBM_TRACE_EXACT = 0,   /* every allocation and free */
  OBM_TRACE_SAMPLED = 1, /* Poisson sampling by bytes; frees of sampled blocks only */
} obm_trace_mode_t;

typedef enum obm_trace_stacks_e {
  OBM_TRACE_STACKS_AUTO = 0,   /* frame pointers; libunwind where the chain breaks (if present) */
  OBM_TRACE_STACKS_FP = 1,     /* frame pointers only */
  OBM_TRACE_STACKS_UNWIND = 2, /* libunwind (libunwind.so.8 at run time) always */
  OBM_TRACE_STACKS_NONE = 3,   /* no stacks */
} obm_trace_stacks_t;

typedef struct obm_trace_options_s {
  obm_trace_mode_t mode;
  obm_trace_stacks_t stacks;
  uint64_t sample_mean_bytes;  /* SAMPLED: mean bytes between samples (default 512 KiB) */
  uint64_t seed;               /* SAMPLED: random seed; 0 = from the clock */
  uint32_t sample_interval_ms; /* timeline period; 0 = no timeline (default 50) */
  uint32_t max_frames;         /* deepest stack recorded (default 64, at most 256) */
  uint32_t compress_level;     /* zstd level of the capture's blocks, 1..19 (default 1); 0 =
                                  uncompressed (also when libzstd.so.1 cannot be loaded) */
} obm_trace_options_t;

typedef struct obm_trace_stats_s {
  uint64_t nevents;       /* allocations and frees recorded */
  uint64_t nlost;         /* not recorded: a table was full */
  uint64_t bytes_written; /* capture bytes written so far */
  uint64_t nstacks;       /* distinct stacks */
  uint64_t nframes;       /* distinct frames */
  uint64_t nthreads;      /* threads that recorded */
} obm_trace_stats_t;

/* Fills *options with the defaults. */
OBM_TRACE_API void obm_trace_options_init(obm_trace_options_t *options);
/* Starts tracing into path ("%p" is replaced by the pid); options NULL = defaults.
 * 0, EBUSY (already tracing), EINVAL (bad option), EWOULDBLOCK (another process is writing a
 * capture to this path: use %p in the path for one capture per process) or the error of
 * open/mmap/thread creation. */
OBM_TRACE_API int obm_trace_start(const char *path, const obm_trace_options_t *options);
/* Stops tracing: every thread's pending records, the tables and an END record are written and
 * the file closed.  0, or EINVAL when not tracing, or the first write error. */
OBM_TRACE_API int obm_trace_stop(void);
/* Writes every record made so far by threads not inside an allocation at this moment, and
 * returns when they are in the file (a SIGKILL after this keeps them).  0 or an error. */
OBM_TRACE_API int obm_trace_flush(void);
OBM_TRACE_API int obm_trace_active(void);
OBM_TRACE_API void obm_trace_stats_get(obm_trace_stats_t *out);
/* The path being written (after %p expansion), or NULL. */
OBM_TRACE_API const char *obm_trace_path(void);

/* ---- Interpreter frames ----------------------------------------------------------------------
 * A language runtime that allocates through obmem (the CPython module) gives the tracer its
 * own frames, so that an allocation is recorded with the interpreted stack (PYFRAME records,
 * docs/capture-format.md) instead of, or merged with, the native one.  Public because a front
 * end uses only public headers (STYLE.md) and any interpreter built on obmem can use it.
 *
 * In a session started while an interpreter is set, an allocation's stack is:
 *   options.stacks == NONE:  the interpreter's frames alone (innermost first, max_frames);
 *   otherwise (native):      the native frames up to the innermost one inside
 *                            [eval_lo, eval_hi) (the interpreter loop), then the interpreter's
 *                            frames, then the native frames outside the outermost loop frame
 *                            (main, ...); the loop's own frames are replaced.  With no loop
 *                            frame found, the interpreter's frames come first (innermost).
 *   and the native stack alone when `frames` returns 0 (a thread that runs no interpreted
 *   code, or may not look at it now: CPython's RAW domain without the GIL). */
typedef struct obm_trace_interp_frame_s {
  const void *code; /* the runtime's code object: kept alive (its address not reused) from
                       the first `names` call on it until the session stops */
  uint32_t offset;  /* instruction offset in it (offsets >= 2^20 share one frame) */
} obm_trace_interp_frame_t;

typedef struct obm_trace_interp_names_s {
  const char *function, *file; /* need not be NUL-terminated; copied at once */
  size_t function_len, file_len;
  uint32_t line; /* 0 = unknown */
} obm_trace_interp_names_t;

typedef struct obm_trace_interp_s {
  /* The calling thread's frames, innermost first, at most max; called inside the allocation
   * hook (what it allocates is not recorded).  Returns how many (0: none). */
  int (*frames)(obm_trace_interp_frame_t *out, int max);
  /* The names of a frame, called once per new (code, offset) of a session (threads that meet
   * it first at the same moment may each call it; one answer is kept), on the thread that
   * met it, right after `frames` returned it.  0, or nonzero: the frame is recorded as "?"
   * without a file. */
  int (*names)(const void *code, uint32_t offset, obm_trace_interp_names_t *out);
  uintptr_t eval_lo, eval_hi; /* the interpreter loop's code; 0, 0 = unknown */
} obm_trace_interp_t;

/* Sets (or, with NULL, clears) the interpreter for the sessions started after this call; the
 * struct is copied.  Call it before obm_trace_start, not concurrently with it.  EBUSY while
 * tracing, EINVAL when `frames` or `names` is NULL. */
OBM_TRACE_API int obm_trace_set_interpreter(const obm_trace_interp_t *interp);

#ifdef __cplusplus
}
#endif
#endif /* OBMEM_TRACE_H */
