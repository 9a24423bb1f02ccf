/* stats.c — statistics (obm_stats_get/print/print_json), the reports that OBMEM_STATS,
 * OBMEM_STATS_SIGNAL and OBMEM_STATS_FILE ask for, and the whole-structure checkers.
 *
 * Statistics walk every arena's pool descriptors under _obm_global_lock, in the spirit of
 * CPython's _PyObject_DebugMallocStats(): per class the pools, blocks in use and free, and
 * where the mapped bytes went (blocks in use, free blocks, pool tails, free pools, metadata).
 * Before walking, the caller's own heap and the heaps of exited threads have their pending
 * cross-thread frees collected, so a quiescent program gets exact numbers.
 *
 * Printing: one formatter (_obm_vsnprintf into a 4 KiB buffer, no stdio, no allocation)
 * serves the public printers, which fwrite the buffer to their FILE, and the reports, which
 * write(2) it to a file descriptor, so that a report works after the program has closed
 * stdout and stderr.
 *
 * Reports (set up by _obm_stats_report_init at the first allocation when OBMEM_STATS or
 * OBMEM_STATS_SIGNAL is set; one at a time, under report_lock):
 *   where   OBMEM_STATS_FILE (made absolute then; opened for appending at each process's
 *           first report, %p = its pid), else a copy of fd 2 taken at initialization
 *           (F_DUPFD_CLOEXEC, fd >= 100): gnulib's close_stdout, in coreutils and many GNU
 *           programs, closes fd 2 in an atexit handler, and daemons point fd 2 elsewhere.
 *           The copy is used while it still is the same file (device and inode: a program
 *           may close every fd and reuse the number), else the fd 2 of the moment, if open.
 *           A reader that has gone (prog 2>&1 | head) makes write fail with EPIPE, without
 *           the SIGPIPE that would kill the program at exit.
 *   exit    a destructor, not atexit: ld.so's _dl_fini, which runs the destructors, is the
 *           exit handler glibc registers first (before main), so it runs after every atexit
 *           handler and C++ static destructor of the program, whose frees are then counted;
 *           an atexit handler registered at the first allocation would run before those the
 *           program registers earlier, and after those it registers later.  Nothing runs at
 *           _exit, _Exit, quick_exit, abort or a fatal signal (OBMEM_STATS_SIGNAL still
 *           reports from a running program).
 *   signal  the handler only counts the request and posts a semaphore (sem_post is
 *           async-signal-safe); a thread of ours, with every signal blocked, waits on it and
 *           prints as any thread may, taking the allocator's locks.  Printing in the handler
 *           would deadlock on a lock held by the thread it interrupted, or read that thread's
 *           heap in mid-update.  Installed only over SIG_DFL.  A request still pending at exit
 *           is printed then, before the exit report.  A forked child has no thread: its
 *           requests wait for its exit.  The thread sleeps until a request comes.  It must
 *           not keep the process alive after the program's last thread ends (main may end
 *           with pthread_exit): when the last thread that has a heap exits, heap.c tells it
 *           to return (_obm_stats_threads_gone), as it tells the purge thread, and glibc
 *           then ends the process with exit(0) as the last thread goes; a thread that makes
 *           a heap again starts it anew (_obm_stats_threads_back).
 */
#define _GNU_SOURCE
#include "alloc/alloc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void class_rounding(obm_stats_t *out) {
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_class_stats_t *cs = &out->classes[c];
    if (_obm_debug_on || cs->nmalloc == 0) continue;
    /* mean rounding of this class's allocations so far, applied to the live blocks */
    uint64_t mean_req = cs->requested_bytes / cs->nmalloc;
    if (mean_req > cs->block_size) mean_req = cs->block_size;
    cs->rounding_bytes = cs->blocks_in_use * (cs->block_size - mean_req);
  }
}

/* The pools' and heaps' counters, under the global lock (the lists do not change) but not the
 * heaps' locks: they are their owners' plain fields, read here without synchronization on
 * purpose (a snapshot while other threads allocate), so that the owners' fast paths stay free
 * of atomics.  Not instrumented by ThreadSanitizer: a suppression by function name
 * (tests/tsan.supp) missed a report whose earlier access TSan had restored without this
 * frame. */
