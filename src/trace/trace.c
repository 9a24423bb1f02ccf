/* trace.c — the tracer's core: start/stop/flush, thread slots, the allocation hooks, sampling.
 *
 * Each thread that allocates while tracing gets a slot (one of OBM_TRACE_MAX_THREADS, in a raw
 * mapping) with its own event buffer; a hook appends the event as fixed-size raw words
 * (trace_internal.h) and hands a full buffer to the writer thread, which codes them
 * (capture_internal.h's delta coding).  Nothing on the hook path allocates, takes a lock,
 * makes an atomic read-modify-write or uses stdio; a full buffer costs one short mutex hold
 * to queue it (once per 256 KiB of raw words).  The time of an event is the writer's
 * millisecond tick in exact mode (one load), the clock in sampled mode.
 *
 * Concurrency: a per-thread lock that only flush and stop pay for.  A slot's `busy` word is 1
 * while its thread is inside a hook (plain stores by that thread); `hold` is 1 while
 * obm_trace_flush/stop take the buffer.  A hook stores busy = 1 and then reads hold; flush
 * stores hold = 1 and then reads busy, so one of them sees the other (Dekker): the store-load
 * order is made by membarrier(PRIVATE_EXPEDITED) on flush's side and only a compiler barrier
 * on the hook's (seq_cst exchanges on both sides where membarrier is missing, and under TSan).
 * A hook that sees hold waits for it to clear; flush waits for busy = 0 and takes the buffer.
 * A hook reads one word, g.session (0 when not tracing, else the session's generation with its
 * locking and timing flags), and after it stores busy reads it again.  Stop clears it first, so
 * a hook that then enters returns; a thread whose slot was taken under another session word
 * takes a new one.  Re-entry on the same thread (the tracer's own use of libc, a signal handler
 * that allocates) is cut by the allocator's _obm_alloc_muted, which it raises around its calls
 * of alloc, free and realloc, and the tracer around its own work (start, stop, flush, a
 * thread's exit, _obm_trace_malloc's recording): a muted thread's calls reach no hook.
 *
 * The allocator decides what is recorded (src/alloc/alloc.c): while the hooks are installed,
 * exact mode records every allocation; sampled mode (Poisson by bytes, as tcmalloc and memray)
 * keeps per-thread countdowns of bytes drawn here (next_sample: an exponential distribution of
 * mean `sample_mean_bytes`): one per size class (the class budgets obm_malloc's inline path
 * counts down) and one for the other sizes, and the allocation that runs one out is recorded.
 * Recorded blocks live in traced arenas, so the free hook is called exactly for them.  The reader
 * weights a recorded allocation of size s by s / (1 - exp(-s / mean)).
 *
 * Fork: a child whose capture path has %p starts its own capture (same options) from the
 * atfork child handler; otherwise it does not trace.
 *
 * Invariants: slot.state: 0 free -> 1 in use -> 2 exited (last buffer queued) -> 3 draining
 * (the writer is writing that buffer) -> 0;  buffer == NULL or
 * buffer->words < pos <= limit + OBM_TRACE_RAW_EVENT_MAX <= buffer->words + OBM_TRACE_BUFFER_WORDS.
 */
#define _GNU_SOURCE
#include "trace/trace_internal.h"
#include "capture/capture_internal.h"
#include "obmem/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct trace_thread_s {
  _Atomic int busy;     /* 1 while the thread is in a hook (stored by the thread only) */
  _Atomic int hold;     /* 1 while flush/stop take the buffer (stored under g.control) */
  _Atomic int state;    /* see the invariants above */
  _Atomic int announce; /* 1: a THREAD record is due (set after the fields below) */
  uint32_t index;       /* slot + 1: the stream id in the file */
  uint64_t tid;
  char name[16];
  uintptr_t stack_lo, stack_hi; /* the thread's stack mapping: frame pointers must lie in it */
  obm_trace_buffer_t *buffer;   /* NULL until the first event (or after a flush took it) */
  uint64_t *pos, *limit;        /* the next word; an event starts at or below limit */
  uint64_t time_ns;             /* the buffer's latest TIME word */
} __attribute__((aligned(OBM_CACHE_LINE))) trace_thread_t;

