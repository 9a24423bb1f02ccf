/* writer.c — the tracer's writer thread: event buffers, definitions and the timeline to the file.
 *
 * Threads queue full event buffers of raw words (trace_internal.h; a FIFO under one mutex,
 * taken once per buffer) and post a semaphore.  The writer thread wakes on that or every
 * sample period (and, in exact mode, every millisecond to advance the hooks' clock,
 * _obm_trace_tick_ns), and in each cycle:
 *   1. marks exited thread slots, 2. takes the whole queue,
 *   3. writes one definitions block (stream 0): THREAD records for new or renamed threads,
 *      MODULE records when the set of loaded objects changed, the FRAME and STACK records made
 *      since the last cycle (in id order, up to the first not yet ready), a SAMPLE when due,
 *   4. codes each queued buffer into blocks (delta coding, capture_internal.h; a block per
 *      buffer unless it outgrows OBM_CAP_BLOCK_MAX), writes each (header + payload in one
 *      writev; the payload zstd-compressed when that makes it smaller, zstd.c, at
 *      options.compress_level) and recycles the buffer,
 *   5. frees the marked slots.
 * Every id an event uses was made ready before its buffer was queued, so step 3 defines it
 * before step 4 writes the event.  Blocks are whole when each writev returns, so a process
 * killed between cycles leaves a file that ends on a block boundary.
 *
 * Invariants: frames_written <= _obm_trace_nframes(); stacks_written <= _obm_trace_nstacks();
 *             every stack written has its frame < frames_written and parent < its id.
 */
#define _GNU_SOURCE
#include "trace/trace_internal.h"
#include "capture/capture_internal.h"

#include <elf.h>
#include <errno.h>
#include <link.h>
#include <semaphore.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DEFS_MAX (OBM_CAP_BLOCK_MAX - 8192) /* flush the definitions block past this */

static struct {
  pthread_mutex_t lock; /* queue and free list */
  obm_trace_buffer_t *head, *tail, *free;
  sem_t wake;
  pthread_t thread;
  int running, sem_made;
  _Atomic int stopping;
  pthread_mutex_t flush_lock;
  pthread_cond_t flushed;
  uint64_t flush_requested, flush_done;
  int fd;
  uint32_t interval_ms;
  uint64_t next_sample_ns;
  uint32_t frames_written, stacks_written;
  unsigned long long dl_adds, dl_subs;
  int seen_main;
  uint8_t *defs; /* block header + payload, OBM_CAP_BLOCK_MAX + header */
  size_t defs_used;
  uint8_t *events;  /* an event block's payload being coded, OBM_CAP_BLOCK_MAX */
  uint8_t *zipped;  /* a block's payload compressed, OBM_CAP_BLOCK_MAX */
  void *cctx;       /* zstd's context (capture_internal.h), or NULL */
  int level;        /* zstd level; 0: blocks are written as coded */
  uint32_t tick_ms; /* 1: advance _obm_trace_tick_ns every millisecond; 0: not */
  int drop;         /* 1: event buffers are recycled uncoded (_obm_trace_test_parts) */
  uint64_t nlost;
  _Atomic uint64_t bytes, nevents;
  _Atomic int error;
  obm_stats_t *stats;
} w = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .flush_lock = PTHREAD_MUTEX_INITIALIZER,
       .flushed = PTHREAD_COND_INITIALIZER};

_Atomic uint64_t _obm_trace_tick_ns;

uint64_t _obm_trace_writer_bytes(void) {
  return atomic_load(&w.bytes);
}
uint64_t _obm_trace_writer_nevents(void) {
  return atomic_load(&w.nevents);
}

obm_trace_buffer_t *_obm_trace_buffer_get(void) {
  pthread_mutex_lock(&w.lock);
  obm_trace_buffer_t *b = w.free;
  if (b) w.free = b->next;
  pthread_mutex_unlock(&w.lock);
  if (!b) b = _obm_os_map(sizeof(obm_trace_buffer_t) + 4096 - sizeof(obm_trace_buffer_t) % 4096, 0);
  if (!b) return NULL;
  b->next = NULL;
  b->nwords = 0;
  return b;
}