static OBM_NO_TSAN void read_counters(obm_stats_t *out) {
  for (obm_arena_t *a = _obm_arenas_all; a; a = a->all_next) {
    out->bytes_metadata += OBM_POOL_SIZE; /* slot 0 */
    out->bytes_free_pools += (uint64_t)a->nfree_slots * OBM_POOL_SIZE;
    for (int s = 1; s < OBM_NSLOTS; s++) {
      obm_pool_t *p = &a->pools[s];
      if (p->kind != OBM_SLOT_HEAD) continue;
      obm_class_stats_t *cs = &out->classes[p->size_class];
      uint32_t capacity = _obm_pool_capacity(p), block_size = _obm_pool_block_size(p);
      cs->npools++;
      if (p->nused == capacity) cs->nfull_pools++;
      cs->blocks_in_use += p->nused;
      cs->blocks_free += capacity - p->nused;
      cs->tail_bytes += (uint64_t)p->nslots * OBM_POOL_SIZE - (uint64_t)capacity * block_size;
      if (_obm_debug_on) {
        for (uint32_t i = 0; i < p->ncarved; i++) {
          size_t need = _obm_debug_block_requested(p->start + (size_t)i * block_size, block_size);
          if (need) cs->rounding_bytes += block_size - need;
        }
      }
    }
  }
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next) {
    for (int c = 0; c < OBM_NCLASSES; c++) {
      out->classes[c].nmalloc += h->cls[c].nmalloc;
      out->classes[c].requested_bytes += h->cls[c].requested;
    }
    out->bytes_metadata += sizeof(obm_heap_t);
    uint64_t d = __atomic_load_n(&h->purge_delay, __ATOMIC_RELAXED) / 1000000u;
    if (d > out->purge_delay_ms_max) out->purge_delay_ms_max = d;
  }
}

void obm_stats_get(obm_stats_t *out) {
  _obm_init();
  memset(out, 0, sizeof *out);
  obm_heap_t *self = _obm_heap_get();
  uint64_t collected = 0;
  if (!self->is_empty_heap) collected += _obm_heap_collect_remote(self);
  collected += _obm_heap_collect_abandoned();
  for (int c = 0; c < OBM_NCLASSES; c++) {
    out->classes[c].block_size = _obm_class_size[c];
    out->classes[c].pool_size = (uint32_t)_obm_class_slots[c] * OBM_POOL_SIZE;
  }
  pthread_mutex_lock(&_obm_global_lock);
  read_counters(out);
  if ((uint64_t)_obm_option(OBM_OPTION_PURGE_DELAY_MS) > out->purge_delay_ms_max)
    out->purge_delay_ms_max = (uint64_t)_obm_option(OBM_OPTION_PURGE_DELAY_MS);
  out->nheaps = _obm_heaps_count;
  out->nheaps_abandoned = _obm_heaps_abandoned;
  out->arenas_allocated = _obm_arenas_allocated;
  out->arenas_reclaimed = _obm_arenas_reclaimed;
  out->arenas_current = _obm_arenas_current;
  out->arenas_highwater = _obm_arenas_highwater;
  out->arenas_spare = _obm_arenas_nspare;
  pthread_mutex_unlock(&_obm_global_lock);
  out->remote_frees_pending = collected;
  class_rounding(out);
  _obm_large_stats(out);
  out->os_maps = _obm_os_map_calls();
  out->os_unmaps = _obm_os_unmap_calls();
  out->bytes_metadata += _obm_pagemap_bytes();
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_class_stats_t *cs = &out->classes[c];
    out->bytes_in_use += cs->blocks_in_use * cs->block_size;
    out->bytes_free_in_pools += cs->blocks_free * cs->block_size;
    out->bytes_pool_tails += cs->tail_bytes;
    out->bytes_rounding += cs->rounding_bytes;
  }
  out->bytes_free_pools += out->arenas_spare * (OBM_ARENA_SIZE - OBM_POOL_SIZE);
  out->bytes_metadata += out->arenas_spare * OBM_POOL_SIZE;
  out->bytes_in_use += out->large_bytes;
  out->bytes_requested_est =
      out->bytes_in_use > out->bytes_rounding ? out->bytes_in_use - out->bytes_rounding : 0;
  out->bytes_mapped = atomic_load_explicit(&_obm_bytes_mapped, memory_order_relaxed);
  out->bytes_mapped_peak = atomic_load_explicit(&_obm_bytes_mapped_peak, memory_order_relaxed);
}

/* ---- printing ---------------------------------------------------------------------------- */

/* Text on its way to a FILE (file != NULL) or to a file descriptor. */
typedef struct stats_out_s {
  FILE *file;
  int fd;
  size_t len; /* bytes waiting in buf */
  char buf[4096];
} stats_out_t;

static void out_flush(stats_out_t *o) {
  if (o->len == 0) return;
  if (o->file)
    fwrite(o->buf, 1, o->len, o->file);
  else
    _obm_write_fd(o->fd, o->buf, o->len);
  o->len = 0;
}

/* Appends formatted text (a piece longer than the whole buffer would be cut; the longest,
 * one JSON class, is about 250 bytes). */
