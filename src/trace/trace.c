/* trace.c — the tracer's core: start/stop/flush, thread slots, the allocation hooks, sampling.
 *
 * Each thread that allocates while tracing gets a slot (one of OBM_TRACE_MAX_THREADS, in a raw
 * mapping) with its own event buffer; a hook encodes the event into that buffer
 * (capture_internal.h's delta coding) and hands a full buffer to the writer thread.  Nothing
 * on the hook path allocates, takes a global lock or uses stdio; a full buffer costs one
 * short mutex hold to queue it (once per 64 KiB of records).
 *
 * Concurrency: a slot's `busy` word is 1 while its thread is inside a hook and 2 while
 * obm_trace_flush/stop take its buffer; a hook sets it with a CAS (seq_cst) and then re-reads
 * _obm_trace_on, stop clears _obm_trace_on and then takes every busy word (Dekker), so after
 * stop no hook touches a buffer.  Re-entry on the same thread (the tracer's own use of libc,
 * a signal handler that allocates) is cut by a thread-local guard.  A session generation
 * (`gen`) tells a thread that its slot belongs to an earlier session.
 *
 * The allocator decides what is recorded (src/alloc/alloc.c): while the hooks are installed,
 * exact mode records every allocation; sampled mode (Poisson by bytes, as tcmalloc and memray)
 * keeps a per-thread countdown of bytes drawn here (next_sample: an exponential distribution of
 * mean `sample_mean_bytes`), and the allocation that brings it to <= 0 is recorded.  Recorded
 * blocks live in traced arenas, so the free hook is called exactly for them.  The reader weights
 * a recorded allocation of size s by s / (1 - exp(-s / mean)).
 *
 * Fork: a child whose capture path has %p starts its own capture (same options) from the
 * atfork child handler; otherwise it does not trace.
 *
 * Invariants: slot.state: 0 free -> 1 in use -> 2 exited (last buffer queued) -> 3 draining
 * (the writer is writing that buffer) -> 0;  buffer->used <= OBM_TRACE_BUFFER_SIZE.
 */
#define _GNU_SOURCE
#include "trace/trace_internal.h"
#include "capture/capture_internal.h"
#include "obmem/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

typedef struct trace_thread_s {
  _Atomic int busy;     /* 0 idle, 1 in a hook, 2 held by flush/stop */
  _Atomic int state;    /* see the invariants above */
  _Atomic int announce; /* 1: a THREAD record is due (set after the fields below) */
  uint32_t index;       /* slot + 1: the stream id in the file */
  uint64_t tid;
  char name[16];
  uintptr_t stack_lo, stack_hi; /* the thread's stack mapping: frame pointers must lie in it */
  obm_trace_buffer_t *buffer;   /* NULL until the first event (or after a flush took it) */
} __attribute__((aligned(OBM_CACHE_LINE))) trace_thread_t;

_Atomic int _obm_trace_on;