void _obm_trace_writer_submit(obm_trace_buffer_t *b) {
  b->next = NULL;
  pthread_mutex_lock(&w.lock);
  if (w.tail)
    w.tail->next = b;
  else
    w.head = b;
  w.tail = b;
  pthread_mutex_unlock(&w.lock);
  sem_post(&w.wake);
}

static void write_block(const uint8_t *payload, uint32_t size, uint32_t stream, uint64_t time_ns) {
  if (w.level && size >= 64) { /* compressed when that makes it smaller */
    size_t n = _obm_cap_zstd_compress(w.cctx, w.zipped, size - 1, payload, size, w.level);
    if (n) {
      payload = w.zipped;
      size = (uint32_t)n;
      stream |= OBM_CAP_STREAM_ZSTD;
    }
  }
  uint8_t header[OBM_CAP_BLOCK_HEADER_SIZE];
  _obm_cap_block_header_encode(header, payload, size, stream, time_ns);
  struct iovec iov[2] = {{header, sizeof header}, {(void *)payload, size}};
  size_t total = sizeof header + size, done = 0;
  while (done < total) {
    ssize_t r = writev(w.fd, iov, 2);
    if (r < 0) {
      if (errno == EINTR) continue;
      int expected = 0;
      atomic_compare_exchange_strong(&w.error, &expected, errno);
      return;
    }
    done += (size_t)r;
    /* advance the iovecs past what was written */
    size_t skip = (size_t)r;
    for (int i = 0; i < 2; i++) {
      size_t k = skip < iov[i].iov_len ? skip : iov[i].iov_len;
      iov[i].iov_base = (uint8_t *)iov[i].iov_base + k;
      iov[i].iov_len -= k;
      skip -= k;
    }
  }
  atomic_fetch_add(&w.bytes, total);
}

static uint64_t now_ns(void) {
  return _obm_os_clock_ns() - _obm_trace_start_ns();
}

/* ---- event coding: raw words -> blocks of delta-coded records ------------------------------ */

/* One event block being coded: the coding state both sides keep, reset at every block. */
typedef struct coder_s {
  obm_cap_delta_t delta;
  uint32_t stream;
  size_t used;           /* payload bytes in w.events */
  uint64_t base_time_ns; /* the block's time */
  uint64_t last_time_ns; /* the latest TIME point */
  uint64_t nevents;
} coder_t;

static void coder_flush(coder_t *c) {
  if (c->used) {
    write_block(w.events, (uint32_t)c->used, c->stream, c->base_time_ns);
    atomic_fetch_add(&w.nevents, c->nevents);
  }
  c->used = 0;
  c->nevents = 0;
  memset(&c->delta, 0, sizeof c->delta);
  c->base_time_ns = c->last_time_ns;
}

/* Room for one event (and a TIME record) at time now; the place to code it. */
static inline __attribute__((always_inline)) uint8_t *coder_reserve(coder_t *c, uint64_t now) {
  if (c->used + OBM_CAP_EVENT_MAX + 12 > OBM_CAP_BLOCK_MAX) coder_flush(c);
  uint8_t *p = w.events + c->used;
  if (c->used == 0) {
    c->base_time_ns = c->last_time_ns = now;
  } else if (now >= c->last_time_ns + 1000) {
    uint64_t us = (now - c->last_time_ns) / 1000;
    *p++ = OBM_CAP_TIME;
    p = _obm_cap_put_varint(p, us);
    c->last_time_ns += us * 1000;
  }
  return p;
}