__attribute__((format(printf, 2, 3))) static void out_printf(stats_out_t *o, const char *fmt, ...) {
  for (int attempt = 0;; attempt++) {
    size_t room = sizeof o->buf - o->len;
    va_list ap;
    va_start(ap, fmt);
    size_t n = (size_t)_obm_vsnprintf(o->buf + o->len, room, fmt, ap);
    va_end(ap);
    if (n < room || attempt > 0) {
      o->len += n < room ? n : room - 1;
      return;
    }
    out_flush(o);
  }
}

static void print_bytes_line(stats_out_t *o, const char *what, uint64_t bytes) {
  out_printf(o, "# %-44s = %15" PRIu64 "\n", what, bytes);
}

/* event: < 0 none (the public printers), 0 the exit report, > 0 the signal's number. */
static void print_text(stats_out_t *o, const obm_stats_t *st, int event) {
  out_printf(o, "obmem %s allocator statistics (pid %d", OBM_VERSION_STRING, (int)getpid());
  if (event == 0) out_printf(o, ", at exit");
  if (event > 0) out_printf(o, ", on signal %d", event);
  out_printf(o, ")\n");
  out_printf(o, "class  block  pool  # pools  # full  # blocks in use  # free blocks"
                "   # allocs  mean req\n");
  out_printf(o, "-----  -----  ----  -------  ------  ---------------  -------------"
                "  ---------  --------\n");
  for (int c = 0; c < OBM_NCLASSES; c++) {
    const obm_class_stats_t *cs = &st->classes[c];
    if (cs->npools == 0 && cs->nmalloc == 0) continue;
    out_printf(o,
               "%5d  %5u  %3uK  %7" PRIu64 "  %6" PRIu64 "  %15" PRIu64 "  %13" PRIu64 "  %9" PRIu64
               "  %8" PRIu64 "\n",
               c, cs->block_size, cs->pool_size / 1024, cs->npools, cs->nfull_pools,
               cs->blocks_in_use, cs->blocks_free, cs->nmalloc,
               cs->nmalloc ? cs->requested_bytes / cs->nmalloc : 0);
  }
  out_printf(o, "\n");
  out_printf(o, "# arenas allocated total           = %" PRIu64 "\n", st->arenas_allocated);
  out_printf(o, "# arenas reclaimed                 = %" PRIu64 "\n", st->arenas_reclaimed);
  out_printf(o, "# arenas highwater mark            = %" PRIu64 "\n", st->arenas_highwater);
  out_printf(o, "# arenas allocated current         = %" PRIu64 " (%" PRIu64 " spare)\n",
             st->arenas_current, st->arenas_spare);
  out_printf(o, "%" PRIu64 " arenas * %d bytes/arena       = %" PRIu64 "\n", st->arenas_current,
             OBM_ARENA_SIZE, st->arenas_current * (uint64_t)OBM_ARENA_SIZE);
  out_printf(o, "# large blocks live                = %" PRIu64 " (%" PRIu64 " bytes)\n",
             st->large_blocks, st->large_bytes);
  out_printf(o, "# large blocks cached              = %" PRIu64 " (%" PRIu64 " bytes)\n",
             st->large_cached_blocks, st->large_cached_bytes);
  out_printf(o, "# large allocations / cache hits   = %" PRIu64 " / %" PRIu64 "\n",
             st->large_nmalloc, st->large_cache_hits);
  out_printf(o, "# heaps (abandoned)                = %" PRIu64 " (%" PRIu64 ")\n", st->nheaps,
             st->nheaps_abandoned);
  out_printf(o, "# purge delay, longest of a heap  = %" PRIu64 " ms\n", st->purge_delay_ms_max);
  out_printf(o, "\n");
  print_bytes_line(o, "bytes in allocated blocks", st->bytes_in_use);
  print_bytes_line(o, "bytes requested (estimate)", st->bytes_requested_est);
  print_bytes_line(o, "bytes lost to size-class rounding", st->bytes_rounding);
  print_bytes_line(o, "bytes in available blocks", st->bytes_free_in_pools);
  print_bytes_line(o, "bytes lost to unused pool tails", st->bytes_pool_tails);
  print_bytes_line(o, "bytes in free pools", st->bytes_free_pools);
  print_bytes_line(o, "bytes in cached large blocks", st->large_cached_bytes);
  print_bytes_line(o, "bytes in metadata", st->bytes_metadata);
  print_bytes_line(o, "total mapped", st->bytes_mapped);
  print_bytes_line(o, "peak mapped", st->bytes_mapped_peak);
}