static struct {
  pthread_mutex_t control; /* start/stop/flush; never taken by a hook */
  trace_thread_t *threads; /* OBM_TRACE_MAX_THREADS, mapped once */
  _Atomic uint64_t gen;
  /* Nonzero while tracing, the one state that says so: gen << SESSION_GEN_SHIFT |
   * SESSION_FENCE | SESSION_CLOCK (fence and clock as below, for the session), so that a
   * hook's one load tells it whether to record, whether its slot is of this session and how
   * to lock and time the event. */
  _Atomic uint64_t session;
  _Atomic uint64_t nlost;
  _Atomic uint64_t sample_mean; /* sampled mode's mean (read by next_sample on any thread) */
  _Atomic uint64_t sample_seed; /* options.seed, likewise */
  _Atomic uint64_t nsamplers;   /* threads that drew a countdown this session */
  int fd;
  int fence; /* 1: busy and hold are stored by seq_cst exchanges (no membarrier; TSan); the
                hooks read it as the session's SESSION_FENCE */
  pid_t membarrier_pid; /* the process that registered for membarrier */
  int clock; /* 1: hooks read the clock (sampled mode), 0: the writer's tick; the hooks read it
                as the session's SESSION_CLOCK */
  obm_trace_options_t options;
  uint64_t start_ns;
  char template[4096]; /* the path asked for, %p unexpanded (a forked child expands it again) */
  char path[4096];
  pthread_key_t key;
  int key_made, atfork_done;
} g = {.control = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

#define TLS_IE __attribute__((tls_model("initial-exec")))
static __thread trace_thread_t *tls_thread TLS_IE;
static __thread uint64_t tls_session TLS_IE; /* g.session when the thread took its slot */
#define SESSION_FENCE     2u
#define SESSION_CLOCK     1u
#define SESSION_GEN_SHIFT 2                  /* the session word's generation: g.gen */
static __thread uint64_t tls_rng TLS_IE;     /* xorshift64* state of next_sample */
static __thread uint64_t tls_rng_gen TLS_IE; /* the session tls_rng was seeded in */

uint64_t _obm_trace_start_ns(void) {
  return g.start_ns;
}

/* ---- random numbers and the exponential draw ---------------------------------------------- */

static uint64_t next_random(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* ln(u) for u in (0, 1] without libm: u = m * 2^e, m in [1, 2); ln m = 2 atanh((m-1)/(m+1))
 * by its series to s^11 (|error| < 1e-7 relative: s <= 1/3). */
static double log_unit(double u) {
  uint64_t bits;
  memcpy(&bits, &u, 8);
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & ~(0x7ffull << 52)) | (1023ull << 52);
  double m;
  memcpy(&m, &bits, 8);
  double s = (m - 1) / (m + 1), s2 = s * s;
  double series =
      s * (1 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 / 11)))));
  return 2 * series + e * 0.69314718055994530942;
}

/* The allocator's sampler: bytes until the calling thread's next sample, an exponential draw of
 * mean sample_mean_bytes.  Each thread's draws come from the seed and the order in which
 * threads first drew in this session, so a one-thread run is reproducible from its seed. */