static struct {
  pthread_mutex_t control; /* start/stop/flush; never taken by a hook */
  trace_thread_t *threads; /* OBM_TRACE_MAX_THREADS, mapped once */
  _Atomic uint64_t gen;
  _Atomic uint64_t nlost;
  _Atomic uint64_t sample_mean; /* sampled mode's mean (read by next_sample on any thread) */
  _Atomic uint64_t sample_seed; /* options.seed, likewise */
  _Atomic uint64_t nsamplers;   /* threads that drew a countdown this session */
  int fd;
  obm_trace_options_t options;
  uint64_t start_ns;
  char template[4096]; /* the path asked for, %p unexpanded (a forked child expands it again) */
  char path[4096];
  pthread_key_t key;
  int key_made, atfork_done;
} g = {.control = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

#define TLS_IE __attribute__((tls_model("initial-exec")))
static __thread trace_thread_t *tls_thread TLS_IE;
static __thread uint64_t tls_gen TLS_IE;
static __thread int tls_guard TLS_IE;
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

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

/* The allocator's sampler: bytes until the calling thread's next sample, an exponential draw of
 * mean sample_mean_bytes.  Each thread's draws come from the seed and the order in which
 * threads first drew in this session, so a one-thread run is reproducible from its seed. */
static int64_t next_sample(void) {
  uint64_t gen = atomic_load_explicit(&g.gen, memory_order_relaxed);
  if (tls_rng_gen != gen) {
    uint64_t k = atomic_fetch_add_explicit(&g.nsamplers, 1, memory_order_relaxed) + 1;
    tls_rng = mix64(atomic_load_explicit(&g.sample_seed, memory_order_relaxed) +
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

static trace_thread_t *register_thread(uint64_t gen) {
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
    atomic_store_explicit(&t->announce, 1, memory_order_release);
    tls_thread = t;
    tls_gen = gen;
    /* pthread_setspecific allocates nothing for the first 32 keys (ours is made at start) */
    pthread_setspecific(g.key, t);
    return t;
  }
  atomic_fetch_add_explicit(&g.nlost, 1, memory_order_relaxed);
  return NULL;
}

static void lock_busy(trace_thread_t *t, int as) {
  int expected = 0;
  while (!atomic_compare_exchange_weak(&t->busy, &expected, as)) {
    expected = 0;
    __builtin_ia32_pause();
  }
}

/* Enters a hook: the calling thread's slot with busy held, or NULL (not tracing). */
static trace_thread_t *enter(void) {
  uint64_t gen = atomic_load_explicit(&g.gen, memory_order_acquire);
  trace_thread_t *t = tls_thread;
  if (!t || tls_gen != gen) {
    t = register_thread(gen);
    if (!t) return NULL;
  }
  lock_busy(t, 1);
  if (!atomic_load(&_obm_trace_on) || atomic_load(&g.gen) != tls_gen) {
    atomic_store_explicit(&t->busy, 0, memory_order_release);
    return NULL;
  }
  return t;
}

static void leave(trace_thread_t *t) {
  atomic_store_explicit(&t->busy, 0, memory_order_release);
}

/* Hands the thread's buffer to the writer (called with busy held by the thread or by flush). */
static void submit(trace_thread_t *t) {
  if (t->buffer) {
    _obm_trace_writer_submit(t->buffer);
    t->buffer = NULL;
  }
}

static void thread_exit(void *arg) {
  trace_thread_t *t = arg;
  tls_guard = 1;
  if (t == tls_thread && tls_gen == atomic_load(&g.gen) && atomic_load(&t->state) == 1) {
    lock_busy(t, 2);
    prctl(PR_GET_NAME, t->name, 0, 0, 0); /* the name it ended with */
    atomic_store_explicit(&t->announce, 1, memory_order_release);
    submit(t);
    atomic_store(&t->state, 2);
    atomic_store_explicit(&t->busy, 0, memory_order_release);
  }
  tls_thread = NULL;
  tls_guard = 0;
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

/* Room for one event plus a TIME record in the thread's buffer; NULL when out of memory. */
static obm_trace_buffer_t *reserve_room(trace_thread_t *t) {
  obm_trace_buffer_t *b = t->buffer;
  if (b && b->used + OBM_CAP_EVENT_MAX + 12 > OBM_TRACE_BUFFER_SIZE) {
    submit(t);
    b = NULL;
  }
  uint64_t now = _obm_os_clock_coarse_ns() - g.start_ns;
  if (!b) {
    b = _obm_trace_buffer_get();
    if (!b) return NULL;
    b->stream = t->index;
    b->base_time_ns = b->last_time_ns = now;
    t->buffer = b;
  } else if (now >= b->last_time_ns + 1000) {
    uint64_t us = (now - b->last_time_ns) / 1000;
    uint8_t *p = b->data + b->used;
    *p++ = OBM_CAP_TIME;
    p = _obm_cap_put_varint(p, us);
    b->used = (uint32_t)(p - b->data);
    b->last_time_ns += us * 1000;
  }
  return b;
}

/* reserve_room, counting the event as lost when there is no room. */
static obm_trace_buffer_t *reserve(trace_thread_t *t) {
  obm_trace_buffer_t *b = reserve_room(t);
  if (!b) atomic_fetch_add_explicit(&g.nlost, 1, memory_order_relaxed);
  return b;
}

static void put_alloc(trace_thread_t *t, uint64_t p, uint64_t size, uint32_t stack) {
  obm_trace_buffer_t *b = reserve(t);
  if (!b) return;
  uint8_t *o = b->data + b->used;
  obm_cap_delta_t *d = &b->delta;
  if (p & ((1u << OBM_CAP_ADDRESS_SHIFT) - 1)) {
    *o++ = OBM_CAP_ALLOC_RAW;
    o = _obm_cap_put_varint(o, p);
    o = _obm_cap_put_varint(o, size);
    o = _obm_cap_put_varint(o, stack);
  } else {
    uint64_t units = p >> OBM_CAP_ADDRESS_SHIFT;
    int k = _obm_cap_mru_find(d, size, stack);
    if (k >= 0) {
      int64_t diff = (int64_t)(units - d->mru[k].last);
      int64_t block = (int64_t)_obm_cap_block_units(size), q = diff / block;
      if (q * block == diff && q >= -8 && q < 8) {
        *o++ = (uint8_t)(OBM_CAP_TAG_ALLOC_MRU | (unsigned)k << 4 | ((uint64_t)q & 0xf));
      } else {
        *o++ = (uint8_t)(OBM_CAP_ALLOC_MRU_FAR + k);
        o = _obm_cap_put_varint(o, _obm_cap_zigzag(diff));
      }
    } else {
      int j = _obm_cap_mru_find_stack(d, stack);
      *o++ = (uint8_t)(j >= 0 ? OBM_CAP_ALLOC_MRU_STACK + j : OBM_CAP_ALLOC);
      o = _obm_cap_put_varint(o, _obm_cap_zigzag((int64_t)(units - d->last_alloc)));
      o = _obm_cap_put_varint(o, size);
      if (j < 0) o = _obm_cap_put_varint(o, stack);
    }
    _obm_cap_note_alloc(d, k, units, size, stack);
  }
  b->used = (uint32_t)(o - b->data);
  b->nevents++;
}

static void put_free(trace_thread_t *t, uint64_t p) {
  obm_trace_buffer_t *b = reserve(t);
  if (!b) return;
  uint8_t *o = b->data + b->used;
  obm_cap_delta_t *d = &b->delta;
  if (p & ((1u << OBM_CAP_ADDRESS_SHIFT) - 1)) {
    *o++ = OBM_CAP_FREE_RAW;
    o = _obm_cap_put_varint(o, p);
  } else {
    uint64_t units = p >> OBM_CAP_ADDRESS_SHIFT;
    int64_t diff = (int64_t)(units - d->last_free);
    uint32_t age = 0;
    while (age < OBM_CAP_NRECENT && _obm_cap_recent(d, age) != units)
      age++;
    if (age < OBM_CAP_NRECENT) {
      *o++ = (uint8_t)(OBM_CAP_TAG_FREE_RECENT | age);
    } else if (diff >= -32 && diff < 32) {
      *o++ = (uint8_t)(OBM_CAP_TAG_FREE_NEAR | ((uint64_t)diff & 0x3f));
    } else {
      *o++ = OBM_CAP_FREE;
      o = _obm_cap_put_varint(o, _obm_cap_zigzag(diff));
    }
    d->last_free = units;
  }
  b->used = (uint32_t)(o - b->data);
  b->nevents++;
}

static void record_alloc(trace_thread_t *t, void *p, size_t size, void *frame) {
  uint32_t stack = _obm_trace_stack_id(t->index - 1, frame, t->stack_lo, t->stack_hi);
  put_alloc(t, (uint64_t)(uintptr_t)p, size, stack);
}

/* The hooks are compiled with frame pointers (CMake: src/trace/trace.c), so
 * __builtin_frame_address(0) is the hook's frame and its return address the caller's site. */
OBM_NOINLINE void _obm_trace_alloc(void *p, size_t size) {
  if (!atomic_load_explicit(&_obm_trace_on, memory_order_relaxed) || tls_guard || !p) return;
  tls_guard = 1;
  trace_thread_t *t = enter();
  if (t) {
    record_alloc(t, p, size, __builtin_frame_address(0));
    leave(t);
  }
  tls_guard = 0;
}

OBM_NOINLINE void _obm_trace_free(void *p) {
  if (!atomic_load_explicit(&_obm_trace_on, memory_order_relaxed) || tls_guard || !p) return;
  tls_guard = 1;
  trace_thread_t *t = enter();
  if (t) {
    put_free(t, (uint64_t)(uintptr_t)p);
    leave(t);
  }
  tls_guard = 0;
}

OBM_NOINLINE void _obm_trace_realloc(void *old, void *p, size_t size) {
  if (!atomic_load_explicit(&_obm_trace_on, memory_order_relaxed) || tls_guard || !p) return;
  tls_guard = 1;
  trace_thread_t *t = enter();
  if (t) {
    if (old) put_free(t, (uint64_t)(uintptr_t)old);
    record_alloc(t, p, size, __builtin_frame_address(0));
    leave(t);
  }
  tls_guard = 0;
}

/* ---- control ----------------------------------------------------------------------------- */

void obm_trace_options_init(obm_trace_options_t *o) {
  memset(o, 0, sizeof *o);
  o->mode = OBM_TRACE_EXACT;
  o->stacks = OBM_TRACE_STACKS_AUTO;
  o->sample_mean_bytes = 512 * 1024;
  o->sample_interval_ms = 50;
  o->max_frames = 64;
}

static int start_locked(const char *path, const obm_trace_options_t *options);

/* Forgets the session without writing anything (a forked child: the writer thread is not
 * there, the parent's file is not ours to write), so that a new one can start. */
static void forget_session(void) {
  _obm_alloc_set_hooks(NULL);
  atomic_store(&_obm_trace_on, 0);
  atomic_fetch_add(&g.gen, 1);
  close(g.fd);
  g.fd = -1;
  _obm_trace_writer_forget();
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    atomic_store(&g.threads[i].state, 0);
    atomic_store(&g.threads[i].busy, 0);
  }
}

/* Runs after the allocator's own child handler (registered at its first allocation, earlier
 * than this one), so the child may allocate and start threads. */
static void after_fork_child(void) {
  pthread_mutex_init(&g.control, NULL);
  if (!atomic_load(&_obm_trace_on)) return;
  forget_session();
  if (!strstr(g.template, "%p")) return; /* the path is the parent's capture */
  char template[sizeof g.template];
  memcpy(template, g.template, sizeof template);
  obm_trace_options_t o = g.options;
  int saved = tls_guard;
  tls_guard = 1;
  _obm_alloc_muted++;
  int err = start_locked(template, &o);
  _obm_alloc_muted--;
  tls_guard = saved;
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

static const obm_alloc_hooks_t exact_hooks = {_obm_trace_alloc, _obm_trace_free, _obm_trace_realloc,
                                              NULL};
static const obm_alloc_hooks_t sampled_hooks = {_obm_trace_alloc, _obm_trace_free,
                                                _obm_trace_realloc, next_sample};

static int start_locked(const char *path, const obm_trace_options_t *options) {
  if (atomic_load(&_obm_trace_on)) return EBUSY;
  obm_trace_options_t o;
  if (options)
    o = *options;
  else
    obm_trace_options_init(&o);
  if ((o.mode != OBM_TRACE_EXACT && o.mode != OBM_TRACE_SAMPLED) ||
      (unsigned)o.stacks > OBM_TRACE_STACKS_NONE || o.max_frames == 0 ||
      o.max_frames > OBM_TRACE_MAX_FRAMES ||
      (o.mode == OBM_TRACE_SAMPLED && o.sample_mean_bytes == 0) || !path || !*path ||
      strlen(path) >= sizeof g.template)
    return EINVAL;
  if (o.seed == 0) o.seed = _obm_os_clock_ns() | 1;
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
  g.options = o;
  atomic_store(&g.sample_mean, o.sample_mean_bytes);
  atomic_store(&g.sample_seed, o.seed);
  atomic_store(&g.nsamplers, 0);
  int fd = open(g.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  struct timespec wall;
  clock_gettime(CLOCK_REALTIME, &wall);
  g.start_ns = _obm_os_clock_coarse_ns();
  uint8_t header[OBM_CAP_HEADER_SIZE];
  uint32_t flags = (o.mode == OBM_TRACE_SAMPLED ? OBM_CAPTURE_FLAG_SAMPLED : 0) |
                   (o.stacks != OBM_TRACE_STACKS_NONE ? OBM_CAPTURE_FLAG_STACKS : 0);
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
  }
  atomic_store(&g.nlost, 0);
  err = _obm_trace_writer_start(fd, o.sample_interval_ms);
  if (err) {
    close(fd);
    return err;
  }
  g.fd = fd;
  atomic_fetch_add(&g.gen, 1);
  atomic_store(&_obm_trace_on, 1);
  /* Last: from here the allocator records (not in debug mode, whose blocks have their own
   * format: the capture then holds no events). */
  _obm_alloc_set_hooks(o.mode == OBM_TRACE_SAMPLED ? &sampled_hooks : &exact_hooks);
  return 0;
}

int obm_trace_start(const char *path, const obm_trace_options_t *options) {
  int saved = tls_guard;
  tls_guard = 1; /* what start allocates (dlopen, the thread) is not traced */
  _obm_alloc_muted++;
  pthread_mutex_lock(&g.control);
  int err = start_locked(path, options);
  pthread_mutex_unlock(&g.control);
  _obm_alloc_muted--;
  tls_guard = saved;
  return err;
}

/* Takes every slot's buffer (waiting for a hook in progress) and queues it. */
static void collect_all(int stopping) {
  for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++) {
    trace_thread_t *t = &g.threads[i];
    if (atomic_load(&t->state) != 1) continue;
    lock_busy(t, 2);
    if (atomic_load(&t->state) == 1) submit(t);
    if (stopping) atomic_store(&t->state, 2);
    atomic_store_explicit(&t->busy, 0, memory_order_release);
  }
}

int obm_trace_flush(void) {
  int saved = tls_guard;
  tls_guard = 1;
  _obm_alloc_muted++;
  pthread_mutex_lock(&g.control);
  int err = EINVAL;
  if (atomic_load(&_obm_trace_on)) {
    collect_all(0);
    err = _obm_trace_writer_flush();
  }
  pthread_mutex_unlock(&g.control);
  _obm_alloc_muted--;
  tls_guard = saved;
  return err;
}

/* The allocator stops recording first (a call already past its test may still reach a hook,
 * which returns once _obm_trace_on is clear); recorded blocks stay valid and their frees, after
 * this, call nothing. */
int obm_trace_stop(void) {
  int saved = tls_guard;
  tls_guard = 1;
  _obm_alloc_muted++;
  pthread_mutex_lock(&g.control);
  int err = EINVAL;
  if (atomic_load(&_obm_trace_on)) {
    _obm_alloc_set_hooks(NULL);
    atomic_store(&_obm_trace_on, 0); /* seq_cst: pairs with the hook's CAS on busy */
    collect_all(1);
    atomic_fetch_add(&g.gen, 1);
    err = _obm_trace_writer_stop(atomic_load(&g.nlost) + _obm_trace_stacks_lost());
    if (close(g.fd) != 0 && !err) err = errno;
    g.fd = -1;
    for (uint32_t i = 0; i < OBM_TRACE_MAX_THREADS; i++)
      atomic_store(&g.threads[i].state, 0);
  }
  pthread_mutex_unlock(&g.control);
  _obm_alloc_muted--;
  tls_guard = saved;
  return err;
}

int obm_trace_active(void) {
  return atomic_load(&_obm_trace_on);
}

const char *obm_trace_path(void) {
  return atomic_load(&_obm_trace_on) ? g.path : NULL;
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