static uint8_t *code_alloc(obm_cap_delta_t *d, uint8_t *o, uint64_t p, uint64_t size,
                           uint32_t stack) {
  if (p & ((1u << OBM_CAP_ADDRESS_SHIFT) - 1)) {
    *o++ = OBM_CAP_ALLOC_RAW;
    o = _obm_cap_put_varint(o, p);
    o = _obm_cap_put_varint(o, size);
    return _obm_cap_put_varint(o, stack);
  }
  uint64_t units = p >> OBM_CAP_ADDRESS_SHIFT;
  int k = _obm_cap_mru_find(d, size, stack);
  if (k >= 0) {
    int64_t diff = (int64_t)(units - d->mru[k].last);
    int64_t block = (int64_t)_obm_cap_block_units(size);
    /* the division only in range (the same address again, diff 0, is the common case) */
    if (diff == 0 || (diff >= -8 * block && diff < 8 * block && diff % block == 0)) {
      int64_t q = diff / block;
      *o++ = (uint8_t)(OBM_CAP_TAG_ALLOC_MRU | (unsigned)k << 4 | ((uint64_t)q & 0xf));
    } else {
      *o++ = (uint8_t)(OBM_CAP_ALLOC_MRU_FAR + k);
      o = _obm_cap_put_varint(o, _obm_cap_zigzag(diff));
    }
  } else {
    int j = _obm_cap_mru_find_stack(d, stack);
    *o++ = (uint8_t)(j >= 0 ? OBM_CAP_ALLOC_MRU_STACK + j : OBM_CAP_ALLOC);
    o = _obm_cap_put_varint(o, size);
    if (j < 0) o = _obm_cap_put_varint(o, stack);
    o = _obm_cap_put_varint(o, _obm_cap_zigzag((int64_t)(units - _obm_cap_alloc_base(d, size))));
  }
  _obm_cap_note_alloc(d, k, units, size, stack);
  return o;
}

static uint8_t *code_free(obm_cap_delta_t *d, uint8_t *o, uint64_t p) {
  if (p & ((1u << OBM_CAP_ADDRESS_SHIFT) - 1)) {
    *o++ = OBM_CAP_FREE_RAW;
    return _obm_cap_put_varint(o, p);
  }
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
  return o;
}

/* Codes a thread's buffer of raw words into blocks and writes them. */
static void write_events(const obm_trace_buffer_t *b) {
  if (w.drop) return;
  coder_t c = {.stream = b->stream};
  uint64_t now = 0;
  const uint64_t *x = b->words, *end = b->words + b->nwords;
  while (x < end) {
    uint64_t word = *x++;
    uint64_t value = word >> 2;
    uint8_t *o;
    switch (word & 3) {
    case OBM_TRACE_RAW_TIME:
      now = value;
      continue;
    case OBM_TRACE_RAW_FREE:
      o = coder_reserve(&c, now);
      o = code_free(&c.delta, o, value);
      break;
    case OBM_TRACE_RAW_ALLOC:
      if (x >= end) return; /* never: a hook writes an event whole */
      o = coder_reserve(&c, now);
      o = code_alloc(&c.delta, o, value, *x >> 32, (uint32_t)*x);
      x++;
      break;
    default: /* OBM_TRACE_RAW_ALLOC_BIG */
      if (x + 1 >= end) return;
      o = coder_reserve(&c, now);
      o = code_alloc(&c.delta, o, value, x[0], (uint32_t)x[1]);
      x += 2;
      break;
    }
    c.used = (size_t)(o - w.events);
    c.nevents++;
  }
  coder_flush(&c);
}

static void defs_flush(void) {
  if (w.defs_used == 0) return;
  write_block(w.defs, (uint32_t)w.defs_used, 0, now_ns());
  w.defs_used = 0;
}

/* Room for n more bytes in the definitions block. */
static uint8_t *defs_reserve(size_t n) {
  if (w.defs_used + n > DEFS_MAX) defs_flush();
  return w.defs + w.defs_used;
}

static void defs_commit(uint8_t *end) {
  w.defs_used = (size_t)(end - w.defs);
}

