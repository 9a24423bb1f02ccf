/* trace_internal.h — the tracer's hooks for the allocator, and what src/trace's files share.
 *
 * Hook contract (the allocator calls these; docs/tracer.md says the same):
 *   _obm_trace_alloc(p, size)          after a successful allocation of `size` requested bytes
 *                                      at p (malloc, calloc, aligned_alloc, ...; p != NULL)
 *   _obm_trace_free(p)                 before the block at p is freed (p != NULL), while p is
 *                                      still owned by the caller, so no other thread can have
 *                                      been handed p yet
 *   _obm_trace_realloc(old, p, size)   after a successful realloc (old may be NULL; old == p
 *                                      when the block stayed in place)
 *   _obm_trace_malloc(size)            exact mode's malloc: jumped to in place of the
 *                                      allocation and _obm_trace_alloc (its own frame's return
 *                                      address is the program's call: the walk starts there)
 * Called with no allocator lock held, from any thread, inside malloc: their recording never
 * calls malloc or free, takes no global lock (one per-thread flag, contended only by
 * obm_trace_flush/stop), and returns at once when tracing is off (one relaxed load).
 * _obm_trace_malloc's allocation is the traced heap's path, with that path's locks.  The
 * allocator calls alloc, free and realloc muted (_obm_alloc_muted) and _obm_trace_malloc mutes
 * itself around its recording, so no allocation made while a thread records (the tracer's own,
 * or a signal handler's that interrupted it) reaches a hook.
 * The stack is walked from the hook's caller's frame (the caller keeps a frame pointer: traced.c
 * is compiled with them): the first frame recorded is the return address into the hook's
 * caller's caller (the program's call of the allocator's entry, or an obmem entry point).
 */
#ifndef OBM_TRACE_INTERNAL_H
#define OBM_TRACE_INTERNAL_H

#include "internal.h"
#include "obmem/trace.h"
#include "capture/capture_internal.h"

#include <stdatomic.h>

OBM_HIDDEN void *_obm_trace_malloc(size_t size);
/* What the next session leaves out, for measuring what each part of exact mode costs (the
 * benchmark's decomposition, bench/run_trace.sh; OBMEM_TEST_TRACE_PARTS, autostart.c): 0 all
 * of it; OBM_TRACE_PARTS_DISPATCH the allocator's traced path with hooks that record nothing
 * (the capture has no events); OBM_TRACE_PARTS_EVENTS the hooks record, and the writer thread
 * drops the buffers uncoded (the file has the definitions only).  Set before obm_trace_start;
 * never asked for by the library itself. */
enum { OBM_TRACE_PARTS_ALL = 0, OBM_TRACE_PARTS_DISPATCH = 1, OBM_TRACE_PARTS_EVENTS = 2 };
OBM_HIDDEN void _obm_trace_test_parts(int parts);
OBM_HIDDEN void _obm_trace_alloc(void *p, size_t size);
OBM_HIDDEN void _obm_trace_free(void *p);
OBM_HIDDEN void _obm_trace_realloc(void *old, void *p, size_t size);

/* ---- shared between trace.c, stacks.c and writer.c ------------------------------------- */

/* One step of a stack hash over a word per frame (a multiply per frame; finished by
 * _obm_mix64 of the hash plus the depth): stacks.c's return addresses, interp.c's frames. */
OBM_INLINE uint64_t _obm_trace_hash_step(uint64_t h, uint64_t word) {
  return (h ^ word) * 0x9e3779b97f4a7c15ull + (h >> 29);
}

/* A per-thread direct-mapped cache of stack ids by that hash (stacks.c, interp.c). */
typedef struct obm_trace_cache_entry_s {
  uint64_t hash;
  uint32_t depth;
  uint32_t id;
} obm_trace_cache_entry_t;

#define OBM_TRACE_MAX_FRAMES   256
#define OBM_TRACE_MAX_THREADS  1024        /* thread slots; a thread past them is not traced */
#define OBM_TRACE_BUFFER_WORDS (32 * 1024) /* one thread's event buffer: 256 KiB of raw words */