static int64_t next_sample(void) {
  uint64_t gen = atomic_load_explicit(&g.gen, memory_order_relaxed);
  if (tls_rng_gen != gen) {
    uint64_t k = atomic_fetch_add_explicit(&g.nsamplers, 1, memory_order_relaxed) + 1;
    tls_rng = _obm_mix64(atomic_load_explicit(&g.sample_seed, memory_order_relaxed) +
                         k * 0x9e3779b97f4a7c15ull) |
              1;
    tls_rng_gen = gen;
  }
  double u = ((double)(next_random(&tls_rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  double bytes = -log_unit(u) * (double)atomic_load_explicit(&g.sample_mean, memory_order_relaxed);
  return bytes < 1 ? 1 : bytes > 4e18 ? (int64_t)4e18 : (int64_t)bytes;
}

/* ---- thread slots ------------------------------------------------------------------------- */

static void thread_exit(void *arg);

static OBM_NOINLINE trace_thread_t *register_thread(uint64_t session) {
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    trace_thread_t *t = &g.threads[i];
    int expected = 0;
    if (atomic_load_explicit(&t->state, memory_order_relaxed) != 0 ||
        !atomic_compare_exchange_strong(&t->state, &expected, 1))
      continue;
    t->index = i + 1;
    t->tid = _obm_os_thread_id();
    memset(t->name, 0, sizeof t->name);
    prctl(PR_GET_NAME, t->name, 0, 0, 0);
    _obm_trace_stack_bounds(&t->stack_lo, &t->stack_hi);
    t->buffer = NULL;
    t->pos = t->limit = NULL;
    atomic_store_explicit(&t->announce, 1, memory_order_release);
    tls_thread = t;
    tls_session = session;
    /* pthread_setspecific allocates nothing for the first 32 keys (ours is made at start) */
    pthread_setspecific(g.key, t);
    return t;
  }
  atomic_fetch_add_explicit(&g.nlost, 1, memory_order_relaxed);
  return NULL;
}

#if defined(__SANITIZE_THREAD__)
#define TRACE_TSAN 1
#else
#define TRACE_TSAN 0
#endif

/* The hook's side of the Dekker pair: busy = 1, then hold is read; waits while hold is set.
 * Without membarrier the store is a seq_cst exchange (a full barrier, which TSan models; it
 * refuses atomic_thread_fence), paired with flush's seq_cst exchange of hold. */
OBM_INLINE void lock_own(trace_thread_t *t, uint64_t session) {
  for (;;) {
    if (obm_unlikely(session & SESSION_FENCE)) {
      atomic_exchange_explicit(&t->busy, 1, memory_order_seq_cst);
    } else {
      atomic_store_explicit(&t->busy, 1, memory_order_relaxed);
      atomic_signal_fence(memory_order_seq_cst); /* flush's membarrier orders the rest */
    }
    if (obm_likely(!atomic_load_explicit(&t->hold, memory_order_seq_cst))) return;
    atomic_store_explicit(&t->busy, 0, memory_order_release);
    while (atomic_load_explicit(&t->hold, memory_order_acquire))
      __builtin_ia32_pause();
  }
}

static void unlock_own(trace_thread_t *t) {
  atomic_store_explicit(&t->busy, 0, memory_order_release);
}

/* Flush's side, after its stores of hold: makes every hook that stored busy = 1 before this
 * visible to the busy loads that follow, and every hook after it see hold.  Without membarrier
 * the stores of hold were seq_cst exchanges (the hooks' side does the same). */
static void heavy_barrier(void) {
  if (!g.fence) syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
}

/* Enters a hook of the session read (not 0): the calling thread's slot with busy held, or NULL
 * (the session ended, or no slot). */
OBM_INLINE trace_thread_t *enter(uint64_t session) {
  trace_thread_t *t = tls_thread;
  if (obm_unlikely(!t || tls_session != session)) {
    t = register_thread(session);
    if (!t) return NULL;
  }
  lock_own(t, session);
  if (obm_unlikely(atomic_load(&g.session) != session)) {
    unlock_own(t);
    return NULL;
  }
  return t;
}

/* The session for a hook: 0 when not tracing. */
static inline uint64_t session_now(void) {
  return atomic_load_explicit(&g.session, memory_order_acquire);
}

/* Hands the thread's buffer to the writer (called with busy held by the thread, or with hold
 * by flush after busy was seen 0). */
static void submit(trace_thread_t *t) {
  if (t->buffer) {
    t->buffer->nwords = (uint32_t)(t->pos - t->buffer->words);
    _obm_trace_writer_submit(t->buffer);
    t->buffer = NULL;
    t->pos = t->limit = NULL;
  }
}

static void thread_exit(void *arg) {
  trace_thread_t *t = arg;
  _obm_alloc_muted++;
  /* the slot's session by its generation: a stop that cleared g.session but has not taken this
   * slot yet (state 1) still gets the thread's last name and buffer from here */
  if (t == tls_thread && tls_session >> SESSION_GEN_SHIFT == atomic_load(&g.gen) &&
      atomic_load(&t->state) == 1) {
    lock_own(t, tls_session);
    if (atomic_load(&t->state) == 1) {      /* stop may have taken the slot meanwhile */
      prctl(PR_GET_NAME, t->name, 0, 0, 0); /* the name it ended with */
      atomic_store_explicit(&t->announce, 1, memory_order_release);
      submit(t);
      atomic_store(&t->state, 2);
    }
    unlock_own(t);
  }
  tls_thread = NULL;
  _obm_alloc_muted--;
}

void _obm_trace_threads_mark_exited(void) {
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    int expected = 2;
    atomic_compare_exchange_strong(&g.threads[i].state, &expected, 3);
  }
}

void _obm_trace_threads_release_exited(void) {
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    int expected = 3;
    atomic_compare_exchange_strong(&g.threads[i].state, &expected, 0);
  }
}