static void put_thread(const obm_trace_thread_info_t *info, void *arg) {
  (void)arg;
  size_t len = strnlen(info->name, sizeof info->name);
  uint8_t *p = defs_reserve(40 + len);
  *p++ = OBM_CAP_THREAD;
  p = _obm_cap_put_varint(p, info->index);
  p = _obm_cap_put_varint(p, info->tid);
  p = _obm_cap_put_varint(p, len);
  memcpy(p, info->name, len);
  defs_commit(p + len);
}

static size_t build_id(const struct dl_phdr_info *info, const uint8_t **id) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE) continue;
    const uint8_t *n = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr), *end = n + ph->p_memsz;
    while (n + sizeof(ElfW(Nhdr)) <= end) {
      const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)n;
      const uint8_t *name = n + sizeof *nh, *desc = name + ((nh->n_namesz + 3) & ~3u);
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
          nh->n_descsz <= OBM_CAP_BUILD_ID_MAX && desc + nh->n_descsz <= end) {
        *id = desc;
        return nh->n_descsz;
      }
      n = desc + ((nh->n_descsz + 3) & ~3u);
    }
  }
  return 0;
}

static int put_module(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  (void)arg;
  char exe[1024];
  const char *path = info->dlpi_name;
  if (!path || !*path) {
    /* the first nameless object is the program itself */
    if (w.seen_main) return 0;
    w.seen_main = 1;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    path = exe;
  }
  size_t len = strnlen(path, OBM_CAP_NAME_MAX);
  const uint8_t *id = NULL;
  size_t id_size = build_id(info, &id);
  uint8_t *p = defs_reserve(32 + len + id_size);
  *p++ = OBM_CAP_MODULE;
  p = _obm_cap_put_varint(p, info->dlpi_addr);
  p = _obm_cap_put_varint(p, len);
  memcpy(p, path, len);
  p += len;
  p = _obm_cap_put_varint(p, id_size);
  if (id_size) memcpy(p, id, id_size);
  defs_commit(p + id_size);
  return 0;
}

static int count_modules(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  unsigned long long *counts = arg;
  counts[0] = info->dlpi_adds;
  counts[1] = info->dlpi_subs;
  return 1; /* the counters are the same in every entry */
}

static void put_modules_if_changed(void) {
  unsigned long long counts[2] = {0, 0};
  dl_iterate_phdr(count_modules, counts);
  if (counts[0] == w.dl_adds && counts[1] == w.dl_subs) return;
  w.dl_adds = counts[0];
  w.dl_subs = counts[1];
  w.seen_main = 0;
  dl_iterate_phdr(put_module, NULL);
  _obm_trace_code_refresh();
}

/* An interpreter's frame (interp.c): PYFRAME line, function, file. */
static void put_pyframe(const obm_trace_pyname_t *n) {
  uint8_t *p = defs_reserve(32 + (size_t)n->function_len + n->file_len);
  *p++ = OBM_CAP_PYFRAME;
  p = _obm_cap_put_varint(p, n->line);
  p = _obm_cap_put_varint(p, n->function_len);
  memcpy(p, n->bytes, n->function_len);
  p += n->function_len;
  p = _obm_cap_put_varint(p, n->file_len);
  memcpy(p, n->bytes + n->function_len, n->file_len);
  defs_commit(p + n->file_len);
}