/* Raw event words, what a hook appends (fixed size, no coding): the writer thread turns them
 * into the file's delta-coded records (writer.c).  The low 2 bits of a word's first word say:
 *   0  TIME   word >> 2 = ns since start; every buffer starts with one, and a hook adds one
 *             when the time it reads has changed since the buffer's latest
 *   1  FREE   word >> 2 = the address
 *   2  ALLOC  word >> 2 = the address; next word: size << 32 | stack   (size < 2^32)
 *   3  ALLOC  word >> 2 = the address; next words: size, stack          (any size)
 * (user-space addresses are below 2^62 on every machine obmem runs on). */
enum {
  OBM_TRACE_RAW_TIME = 0,
  OBM_TRACE_RAW_FREE = 1,
  OBM_TRACE_RAW_ALLOC = 2,
  OBM_TRACE_RAW_ALLOC_BIG = 3
};
#define OBM_TRACE_RAW_EVENT_MAX 4 /* words: an ALLOC_BIG and a TIME */

/* An event buffer: raw words filled by one thread, then queued for the writer.
 * Invariant: nwords <= OBM_TRACE_BUFFER_WORDS; words[0] is a TIME word once nwords > 0. */
typedef struct obm_trace_buffer_s {
  struct obm_trace_buffer_s *next; /* in the writer queue or the free list */
  uint32_t nwords;                 /* set when the buffer is queued */
  uint32_t stream;                 /* thread index */
  uint64_t words[OBM_TRACE_BUFFER_WORDS];
} obm_trace_buffer_t;

/* Stack interning (stacks.c).  Ids are dense from 1 in order of creation; the writer writes
 * the definitions of ids [written, first not ready) before any event buffer it collected
 * after they were made ready, so a file never uses an id before defining it. */
typedef struct obm_trace_def_s {
  _Atomic uint32_t ready; /* 1 once the fields below are set */
  uint32_t a;             /* stack: parent id; frame: unused */
  uint64_t b;             /* stack: frame id; frame: return address */
} obm_trace_def_t;

OBM_HIDDEN int _obm_trace_stacks_init(uint32_t max_frames, obm_trace_stacks_t mode);
OBM_HIDDEN void _obm_trace_stacks_reset(void);
/* Walks the stack from `frame` (the frame of a hook's caller) and returns its id;
 * 0 when stacks are off or a table is full (counted in *lost). */
OBM_HIDDEN uint32_t _obm_trace_stack_id(uint32_t slot, void *frame, uintptr_t stack_lo,
                                        uintptr_t stack_hi);
/* The frame of return address pc from its object's call frame information (cfi.c): hdr is
 * the object's .eh_frame_hdr, [lo, hi) the readable segment that holds it.  1 with
 * *cfa_offset (the caller's stack pointer minus the stack pointer at the return, the return
 * address just below it) or *outermost set; 0 when pc's frame has no such rule. */
OBM_HIDDEN int _obm_cfi_frame(uintptr_t pc, uintptr_t hdr, uintptr_t lo, uintptr_t hi,
                              uint64_t *cfa_offset, int *outermost);
/* The same for pc's loaded object, found under dl_iterate_phdr's lock (stacks.c). */
OBM_HIDDEN int _obm_trace_cfi_rule(uintptr_t pc, uint64_t *cfa_offset, int *outermost);
/* The calling thread's stack mapping [lo, hi), from /proc/self/maps without allocating. */
OBM_HIDDEN void _obm_trace_stack_bounds(uintptr_t *lo, uintptr_t *hi);
/* Re-reads the loaded objects' code ranges (the frame-pointer walk's sanity check); called at
 * start and by the writer when objects were loaded or unloaded.  May take the loader lock. */
OBM_HIDDEN void _obm_trace_code_refresh(void);
OBM_HIDDEN uint32_t _obm_trace_nstacks(void); /* ids created so far + 1 */
OBM_HIDDEN uint32_t _obm_trace_nframes(void);
OBM_HIDDEN const obm_trace_def_t *_obm_trace_stack_def(uint32_t id);
OBM_HIDDEN const obm_trace_def_t *_obm_trace_frame_def(uint32_t id);
OBM_HIDDEN uint64_t _obm_trace_stacks_lost(void);