void _obm_trace_threads_announce(void (*fn)(const obm_trace_thread_info_t *, void *), void *arg) {
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    trace_thread_t *t = &g.threads[i];
    if (atomic_load_explicit(&t->state, memory_order_relaxed) == 0) continue;
    if (atomic_exchange_explicit(&t->announce, 0, memory_order_acquire) != 1) continue;
    obm_trace_thread_info_t info = {.index = t->index, .tid = t->tid};
    memcpy(info.name, t->name, sizeof info.name);
    info.name[15] = 0;
    fn(&info, arg);
  }
}

/* ---- recording ------------------------------------------------------------------------------ */

/* The time for an event: the writer's tick (exact mode: one load) or the coarse clock
 * (sampled; start_ns is a coarse reading too, so the difference is not negative). */
static inline uint64_t event_time(uint64_t session) {
  if (obm_likely(!(session & SESSION_CLOCK)))
    return atomic_load_explicit(&_obm_trace_tick_ns, memory_order_relaxed);
  return _obm_os_clock_coarse_ns() - g.start_ns;
}

/* A fresh buffer for t (the full one queued), starting with a TIME word; NULL when out of
 * memory (the event is counted lost). */
static OBM_NOINLINE uint64_t *fresh_buffer(trace_thread_t *t, uint64_t now) {
  submit(t);
  obm_trace_buffer_t *b = _obm_trace_buffer_get();
  if (!b) {
    atomic_fetch_add_explicit(&g.nlost, 1, memory_order_relaxed);
    return NULL;
  }
  b->stream = t->index;
  t->buffer = b;
  t->limit = b->words + OBM_TRACE_BUFFER_WORDS - OBM_TRACE_RAW_EVENT_MAX;
  b->words[0] = now << 2 | OBM_TRACE_RAW_TIME;
  t->time_ns = now;
  return b->words + 1;
}

/* Room for one event (and its TIME word when the time moved) at the returned place; NULL when
 * out of memory. */
static inline uint64_t *reserve(trace_thread_t *t, uint64_t session) {
  uint64_t now = event_time(session);
  uint64_t *w = t->pos;
  if (obm_unlikely(w > t->limit || !w)) return fresh_buffer(t, now);
  if (obm_unlikely(now != t->time_ns)) {
    *w++ = now << 2 | OBM_TRACE_RAW_TIME;
    t->time_ns = now;
  }
  return w;
}

