/* init.c — process-wide initialization, fork handlers, and obm_trim.  The statistics
 * reports (OBMEM_STATS at exit, OBMEM_STATS_SIGNAL) are set up here and live in stats.c. */
#include "alloc/alloc_internal.h"

#include <stdio.h>
#include <stdlib.h>

pthread_mutex_t _obm_global_lock = PTHREAD_MUTEX_INITIALIZER;
int _obm_debug_on;
int _obm_initialized;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

/* fork: take every lock so that the child does not inherit one held by a thread that no
 * longer exists there (a child forked while other threads allocate can allocate). */
static void fork_prepare(void) {
  _obm_stats_fork_prepare(); /* outermost: a report takes the allocator's locks */
  /* Before the purger's locks: collecting abandoned heaps (obm_stats_get, the tracer's
   * timeline samples) holds this lock while it pokes the purger, which takes wait_lock; no
   * holder of pass_lock or wait_lock waits for this one (the purge pass's collection tries
   * it).  Taken after them, a fork and a collection deadlocked (a reviewer's program forking
   * while threads exit, traced or with statistics: the first run hung). */
  pthread_mutex_lock(&_obm_abandoned_lock);
  _obm_purger_fork_prepare(); /* before the allocator locks: no purge pass holds a heap lock */
  pthread_mutex_lock(&init_lock);
  pthread_mutex_lock(&_obm_global_lock);
  pthread_mutex_lock(&_obm_pagemap_lock);
  pthread_mutex_lock(&_obm_large_lock);
}

static void unlock_all(void) {
  pthread_mutex_unlock(&_obm_large_lock);
  pthread_mutex_unlock(&_obm_pagemap_lock);
  pthread_mutex_unlock(&_obm_global_lock);
  pthread_mutex_unlock(&_obm_abandoned_lock);
  pthread_mutex_unlock(&init_lock);
}

static void fork_parent(void) {
  unlock_all();
  _obm_purger_fork_parent();
  _obm_stats_fork_parent();
}

static void fork_child(void) {
  unlock_all(); /* the forking thread owns them in the child too */
  _obm_purger_fork_child();
  _obm_heap_after_fork_child();
  _obm_stats_fork_child();
}

void _obm_init(void) {
  if (obm_likely(__atomic_load_n(&_obm_initialized, __ATOMIC_ACQUIRE))) return;
  pthread_mutex_lock(&init_lock);
  int first = 0;
  if (!_obm_initialized) {
    _obm_options_init();
    _obm_sizeclass_init();
    pthread_key_create(&_obm_heap_key, _obm_heap_thread_done);
    _obm_debug_on = _obm_option(OBM_OPTION_DEBUG) != 0;
    __atomic_store_n(&_obm_initialized, 1, __ATOMIC_RELEASE);
    first = 1;
  }
  pthread_mutex_unlock(&init_lock);
  /* pthread_atfork, and the stats thread of OBMEM_STATS_SIGNAL, may allocate: only after
   * initialization is complete. */
  if (first) {
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    _obm_stats_report_init();
  }
}

void obm_trim(void) {
  _obm_init();
  obm_heap_t *self = _obm_heap_get();
  if (!self->is_empty_heap) {
    _obm_heap_collect_remote(self);
    _obm_heap_release_empty_pools(self);
    _obm_arena_decommit_free(self);
  }
  _obm_heap_collect_abandoned();
  _obm_heap_decommit_abandoned();
  _obm_large_trim();
  _obm_arena_trim_spares();
}