static void put_definitions(void) {
  uint32_t ns = _obm_trace_nstacks(), nf = _obm_trace_nframes();
  for (; w.frames_written < nf; w.frames_written++) {
    uint32_t id = w.frames_written;
    if (id == 0) continue;
    const obm_trace_def_t *d = _obm_trace_frame_def(id);
    if (!atomic_load_explicit(&d->ready, memory_order_acquire)) break;
    if (d->a == OBM_TRACE_FRAME_INTERP) {
      put_pyframe((const obm_trace_pyname_t *)(uintptr_t)d->b);
      continue;
    }
    uint8_t *p = defs_reserve(12);
    *p++ = OBM_CAP_FRAME;
    defs_commit(_obm_cap_put_varint(p, d->b));
  }
  for (; w.stacks_written < ns; w.stacks_written++) {
    uint32_t id = w.stacks_written;
    if (id == 0) continue;
    const obm_trace_def_t *d = _obm_trace_stack_def(id);
    if (!atomic_load_explicit(&d->ready, memory_order_acquire) || d->b >= w.frames_written) break;
    uint8_t *p = defs_reserve(24);
    *p++ = OBM_CAP_STACK;
    p = _obm_cap_put_varint(p, d->a);
    defs_commit(_obm_cap_put_varint(p, d->b));
  }
}

static void put_sample(uint64_t now) {
  obm_stats_get(w.stats);
  uint64_t pools = 0;
  for (int i = 0; i < OBM_NCLASSES; i++)
    pools += w.stats->classes[i].npools;
  uint64_t mapped = w.stats->bytes_mapped, used = w.stats->bytes_in_use + w.stats->bytes_metadata;
  uint64_t frag = mapped > used ? (mapped - used) * 1000 / mapped : 0;
  uint8_t *p = defs_reserve(70);
  *p++ = OBM_CAP_SAMPLE;
  p = _obm_cap_put_varint(p, now / 1000);
  p = _obm_cap_put_varint(p, w.stats->bytes_in_use);
  p = _obm_cap_put_varint(p, _obm_os_rss_bytes());
  p = _obm_cap_put_varint(p, w.stats->arenas_current);
  p = _obm_cap_put_varint(p, pools);
  defs_commit(_obm_cap_put_varint(p, frag));
}

static void cycle(int final) {
  _obm_trace_threads_mark_exited();
  pthread_mutex_lock(&w.lock);
  obm_trace_buffer_t *list = w.head;
  w.head = w.tail = NULL;
  pthread_mutex_unlock(&w.lock);
  _obm_trace_threads_announce(put_thread, NULL);
  put_modules_if_changed();
  put_definitions();
  uint64_t now = now_ns();
  if (w.interval_ms && (now >= w.next_sample_ns || final)) {
    put_sample(now);
    w.next_sample_ns = now + (uint64_t)w.interval_ms * 1000000u;
  }
  defs_flush();
  while (list) {
    obm_trace_buffer_t *b = list;
    list = b->next;
    write_events(b);
    pthread_mutex_lock(&w.lock);
    b->next = w.free;
    w.free = b;
    pthread_mutex_unlock(&w.lock);
  }
  _obm_trace_threads_release_exited();
}

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Sleeps until deadline or a post of w.wake; while ticking, wakes every millisecond to
 * advance _obm_trace_tick_ns (the hooks' clock in exact mode: ~1 ms resolution). */
static void wait_until(const struct timespec *deadline) {
  for (;;) {
    struct timespec until = *deadline;
    if (w.tick_ms) {
      clock_gettime(CLOCK_MONOTONIC, &until);
      until.tv_nsec += 1000000L;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      if (before(deadline, &until)) until = *deadline;
    }
    int r;
    while ((r = sem_clockwait(&w.wake, CLOCK_MONOTONIC, &until)) != 0 && errno == EINTR) {
    }
    if (w.tick_ms) atomic_store_explicit(&_obm_trace_tick_ns, now_ns(), memory_order_relaxed);
    if (r == 0) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!before(&now, deadline)) return;
  }
}