static inline void put_alloc(trace_thread_t *t, uint64_t session, uint64_t p, uint64_t size,
                             uint32_t stack) {
  uint64_t *w = reserve(t, session);
  if (!w) return;
  if (obm_likely(size < ((uint64_t)1 << 32))) {
    w[0] = p << 2 | OBM_TRACE_RAW_ALLOC;
    w[1] = size << 32 | stack;
    t->pos = w + 2;
  } else {
    w[0] = p << 2 | OBM_TRACE_RAW_ALLOC_BIG;
    w[1] = size;
    w[2] = stack;
    t->pos = w + 3;
  }
}

static inline void put_free(trace_thread_t *t, uint64_t session, uint64_t p) {
  uint64_t *w = reserve(t, session);
  if (!w) return;
  w[0] = p << 2 | OBM_TRACE_RAW_FREE;
  t->pos = w + 1;
}

OBM_INLINE void record_alloc(trace_thread_t *t, uint64_t session, void *p, size_t size,
                             void *frame) {
  uint32_t stack = obm_unlikely(_obm_trace_interp_on)
                       ? _obm_trace_interp_stack_id(t->index - 1, frame, t->stack_lo, t->stack_hi)
                       : _obm_trace_stack_id(t->index - 1, frame, t->stack_lo, t->stack_hi);
  put_alloc(t, session, (uint64_t)(uintptr_t)p, size, stack);
}

/* The frame the walk starts from: the hook's caller's.  The hooks are compiled with frame
 * pointers (CMake: src/trace/trace.c), so __builtin_frame_address(0) is the hook's frame and
 * its first word the caller's frame; the caller is always one of traced.c's recording
 * functions (compiled with frame pointers too), whose return address is the allocator's
 * entry's caller, the first frame recorded.  Starting there skips the return address into
 * traced.c, the same obmem frame for every event (the report skipped it as the allocator's). */
#define HOOK_CALLER_FRAME() (((void *const *)__builtin_frame_address(0))[0])

/* An allocation's whole event, with the walk from frame (the hooks' bodies). */
OBM_INLINE void alloc_event(void *p, size_t size, void *frame) {
  uint64_t session = session_now();
  if (!session) return;
  trace_thread_t *t = enter(session);
  if (t) {
    record_alloc(t, session, p, size, frame);
    unlock_own(t);
  }
}

OBM_NOINLINE void _obm_trace_alloc(void *p, size_t size) {
  alloc_event(p, size, HOOK_CALLER_FRAME());
}

/* Exact mode's malloc, jumped to from the allocator (traced.c's _obm_malloc_traced): with a
 * frame, whose return address is the program's call, where the walk starts (and one call
 * where _obm_malloc_recorded and the alloc hook were two).  Muted while recording, as the
 * allocator mutes a hook's call. */
void *_obm_trace_malloc(size_t size) {
  void *p = _obm_traced_malloc(size);
  if (obm_likely(p != NULL)) {
    _obm_alloc_muted++;
    alloc_event(p, size, __builtin_frame_address(0));
    _obm_alloc_muted--;
  }
  return p;
}

/* Frameless: a free walks no stack. */
__attribute__((optimize("omit-frame-pointer"))) OBM_NOINLINE void _obm_trace_free(void *p) {
  uint64_t session = session_now();
  if (!session) return;
  trace_thread_t *t = enter(session);
  if (t) {
    put_free(t, session, (uint64_t)(uintptr_t)p);
    unlock_own(t);
  }
}

OBM_NOINLINE void _obm_trace_realloc(void *old, void *p, size_t size) {
  uint64_t session = session_now();
  if (!session) return;
  trace_thread_t *t = enter(session);
  if (t) {
    if (old) put_free(t, session, (uint64_t)(uintptr_t)old);
    record_alloc(t, session, p, size, HOOK_CALLER_FRAME());
    unlock_own(t);
  }
}

/* ---- control ----------------------------------------------------------------------------- */