/* For interp.c, which interns an interpreter's frames into the same tables (ids from the
 * same spaces; ID_LOST is returned as 0 and counted lost): the frame id of key, 0 when not
 * interned yet; the frame id of key, made with definition (a, b) when new; the stack
 * (parent, frame). */
OBM_HIDDEN uint32_t _obm_trace_frame_find(uint64_t key);
OBM_HIDDEN uint32_t _obm_trace_frame_intern(uint64_t key, uint32_t a, uint64_t b);
OBM_HIDDEN uint32_t _obm_trace_stack_intern(uint32_t parent, uint32_t frame);
OBM_HIDDEN void _obm_trace_count_lost(void);
#define OBM_TRACE_FRAME_INTERP 1 /* a frame def's `a`: b points at its interp_names_t */

/* Interpreter frames (interp.c).  A frame def with a == OBM_TRACE_FRAME_INTERP is written as
 * a PYFRAME record from this (in the tracer's own memory, never freed during a session). */
typedef struct obm_trace_pyname_s {
  uint32_t line, function_len, file_len;
  char bytes[]; /* function then file */
} obm_trace_pyname_t;
/* 1 when the session being started records interpreter frames (then interp.c is ready). */
OBM_HIDDEN int _obm_trace_interp_start(uint32_t max_frames, obm_trace_stacks_t mode);
OBM_HIDDEN void _obm_trace_interp_stop(void);
extern OBM_HIDDEN int _obm_trace_interp_on; /* set for a session by _obm_trace_interp_start */
/* The stack id of an allocation in a session with interpreter frames. */
OBM_HIDDEN uint32_t _obm_trace_interp_stack_id(uint32_t slot, void *frame, uintptr_t stack_lo,
                                               uintptr_t stack_hi);

/* The writer (writer.c). */
/* The writer's clock for the hooks: ns since start, advanced by the writer thread every
 * millisecond while `ticking` was asked of _obm_trace_writer_start (exact mode). */
extern OBM_HIDDEN _Atomic uint64_t _obm_trace_tick_ns;
/* drop: buffers are recycled uncoded (OBM_TRACE_PARTS_EVENTS). */
OBM_HIDDEN int _obm_trace_writer_start(int fd, uint32_t sample_interval_ms, int ticking,
                                       uint32_t compress_level, int drop);
/* Queues a filled buffer (FIFO: a thread's buffers reach the file in its order). */
OBM_HIDDEN void _obm_trace_writer_submit(obm_trace_buffer_t *buffer);
OBM_HIDDEN obm_trace_buffer_t *_obm_trace_buffer_get(void); /* NULL when out of memory */
/* Writes everything queued (and the tables) and returns when it is in the file. */
OBM_HIDDEN int _obm_trace_writer_flush(void);
/* Writes the rest and the END record, stops the thread; returns the first write error. */
OBM_HIDDEN int _obm_trace_writer_stop(uint64_t nlost);
OBM_HIDDEN uint64_t _obm_trace_writer_bytes(void);
OBM_HIDDEN uint64_t _obm_trace_writer_nevents(void); /* events in the buffers written */

/* Thread slots as the writer sees them (trace.c): announces new and renamed threads and
 * frees the slots of exited threads whose last buffer it has written. */
typedef struct obm_trace_thread_info_s {
  uint32_t index;
  uint64_t tid;
  char name[16];
} obm_trace_thread_info_t;
/* A writer cycle: _obm_trace_threads_mark_exited() before it collects the queue (the last
 * buffers of the threads it marks are then in what it collects); _obm_trace_threads_announce
 * calls fn for each thread whose THREAD record is due; _obm_trace_threads_release_exited()
 * after the collected buffers are written makes the marked slots reusable. */
OBM_HIDDEN void _obm_trace_threads_mark_exited(void);
OBM_HIDDEN void _obm_trace_threads_announce(void (*fn)(const obm_trace_thread_info_t *, void *),
                                            void *arg);
OBM_HIDDEN void _obm_trace_threads_release_exited(void);
/* In a forked child: the writer thread does not exist there; forget it (no locks taken). */
OBM_HIDDEN void _obm_trace_writer_forget(void);
OBM_HIDDEN uint64_t _obm_trace_start_ns(void); /* coarse monotonic clock at start */

#endif /* OBM_TRACE_INTERNAL_H */