static void *writer_main(void *arg) {
  (void)arg;
  _obm_alloc_muted = 1; /* what this thread allocates (libdw? stdio?) is not the program's */
  for (;;) {
    uint32_t period = w.interval_ms && w.interval_ms < 100 ? w.interval_ms : 100;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_nsec += (long)period * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec += deadline.tv_nsec / 1000000000L;
      deadline.tv_nsec %= 1000000000L;
    }
    wait_until(&deadline);
    while (sem_trywait(&w.wake) == 0) {
    } /* one cycle serves every post so far */
    int stopping = atomic_load(&w.stopping);
    pthread_mutex_lock(&w.flush_lock);
    uint64_t requested = w.flush_requested;
    pthread_mutex_unlock(&w.flush_lock);
    cycle(stopping);
    if (stopping) {
      cycle(1); /* buffers queued while the last cycle ran */
      uint8_t *p = defs_reserve(24);
      *p++ = OBM_CAP_END;
      p = _obm_cap_put_varint(p, atomic_load(&w.nevents));
      defs_commit(_obm_cap_put_varint(p, w.nlost));
      defs_flush();
    }
    pthread_mutex_lock(&w.flush_lock);
    w.flush_done = requested;
    pthread_cond_broadcast(&w.flushed);
    pthread_mutex_unlock(&w.flush_lock);
    if (stopping) return NULL;
  }
}

int _obm_trace_writer_start(int fd, uint32_t sample_interval_ms, int ticking,
                            uint32_t compress_level, int drop) {
  if (!w.defs) {
    w.defs = _obm_os_map(OBM_CAP_BLOCK_MAX, 0);
    w.events = _obm_os_map(OBM_CAP_BLOCK_MAX, 0);
    w.zipped = _obm_os_map(OBM_CAP_BLOCK_MAX, 0);
    w.stats = _obm_os_map((sizeof(obm_stats_t) + 4095) & ~(size_t)4095, 0);
    if (!w.defs || !w.events || !w.zipped || !w.stats) return ENOMEM;
  }
  /* made once and kept (a forked child's writer reuses its copy); dlopen and libzstd's
   * context allocate: here, outside any hook, muted by the caller */
  if (compress_level && !w.cctx) w.cctx = _obm_cap_zstd_compressor();
  w.level = w.cctx ? (int)compress_level : 0;
  w.tick_ms = ticking ? 1 : 0;
  w.drop = drop;
  atomic_store(&_obm_trace_tick_ns, 0);
  if (!w.sem_made) {
    sem_init(&w.wake, 0, 0);
    w.sem_made = 1;
  }
  while (sem_trywait(&w.wake) == 0) {
  }
  w.fd = fd;
  w.interval_ms = sample_interval_ms;
  w.next_sample_ns = 0;
  w.frames_written = w.stacks_written = 0;
  w.dl_adds = w.dl_subs = 0;
  w.defs_used = 0;
  w.flush_requested = w.flush_done = 0;
  atomic_store(&w.bytes, OBM_CAP_HEADER_SIZE);
  atomic_store(&w.nevents, 0);
  atomic_store(&w.error, 0);
  atomic_store(&w.stopping, 0);
  int err = _obm_os_thread_start(&w.thread, "obmem-trace", 256 * 1024, 1, writer_main);
  if (err) return err;
  w.running = 1;
  return 0;
}

int _obm_trace_writer_flush(void) {
  if (!w.running) return EINVAL;
  pthread_mutex_lock(&w.flush_lock);
  uint64_t target = ++w.flush_requested;
  sem_post(&w.wake);
  while (w.flush_done < target)
    pthread_cond_wait(&w.flushed, &w.flush_lock);
  pthread_mutex_unlock(&w.flush_lock);
  return atomic_load(&w.error);
}

int _obm_trace_writer_stop(uint64_t nlost) {
  if (!w.running) return EINVAL;
  w.nlost = nlost;
  atomic_store(&w.stopping, 1);
  sem_post(&w.wake);
  pthread_join(w.thread, NULL);
  w.running = 0;
  return atomic_load(&w.error);
}

void _obm_trace_writer_forget(void) {
  w.running = 0;
  pthread_mutex_init(&w.lock, NULL);
  pthread_mutex_init(&w.flush_lock, NULL);
  pthread_cond_init(&w.flushed, NULL);
  w.head = w.tail = NULL; /* queued buffers of the parent are dropped (their mappings kept) */
}