void obm_trace_options_init(obm_trace_options_t *o) {
  memset(o, 0, sizeof *o);
  o->mode = OBM_TRACE_EXACT;
  o->stacks = OBM_TRACE_STACKS_AUTO;
  o->sample_mean_bytes = 512 * 1024;
  o->sample_interval_ms = 50;
  o->max_frames = 64;
  o->compress_level = OBM_CAP_ZSTD_LEVEL;
}

static int start_locked(const char *path, const obm_trace_options_t *options);

/* Forgets the session without writing anything (a forked child: the writer thread is not
 * there, the parent's file is not ours to write), so that a new one can start. */
static void forget_session(void) {
  _obm_alloc_set_hooks(NULL);
  atomic_store(&g.session, 0);
  atomic_fetch_add(&g.gen, 1);
  close(g.fd);
  g.fd = -1;
  _obm_trace_writer_forget();
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    atomic_store(&g.threads[i].state, 0);
    atomic_store(&g.threads[i].busy, 0);
    atomic_store(&g.threads[i].hold, 0);
  }
}

/* Runs after the allocator's own child handler (registered at its first allocation, earlier
 * than this one), so the child may allocate and start threads. */
static void after_fork_child(void) {
  pthread_mutex_init(&g.control, NULL);
  if (!atomic_load(&g.session)) return;
  forget_session();
  if (!strstr(g.template, "%p")) return; /* the path is the parent's capture */
  char template[sizeof g.template];
  memcpy(template, g.template, sizeof template);
  obm_trace_options_t o = g.options;
  _obm_alloc_muted++;
  int err = start_locked(template, &o);
  _obm_alloc_muted--;
  if (err)
    _obm_warning("tracer: the forked child (pid %d) cannot trace: error %d", (int)getpid(), err);
}

static int expand_path(const char *path, char *out, size_t size) {
  size_t n = 0;
  for (const char *s = path; *s; s++) {
    if (s[0] == '%' && s[1] == 'p') {
      n += (size_t)_obm_snprintf(out + n, n < size ? size - n : 0, "%d", (int)getpid());
      s++;
    } else if (n + 1 < size) {
      out[n++] = *s;
    } else {
      n++;
    }
    if (n >= size) return ENAMETOOLONG;
  }
  out[n] = 0;
  return 0;
}

/* OBM_TRACE_PARTS_DISPATCH's hooks: the allocator's traced path as exact mode's, recording
 * nothing. */
static void *dispatch_malloc(size_t size) {
  return _obm_traced_malloc(size);
}
static void dispatch_alloc(void *p, size_t size) {
  (void)p;
  (void)size;
}
static void dispatch_free(void *p) {
  (void)p;
}
static void dispatch_realloc(void *old, void *p, size_t size) {
  (void)old;
  (void)p;
  (void)size;
}
static const obm_alloc_hooks_t dispatch_hooks = {dispatch_malloc, dispatch_alloc, dispatch_free,
                                                 dispatch_realloc, NULL};
static int test_parts; /* _obm_trace_test_parts: for the next start */

void _obm_trace_test_parts(int parts) {
  test_parts = parts;
}

static const obm_alloc_hooks_t exact_hooks = {_obm_trace_malloc, _obm_trace_alloc, _obm_trace_free,
                                              _obm_trace_realloc, NULL};
static const obm_alloc_hooks_t sampled_hooks = {NULL, _obm_trace_alloc, _obm_trace_free,
                                                _obm_trace_realloc, next_sample};