/* One JSON object; the reports add "event": "exit" or "signal" (with "signal": its number). */
static void print_json(stats_out_t *o, const obm_stats_t *st, int event) {
  out_printf(o, "{\"version\": \"%s\", \"pid\": %d, ", OBM_VERSION_STRING, (int)getpid());
  if (event == 0) out_printf(o, "\"event\": \"exit\", ");
  if (event > 0) out_printf(o, "\"event\": \"signal\", \"signal\": %d, ", event);
  out_printf(o, "\"classes\": [");
  for (int c = 0; c < OBM_NCLASSES; c++) {
    const obm_class_stats_t *cs = &st->classes[c];
    out_printf(o,
               "%s\n  {\"class\": %d, \"block_size\": %u, \"pool_size\": %u, \"pools\": %" PRIu64
               ", \"full_pools\": %" PRIu64 ", \"blocks_in_use\": %" PRIu64
               ", \"blocks_free\": %" PRIu64 ", \"nmalloc\": %" PRIu64
               ", \"requested_bytes\": %" PRIu64 ", \"rounding_bytes\": %" PRIu64
               ", \"tail_bytes\": %" PRIu64 "}",
               c ? "," : "", c, cs->block_size, cs->pool_size, cs->npools, cs->nfull_pools,
               cs->blocks_in_use, cs->blocks_free, cs->nmalloc, cs->requested_bytes,
               cs->rounding_bytes, cs->tail_bytes);
  }
  out_printf(o, "],\n");
#define J(field) out_printf(o, " \"%s\": %" PRIu64 ",\n", #field, st->field)
  J(arenas_allocated);
  J(arenas_reclaimed);
  J(arenas_current);
  J(arenas_highwater);
  J(arenas_spare);
  J(large_blocks);
  J(large_bytes);
  J(large_mapped_bytes);
  J(large_cached_blocks);
  J(large_cached_bytes);
  J(large_nmalloc);
  J(large_cache_hits);
  J(os_maps);
  J(os_unmaps);
  J(bytes_in_use);
  J(bytes_requested_est);
  J(bytes_free_in_pools);
  J(bytes_pool_tails);
  J(bytes_rounding);
  J(bytes_free_pools);
  J(bytes_metadata);
  J(bytes_mapped);
  J(bytes_mapped_peak);
  J(nheaps);
  J(nheaps_abandoned);
  J(purge_delay_ms_max);
#undef J
  out_printf(o, " \"remote_frees_pending\": %" PRIu64 "}\n", st->remote_frees_pending);
}

/* The public printers: the same formatter as the reports, into a FILE. */
static void print_to_file(FILE *f, void (*print)(stats_out_t *, const obm_stats_t *, int)) {
  if (!f) f = stderr;
  obm_stats_t st;
  obm_stats_get(&st);
  stats_out_t o;
  o.file = f;
  o.fd = -1;
  o.len = 0;
  print(&o, &st, -1);
  out_flush(&o);
  fflush(f);
}

void obm_stats_print(FILE *f) {
  print_to_file(f, print_text);
}

void obm_stats_print_json(FILE *f) {
  print_to_file(f, print_json);
}

/* ---- reports: OBMEM_STATS at exit, OBMEM_STATS_SIGNAL, OBMEM_STATS_FILE -------------------
 * Invariants: report_on is set once, before any report; every report and every access to the
 * fields below it (except the handler's counter) is under report_lock, the outermost lock
 * (taken with no allocator lock held; fork takes it first);
 * signal_served <= signal_requests (a request is pending while they differ). */

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static int report_on;         /* reports are configured (release/acquire) */
static int report_closed;     /* the exit report is done: no report after it */
static int stderr_copy = -1;  /* fd 2 as it was at initialization, or -1 */
static dev_t stderr_copy_dev; /* ... and the file it is */
static ino_t stderr_copy_ino;
static char file_pattern[4096]; /* OBMEM_STATS_FILE made absolute, "" when unset */
static int file_fd = -1;        /* file_pattern opened by process file_pid, or -1 */
static pid_t file_pid;
static dev_t file_dev;
static ino_t file_ino;
static obm_stats_t report_stats; /* static: the signal thread's stack stays small */
static stats_out_t report_out;

static int signal_number;             /* the signal that asks for a report; 0 none */
static unsigned long signal_requests; /* signals received (the handler adds, atomically) */
static unsigned long signal_served;   /* signal_requests when the last signal report began */
static sem_t signal_sem;              /* posted by the handler and at exit */
static pthread_t signal_thread;
static int signal_thread_running; /* in this process (a forked child has none) */
/* what the thread is to do when it wakes next: go on, or return (detached: the program's
 * threads are gone; joined: the exit report is done) */
static enum { THREAD_STAY, THREAD_LEAVE_DETACHED, THREAD_LEAVE_JOINED } signal_thread_leave;

