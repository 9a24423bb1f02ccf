/* purge.c — the purge thread: memory goes back to the OS on schedule even when the program
 * stops calling the allocator.
 *
 * Free memory is purged OBMEM_PURGE_DELAY_MS after it became free (arena.c, large.c).  The
 * owner of a heap checks its own arenas whenever it takes or releases a pool; a program that
 * peaks and then idles (a server between requests, a GUI waiting for input) makes no such
 * calls and would keep its peak.  So, as jemalloc's background threads do, one thread looks
 * after the delay: it decommits the dirty slots of every heap whose owner is not inside its
 * own arena code at that moment (the heap's arena lock, taken with a trylock: a busy owner
 * purges itself), unmaps spare arenas and cached large blocks past their time, and sleeps
 * without a timeout once nothing is left to purge.
 *
 * It costs the program nothing while memory is not being freed: the thread is started only
 * when memory first becomes purgeable, and woken (one futex call) only when purgeable memory
 * appears after it went to sleep for good; _obm_purger_pending says that it is due to look,
 * so a release that finds it set does one relaxed load.  OBMEM_PURGE_THREAD=0 turns it off
 * (then only allocator calls purge, as mimalloc does), as does OBMEM_PURGE_DELAY_MS=0 (which
 * purges at once).  The thread blocks every signal and is named "obmem-purge".  A forked
 * child has no purge thread until its own memory becomes purgeable.  When the last thread
 * that allocated exits (a program whose main() ends with pthread_exit, or a child forked
 * from a thread), the purge thread exits too, or the process would never end.
 *
 * Locks: the pass holds pass_lock (fork takes it first, so that a child never inherits a
 * heap lock the thread held); wait_lock guards sleeping and waking.  Order: pass_lock, heap
 * arena lock, then the global and large locks; wait_lock before the global lock (starting
 * the thread may allocate).  A heap about to map a fresh arena gives back other heaps' free
 * slots under pass_lock too (arena.c give_back_before_map), taken with a trylock while it
 * holds its own arena lock, so that order is never waited on backwards.
 */
#define _GNU_SOURCE
#include "alloc/alloc_internal.h"

#include <string.h>
#include <time.h>

_Atomic(int) _obm_purger_pending;
static pthread_mutex_t pass_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cond;
static int started;        /* under wait_lock */
static int disabled;       /* under wait_lock */
static int exit_requested; /* under wait_lock */

/* One pass; returns whether something is left that will become purgeable later. */
static int purge_all(void) {
  uint64_t now = _obm_os_clock_coarse_ns();
  int left = 0;
  for (obm_heap_t *h = _obm_heaps_next(NULL); h; h = _obm_heaps_next(h))
    left |= _obm_arena_purge_heap(h, now);
  left |= _obm_arena_purge_expired();
  left |= _obm_large_purge_expired();
  return left;
}

static void deadline_after(struct timespec *ts, uint64_t ns) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ns += (uint64_t)ts->tv_nsec;
  ts->tv_sec += (time_t)(ns / 1000000000u);
  ts->tv_nsec = (long)(ns % 1000000000u);
}

static void *purger_main(void *arg) {
  (void)arg;
  uint64_t delay = (uint64_t)_obm_option(OBM_OPTION_PURGE_DELAY_MS) * 1000000u;
  pthread_mutex_lock(&wait_lock);
  for (;;) {
    while (!atomic_load_explicit(&_obm_purger_pending, memory_order_acquire) && !exit_requested)
      pthread_cond_wait(&wait_cond, &wait_lock);
    /* what became free just now is purgeable one delay from now */
    struct timespec deadline;
    deadline_after(&deadline, delay);
    while (!exit_requested && pthread_cond_timedwait(&wait_cond, &wait_lock, &deadline) == 0) {
    }
    if (exit_requested) break;
    /* cleared before the pass, so that memory freed during it pokes again */
    atomic_store_explicit(&_obm_purger_pending, 0, memory_order_release);
    pthread_mutex_unlock(&wait_lock);
    pthread_mutex_lock(&pass_lock);
    int left = purge_all();
    pthread_mutex_unlock(&pass_lock);
    pthread_mutex_lock(&wait_lock);
    if (left) atomic_store_explicit(&_obm_purger_pending, 1, memory_order_release);
  }
  /* no program thread is left (see _obm_purger_threads_gone): let the process end; purgeable
   * memory made later starts a new thread */
  exit_requested = 0;
  started = 0;
  atomic_store_explicit(&_obm_purger_pending, 0, memory_order_release);
  pthread_mutex_unlock(&wait_lock);
  return NULL;
}

void _obm_purger_threads_gone(void) {
  pthread_mutex_lock(&wait_lock);
  if (started) {
    exit_requested = 1;
    pthread_cond_signal(&wait_cond);
  }
  pthread_mutex_unlock(&wait_lock);
}

/* Under wait_lock.  0 or an error number. */
static int start_thread(void) {
  pthread_condattr_t cattr;
  pthread_condattr_init(&cattr);
  pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
  pthread_cond_init(&wait_cond, &cattr);
  pthread_condattr_destroy(&cattr);
  pthread_t tid;
  return _obm_own_thread_start(&tid, "obmem-purge", 128 * 1024, 0, purger_main);
}

void _obm_purger_poke_slow(void) {
  if (atomic_exchange_explicit(&_obm_purger_pending, 1, memory_order_acq_rel)) return;
  pthread_mutex_lock(&wait_lock);
  if (started) {
    pthread_cond_signal(&wait_cond);
  } else if (!disabled) {
    if (!_obm_option(OBM_OPTION_PURGE_THREAD) || !_obm_option(OBM_OPTION_PURGE_DELAY_MS)) {
      disabled = 1; /* _obm_purger_pending stays set: later pokes cost one load */
    } else {
      int err = start_thread();
      if (err == 0) {
        started = 1;
      } else {
        disabled = 1;
        if (_obm_option(OBM_OPTION_VERBOSE))
          _obm_warning("cannot start the purge thread (%s); free memory is purged only when "
                       "the program allocates",
                       strerror(err));
      }
    }
  }
  pthread_mutex_unlock(&wait_lock);
}

int _obm_purger_pass_trylock(void) {
  return pthread_mutex_trylock(&pass_lock) == 0;
}

void _obm_purger_pass_unlock(void) {
  pthread_mutex_unlock(&pass_lock);
}

void _obm_purger_fork_prepare(void) {
  pthread_mutex_lock(&pass_lock);
  pthread_mutex_lock(&wait_lock);
}

void _obm_purger_fork_parent(void) {
  pthread_mutex_unlock(&wait_lock);
  pthread_mutex_unlock(&pass_lock);
}

void _obm_purger_fork_child(void) {
  /* the thread did not come along: the next purgeable memory starts one (the condition
   * variable may hold the parent thread's wait, so it is made anew then) */
  if (started) {
    started = 0;
    exit_requested = 0;
    atomic_store_explicit(&_obm_purger_pending, 0, memory_order_relaxed);
  }
  pthread_mutex_unlock(&wait_lock);
  pthread_mutex_unlock(&pass_lock);
}