static int start_locked(const char *path, const obm_trace_options_t *options) {
  if (atomic_load(&g.session)) return EBUSY;
  obm_trace_options_t o;
  if (options)
    o = *options;
  else
    obm_trace_options_init(&o);
  if ((o.mode != OBM_TRACE_EXACT && o.mode != OBM_TRACE_SAMPLED) ||
      (unsigned)o.stacks > OBM_TRACE_STACKS_NONE || o.max_frames == 0 ||
      o.max_frames > OBM_TRACE_MAX_FRAMES ||
      (o.mode == OBM_TRACE_SAMPLED && o.sample_mean_bytes == 0) || o.compress_level > 19 || !path ||
      !*path || strlen(path) >= sizeof g.template)
    return EINVAL;
  if (o.seed == 0) o.seed = _obm_os_clock_ns() | 1;
  /* membarrier lets the hooks do without a fence; registered once in each process (a forked
   * child is a new one; registering may wait for an RCU grace period) */
  if (g.membarrier_pid != getpid()) {
    g.membarrier_pid = getpid();
    g.fence =
        TRACE_TSAN || syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0;
  }
  g.clock = o.mode == OBM_TRACE_SAMPLED;
  int err = expand_path(path, g.path, sizeof g.path);
  if (err) return err;
  if (g.template != path) memmove(g.template, path, strlen(path) + 1);
  if (!g.threads) {
    g.threads = _obm_os_map(OBM_TRACE_MAX_THREADS * sizeof(trace_thread_t), 0);
    if (!g.threads) return ENOMEM;
  }
  if (!g.key_made) {
    if (pthread_key_create(&g.key, thread_exit) != 0) return EAGAIN;
    g.key_made = 1;
  }
  if (!g.atfork_done) {
    pthread_atfork(NULL, NULL, after_fork_child);
    g.atfork_done = 1;
  }
  err = _obm_trace_stacks_init(o.max_frames, o.stacks);
  if (err) return err;
  int interp = _obm_trace_interp_start(o.max_frames, o.stacks);
  g.options = o;
  atomic_store(&g.sample_mean, o.sample_mean_bytes);
  atomic_store(&g.sample_seed, o.seed);
  atomic_store(&g.nsamplers, 0);
  /* Truncated only under an exclusive lock (flock: held by this open file until the capture
   * is closed): a second process given the same path (a program started by a shell that kept
   * OBMEM_TRACE in the environment it passes on) gets EWOULDBLOCK and leaves the first one's
   * capture whole, instead of truncating it and interleaving its blocks with it. */
  int fd = open(g.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0 || ftruncate(fd, 0) != 0) {
    err = errno == EAGAIN ? EWOULDBLOCK : errno;
    close(fd);
    return err;
  }
  struct timespec wall;
  clock_gettime(CLOCK_REALTIME, &wall);
  g.start_ns = _obm_os_clock_coarse_ns(); /* <= any later reading of either clock */
  uint8_t header[OBM_CAP_HEADER_SIZE];
  uint32_t flags = (o.mode == OBM_TRACE_SAMPLED ? OBM_CAPTURE_FLAG_SAMPLED : 0) |
                   (o.stacks != OBM_TRACE_STACKS_NONE ? OBM_CAPTURE_FLAG_STACKS : 0) |
                   (interp ? OBM_CAPTURE_FLAG_PYTHON : 0);
  _obm_cap_header_encode(header, flags, o.mode == OBM_TRACE_SAMPLED ? o.sample_mean_bytes : 0,
                         (uint32_t)getpid(), (uint32_t)_obm_os_page_size(),
                         (uint64_t)wall.tv_sec * 1000000000u + (uint64_t)wall.tv_nsec);
  if (write(fd, header, sizeof header) != (ssize_t)sizeof header) {
    err = errno ? errno : EIO;
    close(fd);
    return err;
  }
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    atomic_store(&g.threads[i].state, 0);
    atomic_store(&g.threads[i].busy, 0);
    atomic_store(&g.threads[i].hold, 0);
  }
  atomic_store(&g.nlost, 0);
  err = _obm_trace_writer_start(fd, o.sample_interval_ms, !g.clock, o.compress_level,
                                test_parts == OBM_TRACE_PARTS_EVENTS);
  if (err) {
    close(fd);
    return err;
  }
  g.fd = fd;
  uint64_t gen = atomic_fetch_add(&g.gen, 1) + 1;
  atomic_store(&g.session, gen << SESSION_GEN_SHIFT | (g.fence ? SESSION_FENCE : 0) |
                               (g.clock ? SESSION_CLOCK : 0));
  /* Last: from here the allocator records (not in debug mode, whose blocks have their own
   * format: the capture then holds no events). */
  _obm_alloc_set_hooks(o.mode == OBM_TRACE_SAMPLED              ? &sampled_hooks
                       : test_parts == OBM_TRACE_PARTS_DISPATCH ? &dispatch_hooks
                                                                : &exact_hooks);
  return 0;
}