static int fd_is(int fd, dev_t dev, ino_t ino) {
  struct stat st;
  return fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* pattern with each %p replaced by pid and %% by %; -1 when the result does not fit. */
static int expand_path(char *out, size_t size, const char *pattern, int pid) {
  size_t n = 0;
  for (const char *p = pattern; *p; p++) {
    char number[24];
    const char *piece = p;
    size_t len = 1;
    if (p[0] == '%' && p[1] == 'p') {
      len = (size_t)_obm_snprintf(number, sizeof number, "%d", pid);
      piece = number;
      p++;
    } else if (p[0] == '%' && p[1] == '%') {
      piece = ++p;
    }
    if (n + len >= size) return -1;
    memcpy(out + n, piece, len);
    n += len;
  }
  out[n] = 0;
  return 0;
}

/* The descriptor this report goes to, or -1 (see the top of the file). */
static int report_fd(void) {
  if (file_pattern[0]) {
    pid_t pid = getpid();
    if (file_fd >= 0 && file_pid == pid && fd_is(file_fd, file_dev, file_ino)) return file_fd;
    /* a forked child inherited the parent's file: it has one of its own (%p); an fd that is
     * no longer our file belongs to the program now and is left alone */
    if (file_fd >= 0 && fd_is(file_fd, file_dev, file_ino)) close(file_fd);
    file_fd = -1;
    char path[sizeof file_pattern + 64];
    if (expand_path(path, sizeof path, file_pattern, (int)pid) != 0) {
      _obm_warning("OBMEM_STATS_FILE=%s is too long with the pid; statistics go to stderr",
                   file_pattern);
    } else {
      int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
      struct stat st;
      if (fd >= 0 && fstat(fd, &st) == 0) {
        file_fd = fd;
        file_pid = pid;
        file_dev = st.st_dev;
        file_ino = st.st_ino;
        return file_fd;
      }
      const char *why = strerrorname_np(errno);
      if (fd >= 0) close(fd);
      _obm_warning("OBMEM_STATS_FILE: cannot open %s (%s); statistics go to stderr", path,
                   why ? why : "error");
    }
  }
  if (fd_is(stderr_copy, stderr_copy_dev, stderr_copy_ino)) return stderr_copy;
  if (fcntl(2, F_GETFD) >= 0) return 2;
  return -1;
}

/* Prints one report in OBMEM_STATS's format (2 JSON, else text).  Caller holds report_lock. */
static void report(int event) {
  int fd = report_fd();
  if (fd < 0) return;
  obm_stats_get(&report_stats);
  /* SIGPIPE blocked while writing; one that the writes raise is taken back before the mask
   * is restored, unless one was already pending */
  sigset_t pipe_only, saved, pending;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &saved);
  sigpending(&pending);
  int was_pending = sigismember(&pending, SIGPIPE);
  report_out.file = NULL;
  report_out.fd = fd;
  report_out.len = 0;
  if (_obm_option(OBM_OPTION_STATS) == 2)
    print_json(&report_out, &report_stats, event);
  else
    print_text(&report_out, &report_stats, event);
  out_flush(&report_out);
  if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
    struct timespec zero = {0, 0};
    sigtimedwait(&pipe_only, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

/* The signal report, if a signal came since the last one.  Caller holds report_lock. */
static void serve_signal_requests(void) {
  unsigned long requests = __atomic_load_n(&signal_requests, __ATOMIC_ACQUIRE);
  if (requests == signal_served || report_closed) return;
  signal_served = requests;
  report(signal_number);
}

/* Async-signal-safe: an atomic add and sem_post; errno is kept. */
static void signal_handler(int signo) {
  (void)signo;
  int saved_errno = errno;
  __atomic_fetch_add(&signal_requests, 1, __ATOMIC_RELEASE);
  sem_post(&signal_sem);
  errno = saved_errno;
}

static void *signal_thread_main(void *arg) {
  (void)arg;
  for (;;) {
    while (sem_wait(&signal_sem) != 0) {
    }
    pthread_mutex_lock(&report_lock);
    int leave = signal_thread_leave;
    if (leave == THREAD_STAY) serve_signal_requests();
    if (leave == THREAD_LEAVE_DETACHED) {
      signal_thread_running = 0;
      signal_thread_leave = THREAD_STAY;
      pthread_detach(pthread_self());
    }
    pthread_mutex_unlock(&report_lock);
    if (leave != THREAD_STAY) return NULL;
  }
}

/* Starts the thread unless one runs; 0 or an error number.  Called with report_lock not held:
 * creating a thread allocates, and the first allocation of a thread may come back here
 * (_obm_stats_threads_back), which then finds the thread reserved, not a second one to start. */
static int signal_thread_start(void) {
  pthread_mutex_lock(&report_lock);
  if (report_closed) { /* exit has begun: no thread any more */
    pthread_mutex_unlock(&report_lock);
    return 0;
  }
  int reserved = !signal_thread_running;
  signal_thread_running = 1;
  signal_thread_leave = THREAD_STAY;
  pthread_mutex_unlock(&report_lock);
  if (!reserved) return 0;
  int rc = _obm_own_thread_start(&signal_thread, "obmem-stats", 256 * 1024, 1, signal_thread_main);
  if (rc != 0) {
    pthread_mutex_lock(&report_lock);
    signal_thread_running = 0;
    pthread_mutex_unlock(&report_lock);
  }
  return rc;
}

static void signal_start(int signo) {
  struct sigaction old, action;
  if (sigaction(signo, NULL, &old) != 0) {
    _obm_warning("OBMEM_STATS_SIGNAL=%d is not a signal; ignored", signo);
    return;
  }
  if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) {
    _obm_warning("OBMEM_STATS_SIGNAL: signal %d already has a handler or is ignored; "
                 "no statistics on it",
                 signo);
    return;
  }
  sem_init(&signal_sem, 0, 0);
  signal_number = signo;
  memset(&action, 0, sizeof action);
  action.sa_handler = signal_handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (sigaction(signo, &action, NULL) != 0) {
    _obm_warning("OBMEM_STATS_SIGNAL: signal %d cannot be caught; no statistics on it", signo);
    signal_number = 0;
    return;
  }
  int rc = signal_thread_start();
  if (rc != 0) {
    sigaction(signo, &old, NULL);
    signal_number = 0;
    _obm_warning("OBMEM_STATS_SIGNAL: no thread to print with (error %d); no statistics on "
                 "signal %d",
                 rc, signo);
    return;
  }
}

void _obm_stats_threads_gone(void) {
  pthread_mutex_lock(&report_lock);
  if (signal_thread_running && signal_thread_leave == THREAD_STAY) {
    signal_thread_leave = THREAD_LEAVE_DETACHED;
    sem_post(&signal_sem);
  }
  pthread_mutex_unlock(&report_lock);
}

void _obm_stats_threads_back(void) {
  pthread_mutex_lock(&report_lock);
  int wanted = signal_number != 0;
  pthread_mutex_unlock(&report_lock);
  /* a thread told to go but not gone yet stays; requests that came meanwhile are served */
  if (wanted && signal_thread_start() == 0) sem_post(&signal_sem);
}

void _obm_stats_report_init(void) {
  long signal_option = _obm_option(OBM_OPTION_STATS_SIGNAL);
  if (!_obm_option(OBM_OPTION_STATS) && !signal_option) return;
  const char *file = _obm_option_string(OBM_STRING_OPTION_STATS_FILE);
  if (file) {
    size_t len = strlen(file), cwd_len;
    if (file[0] != '/' && getcwd(file_pattern, sizeof file_pattern) &&
        (cwd_len = strlen(file_pattern)) + 1 + len < sizeof file_pattern) {
      file_pattern[cwd_len] = '/';
      memcpy(file_pattern + cwd_len + 1, file, len + 1);
    } else {
      memcpy(file_pattern, file, len + 1); /* fits: options keep at most this size */
    }
  }
  stderr_copy = fcntl(2, F_DUPFD_CLOEXEC, 100);
  if (stderr_copy < 0) stderr_copy = fcntl(2, F_DUPFD_CLOEXEC, 3);
  struct stat st;
  if (stderr_copy >= 0 && fstat(stderr_copy, &st) == 0) {
    stderr_copy_dev = st.st_dev;
    stderr_copy_ino = st.st_ino;
  } else if (stderr_copy >= 0) {
    close(stderr_copy);
    stderr_copy = -1;
  }
  __atomic_store_n(&report_on, 1, __ATOMIC_RELEASE);
  if (signal_option) signal_start(signal_option == 1 ? SIGUSR2 : (int)signal_option);
}

/* At exit (see the top of the file): a pending signal report, then the exit report. */
__attribute__((destructor)) static void report_at_exit(void) {
  if (!__atomic_load_n(&report_on, __ATOMIC_ACQUIRE)) return;
  fflush(stdout); /* the program's own output first, when both go to one terminal */
  pthread_mutex_lock(&report_lock);
  serve_signal_requests();
  if (_obm_option(OBM_OPTION_STATS) && !report_closed) report(0);
  report_closed = 1;
  int stop_thread = signal_thread_running && !pthread_equal(pthread_self(), signal_thread);
  if (stop_thread) {
    signal_thread_leave = THREAD_LEAVE_JOINED;
    sem_post(&signal_sem);
  }
  signal_thread_running = 0;
  pthread_mutex_unlock(&report_lock);
  if (stop_thread) pthread_join(signal_thread, NULL); /* nothing of ours runs on (dlclose) */
}

void _obm_stats_fork_prepare(void) {
  pthread_mutex_lock(&report_lock);
}

void _obm_stats_fork_parent(void) {
  pthread_mutex_unlock(&report_lock);
}

void _obm_stats_fork_child(void) {
  pthread_mutex_unlock(&report_lock);
  if (signal_thread_running) { /* not forked: requests wait for the child's exit */
    signal_thread_running = 0;
    signal_thread_leave = THREAD_STAY;
    sem_init(&signal_sem, 0, 0);
  }
}

/* ---- checkers ---------------------------------------------------------------------------- */

/* Problems found while the checker holds the locks, reported after it lets them go: the
 * error handler may allocate, which can need those locks.  Under _obm_global_lock. */
typedef struct found_s {
  const void *where;
  const char *what;
  unsigned long long a, b;
} found_t;
#define MAX_FOUND 16
static found_t found[MAX_FOUND];
static size_t nfound;

static size_t corrupt(const void *where, const char *what, unsigned long long a,
                      unsigned long long b) {
  if (nfound < MAX_FOUND) found[nfound] = (found_t){where, what, a, b};
  nfound++;
  return 1;
}

static size_t check_pool(obm_arena_t *a, int s) {
  obm_pool_t *p = &a->pools[s];
  size_t problems = 0;
  if (p->nslots == 0 || s + p->nslots > OBM_NSLOTS)
    return corrupt(p, "pool spans outside its arena", (unsigned long long)s, p->nslots);
  for (int i = 1; i < p->nslots; i++)
    if (a->pools[s + i].kind != OBM_SLOT_TAIL || a->pools[s + i].head_offset != i)
      problems += corrupt(&a->pools[s + i], "pool tail slot is not marked", (unsigned)i,
                          a->pools[s + i].kind);
  if (p->size_class >= OBM_NCLASSES)
    return corrupt(p, "pool has no size class", p->size_class, OBM_NCLASSES);
  uint32_t capacity = _obm_pool_capacity(p), block_size = _obm_pool_block_size(p);
  if (p->nslots != _obm_class_slots[p->size_class] ||
      p->div_inverse != _obm_class_div[p->size_class].inverse ||
      p->div_shift != _obm_class_div[p->size_class].shift)
    problems += corrupt(p, "pool geometry disagrees with its class", p->nslots, p->size_class);
  if (p->ncarved > capacity || p->nused > capacity)
    problems += corrupt(p, "pool counts exceed capacity", p->ncarved, p->nused);
  uint64_t nfree = 0;
  uint8_t *end = p->start + (size_t)p->ncarved * block_size;
  for (obm_block_t *b = p->free; b; b = b->next) {
    uint8_t *q = (uint8_t *)b;
    if (q < p->start || q >= end || (size_t)(q - p->start) % block_size) {
      problems +=
          corrupt(b, "free-list entry is not a carved block of its pool",
                  (unsigned long long)(uintptr_t)q, (unsigned long long)(uintptr_t)p->start);
      break;
    }
    if (++nfree > capacity) {
      problems += corrupt(p, "free list is longer than the pool (cycle?)", nfree, capacity);
      break;
    }
  }
  /* nused counts blocks pending on remote_free as used */
  if (nfree + p->nused + (capacity - p->ncarved) != capacity)
    problems += corrupt(p, "nused + |free| + uncarved != capacity", nfree + p->nused, p->ncarved);
  if (p->cached && (p->in_list || p->nused != 0))
    problems += corrupt(p, "cached pool is listed or has live blocks", p->in_list, p->nused);
  if (a->heap && p->in_list) {
    obm_pool_t *q = a->heap->cls[p->size_class].pool;
    while (q && q != &_obm_pool_empty && q != p)
      q = q->next;
    if (q != p) problems += corrupt(p, "pool marked in_list is not in its class list", 0, 0);
  }
  if (_obm_debug_on)
    for (uint32_t i = 0; i < p->ncarved; i++)
      problems += _obm_debug_check_block(p->start + (size_t)i * block_size, block_size);
  return problems;
}

/* Unlocks the arena locks of the heaps before `end` (all of them for NULL). */
static void unlock_heaps(obm_heap_t *end) {
  for (obm_heap_t *h = _obm_heaps_all; h != end; h = h->all_next)
    if (!h->orphaned) _obm_heap_unlock(h);
}

/* Takes _obm_global_lock and every heap's arena lock, under which the purge thread changes a
 * heap's arenas, usable list and pool cache: checked without them, a pool release half done
 * by the purge thread reads as corruption.  The owners take their arena lock first and then
 * may wait for the global one, so the arena locks are only tried here, and all are let go
 * and tried again when one is busy. */
static void lock_everything(void) {
  for (;;) {
    pthread_mutex_lock(&_obm_global_lock);
    obm_heap_t *h = _obm_heaps_all;
    while (h && (h->orphaned || _obm_heap_trylock(h)))
      h = h->all_next;
    if (!h) return;
    unlock_heaps(h);
    pthread_mutex_unlock(&_obm_global_lock);
    sched_yield();
  }
}

size_t obm_rss_bytes(void) {
  return _obm_os_rss_bytes();
}

size_t _obm_heap_check_all(void) {
  _obm_init();
  size_t problems = 0;
  lock_everything();
  for (obm_arena_t *a = _obm_arenas_all; a; a = a->all_next) {
    if (a->heap && a->heap->orphaned) continue; /* may have been mid-update at fork */
    if (a->heap && a->kind != _obm_arena_kind(a->heap))
      problems += corrupt(a, "arena kind is wrong", a->kind, _obm_arena_kind(a->heap));
    if (_obm_pagemap_lookup(a) != (obm_segment_t *)a)
      problems += corrupt(a, "page map does not point at the arena", 0, 0);
    if ((unsigned)__builtin_popcountll(a->free_slots) != a->nfree_slots || (a->free_slots & 1))
      problems += corrupt(a, "arena free-slot count disagrees with its bitmap", a->nfree_slots,
                          (unsigned)__builtin_popcountll(a->free_slots));
    if ((a->nfree_slots > 0) != (a->in_usable != 0))
      problems += corrupt(a, "arena usable-list membership is wrong", a->nfree_slots, a->in_usable);
    for (int s = 1; s < OBM_NSLOTS; s++) {
      int is_free = (a->free_slots >> s) & 1;
      uint8_t kind = a->pools[s].kind;
      if (is_free != (kind == OBM_SLOT_FREE))
        problems +=
            corrupt(&a->pools[s], "slot state disagrees with the arena bitmap", (unsigned)s, kind);
      if (kind == OBM_SLOT_HEAD) problems += check_pool(a, s);
    }
  }
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next) {
    if (h->orphaned) continue;
    unsigned last = 0;
    for (obm_arena_t *a = h->usable; a; a = a->next) {
      if (a->nfree_slots < last)
        problems += corrupt(a, "usable arenas are not ordered by free slots", a->nfree_slots, last);
      if (a->heap != h) problems += corrupt(a, "arena in a heap's list has another owner", 0, 0);
      last = a->nfree_slots;
    }
    for (int c = 0; c < OBM_NCLASSES; c++) {
      obm_pool_t *prev_pool = NULL;
      for (obm_pool_t *p = h->cls[c].pool; p && p != &_obm_pool_empty; p = p->next) {
        if (p->kind != OBM_SLOT_HEAD || p->size_class != c || !p->in_list ||
            _obm_pool_arena(p)->heap != h || p->prev != prev_pool)
          problems += corrupt(p, "class list holds a pool that does not belong", (unsigned)c,
                              p->size_class);
        prev_pool = p;
      }
      if (h->cls_tail[c] != prev_pool)
        problems += corrupt(h, "class list tail is not its last pool", (unsigned)c, 0);
    }
    uint64_t ncached_slots = 0;
    for (int c = 0; c < OBM_NCLASSES; c++) {
      unsigned n = 0;
      obm_pool_t *prev_pool = NULL;
      for (obm_pool_t *p = atomic_load_explicit(&h->cached[c], memory_order_relaxed); p;
           p = p->next) {
        if (p->kind != OBM_SLOT_HEAD || p->size_class != c || p->in_list || !p->cached ||
            p->nused != 0 || _obm_pool_arena(p)->heap != h || p->prev != prev_pool)
          problems +=
              corrupt(p, "pool cache holds a pool that does not belong", (unsigned)c, p->nused);
        if (++n > OBM_CACHED_PER_CLASS) {
          problems += corrupt(h, "pool cache of a class is over its bound (cycle?)", n, c);
          break;
        }
        ncached_slots += p->nslots;
        prev_pool = p;
      }
      if (n != h->ncached[c])
        problems += corrupt(h, "pool cache count disagrees with its list", h->ncached[c], n);
    }
    if (ncached_slots != h->ncached_slots)
      problems += corrupt(h, "pool cache slot count disagrees with its lists", h->ncached_slots,
                          ncached_slots);
  }
  found_t report[MAX_FOUND];
  size_t nreport = nfound < MAX_FOUND ? nfound : MAX_FOUND, nmore = nfound - nreport;
  memcpy(report, found, nreport * sizeof report[0]);
  nfound = 0;
  unlock_heaps(NULL);
  pthread_mutex_unlock(&_obm_global_lock);
  for (size_t i = 0; i < nreport; i++)
    _obm_error(OBM_ERR_CORRUPTION, (void *)report[i].where, "%s (%llu vs %llu)%s", report[i].what,
               report[i].a, report[i].b,
               i + 1 == nreport && nmore ? " (and more problems not reported)" : "");
  return problems + _obm_large_check();
}

size_t obm_check(void) {
  return _obm_heap_check_all();
}