/* start, stop and flush: under the control lock, with this thread's allocations not traced
 * (what they allocate — dlopen, the writer thread — is the tracer's). */
static void control_enter(void) {
  _obm_alloc_muted++;
  pthread_mutex_lock(&g.control);
}

static void control_leave(void) {
  pthread_mutex_unlock(&g.control);
  _obm_alloc_muted--;
}

int obm_trace_start(const char *path, const obm_trace_options_t *options) {
  control_enter();
  if (!atomic_load(&g.session)) _obm_alloc_arm_sampling(); /* not in a fork handler */
  int err = start_locked(path, options);
  control_leave();
  return err;
}

/* Takes every slot's buffer (waiting for a hook in progress) and queues it: holds every slot
 * in use, one heavy barrier, then each slot once its hook (if any) has left. */
static void collect_all(int stopping) {
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++)
    if (atomic_load(&g.threads[i].state) == 1) atomic_exchange(&g.threads[i].hold, 1);
  heavy_barrier();
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    trace_thread_t *t = &g.threads[i];
    if (!atomic_load_explicit(&t->hold, memory_order_relaxed)) continue;
    while (atomic_load(&t->busy))
      __builtin_ia32_pause();
    if (atomic_load(&t->state) == 1) {
      submit(t);
      if (stopping) atomic_store(&t->state, 2);
    }
    atomic_store_explicit(&t->hold, 0, memory_order_release);
  }
}

int obm_trace_flush(void) {
  control_enter();
  int err = EINVAL;
  if (atomic_load(&g.session)) {
    collect_all(0);
    err = _obm_trace_writer_flush();
  }
  control_leave();
  return err;
}

/* The allocator stops recording first (a call already past its test may still reach a hook,
 * which returns once g.session is clear); recorded blocks stay valid and their frees, after
 * this, call nothing. */
int obm_trace_stop(void) {
  control_enter();
  int err = EINVAL;
  if (atomic_load(&g.session)) {
    _obm_alloc_set_hooks(NULL);
    atomic_store(&g.session, 0); /* a hook that enters after collect_all returns */
    collect_all(1);
    atomic_fetch_add(&g.gen, 1);
    err = _obm_trace_writer_stop(atomic_load(&g.nlost) + _obm_trace_stacks_lost());
    _obm_trace_interp_stop();
    if (close(g.fd) != 0 && !err) err = errno;
    g.fd = -1;
    for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++)
      atomic_store(&g.threads[i].state, 0);
  }
  control_leave();
  return err;
}

int obm_trace_active(void) {
  return atomic_load(&g.session) != 0;
}

const char *obm_trace_path(void) {
  return atomic_load(&g.session) ? g.path : NULL;
}

void obm_trace_stats_get(obm_trace_stats_t *out) {
  memset(out, 0, sizeof *out);
  out->nlost = atomic_load(&g.nlost) + _obm_trace_stacks_lost();
  out->bytes_written = _obm_trace_writer_bytes();
  uint32_t ns = _obm_trace_nstacks(), nf = _obm_trace_nframes();
  out->nstacks = ns ? ns - 1 : 0;
  out->nframes = nf ? nf - 1 : 0;
  out->nevents = _obm_trace_writer_nevents();
  if (g.threads)
    for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++)
      out->nthreads += atomic_load(&g.threads[i].state) != 0;
}
