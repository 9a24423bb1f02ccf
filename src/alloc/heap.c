/* heap.c — per-thread heaps: creation, adoption of heaps left by exited threads, and the
 * collection of frees that other threads pushed to this heap's pools.
 *
 * A thread allocates only from its own heap, without locks or atomics.  A free from another
 * thread pushes the block on the pool's remote_free list (one CAS); the first push onto an
 * empty remote list also pushes the pool on heap->remote_pools, so the owner finds it in
 * O(1) without scanning.  The owner takes the whole heap->remote_pools stack with one
 * exchange (no ABA: single consumer, take-all).  When a thread exits its heap is abandoned,
 * not freed: the next new thread adopts it, and obm_trim()/memory pressure collect its
 * remote frees meanwhile, so nothing is leaked.
 */
#include "alloc/alloc_internal.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

/* ncarved at its largest: never below a class's capacity, so nothing is carved from it */
obm_pool_t _obm_pool_empty = {.ncarved = UINT16_MAX};
obm_heap_t _obm_heap_empty = {
    .cls = {[0 ... OBM_NCLASSES - 1] = {.pool = &_obm_pool_empty}},
    .owned = {[0 ... OBM_OWNED - 1] = OBM_NO_ARENA},
    .is_empty_heap = 1,
};
__thread obm_heap_t *_obm_tls_heap __attribute__((tls_model("initial-exec"))) = &_obm_heap_empty;
__thread obm_heap_t *_obm_tls_fast_heap __attribute__((tls_model("initial-exec"))) =
    &_obm_heap_empty;
__thread obm_heap_t *_obm_tls_traced_heap __attribute__((tls_model("initial-exec"))) =
    &_obm_heap_empty;
/* Set by the heap's key destructor: the thread is exiting (_obm_heap_init_thread). */
static __thread int tls_exiting __attribute__((tls_model("initial-exec")));

/* The class budgets for the hooks of the moment: OBM_BUDGET_ARMED while tracing, else
 * OBM_BUDGET_FULL (alloc_internal.h).  The owner's. */
static void budgets_reset(obm_heap_t *h) {
  uint64_t value = atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed) != NULL
                       ? OBM_BUDGET_ARMED
                       : OBM_BUDGET_FULL;
  for (unsigned c = 0; c < OBM_NCLASSES; c++)
    h->cls[c].budget = value;
}

/* The owner's, under _obm_global_lock, the lock of _obm_heaps_redirect (a start either
 * redirects the thread after this or installed its hooks before): its budgets set and its
 * fast heap pointed at h (the placeholder in debug mode). */
static void fast_heap_set_locked(obm_heap_t *h) {
  budgets_reset(h);
  __atomic_store_n(&_obm_tls_fast_heap, _obm_debug_on ? &_obm_heap_empty : h, __ATOMIC_RELAXED);
}

obm_heap_t *_obm_heaps_all;
uint64_t _obm_heaps_count, _obm_heaps_abandoned;
static obm_heap_t *abandoned_heaps; /* under _obm_abandoned_lock */
pthread_mutex_t _obm_abandoned_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_key_t _obm_heap_key;
/* Threads that have a heap now.  When none is left the program may be over (main can end
 * with pthread_exit) and obmem's own threads (purge, statistics) must return, or the process
 * would never end; a thread that makes a heap again brings them back. */
static _Atomic(uint64_t) heaps_live;

/* Heap structs come from 64 KiB metadata chunks and are recycled, never freed. */
static uint8_t *meta_chunk, *meta_end;

static obm_heap_t *heap_new(void) {
  size_t size = (sizeof(obm_heap_t) + OBM_CACHE_LINE - 1) & ~(size_t)(OBM_CACHE_LINE - 1);
  pthread_mutex_lock(&_obm_global_lock);
  if (!meta_chunk || meta_chunk + size > meta_end) {
    size_t chunk = 64 * 1024;
    uint8_t *m = _obm_os_map(chunk, 0);
    if (!m) {
      pthread_mutex_unlock(&_obm_global_lock);
      return NULL;
    }
    _obm_mapped_add(chunk);
    meta_chunk = m;
    meta_end = m + chunk;
  }
  obm_heap_t *h = (obm_heap_t *)meta_chunk;
  meta_chunk += size;
  memset(h, 0, sizeof *h);
  for (int c = 0; c < OBM_NCLASSES; c++)
    h->cls[c].pool = &_obm_pool_empty;
  for (int i = 0; i < OBM_OWNED; i++)
    atomic_store_explicit(&h->owned[i], OBM_NO_ARENA, memory_order_relaxed);
  h->all_next = _obm_heaps_all;
  _obm_heaps_all = h;
  _obm_heaps_count++;
  pthread_mutex_unlock(&_obm_global_lock);
  return h;
}

/* An abandoned heap of the kind asked for (traced or not), taken off the list, or NULL. */
static obm_heap_t *adopt(int traced) {
  pthread_mutex_lock(&_obm_abandoned_lock);
  obm_heap_t **link = &abandoned_heaps, *h;
  while ((h = *link) != NULL && h->traced != traced)
    link = &h->abandoned_next;
  if (h) {
    *link = h->abandoned_next;
    h->abandoned_next = NULL;
    h->abandoned = 0;
    _obm_heaps_abandoned--;
  }
  pthread_mutex_unlock(&_obm_abandoned_lock);
  return h;
}

obm_heap_t *_obm_heap_init_thread(void) {
  _obm_init();
  obm_heap_t *h = adopt(0);
  if (!h) h = heap_new();
  if (!h) {
    errno = ENOMEM;
    return NULL;
  }
  h->thread_id = _obm_os_thread_id();
  /* a new or adopted heap looks at the hooks at its first malloc (alloc_internal.h) */
  atomic_store_explicit(&h->sample_left, OBM_SAMPLE_ARMED, memory_order_relaxed);
  int first_live = atomic_fetch_add_explicit(&heaps_live, 1, memory_order_acq_rel) == 0;
  /* Set before pthread_setspecific: it may allocate, and must then find this heap.  The
   * budgets are set and the fast heap published under the lock of _obm_heaps_redirect: a
   * tracer start either finds the slot or installed its hooks before the budgets were set. */
  _obm_tls_heap = h;
  pthread_mutex_lock(&_obm_global_lock);
  if (tls_exiting) {  /* past its heap's key destructor (another key's destructor allocates): */
    budgets_reset(h); /* the slow path always; nothing would clear the slot before its TLS goes */
  } else {
    h->fast_slot = &_obm_tls_fast_heap;
    fast_heap_set_locked(h);
  }
  pthread_mutex_unlock(&_obm_global_lock);
  pthread_setspecific(_obm_heap_key, h);
  _obm_heap_collect_remote(h);
  if (first_live) _obm_stats_threads_back(); /* the purge thread comes back when needed */
  return h;
}

/* The traced heap lives and dies with the thread's heap: made after it (so that the heap's key
 * destructor, which abandons both, runs for the thread), never counted as a live thread. */
obm_heap_t *_obm_heap_init_traced(void) {
  if (_obm_tls_heap->is_empty_heap && !_obm_heap_init_thread()) return NULL;
  obm_heap_t *h = adopt(1);
  if (!h) h = heap_new();
  if (!h) {
    errno = ENOMEM;
    return NULL;
  }
  h->traced = 1;
  h->thread_id = _obm_os_thread_id();
  _obm_tls_traced_heap = h;
  _obm_heap_collect_remote(h);
  return h;
}

static void abandon(obm_heap_t *h) {
  /* its thread's rounds are over: what it freed goes back after the option's delay */
  _obm_heap_lock(h);
  __atomic_store_n(&h->purge_delay, 0, __ATOMIC_RELAXED);
  _obm_heap_unlock(h);
  pthread_mutex_lock(&_obm_abandoned_lock);
  h->abandoned = 1;
  h->thread_id = 0;
  h->abandoned_next = abandoned_heaps;
  abandoned_heaps = h;
  _obm_heaps_abandoned++;
  pthread_mutex_unlock(&_obm_abandoned_lock);
}

/* pthread key destructor: the thread is exiting. */
void _obm_heap_thread_done(void *arg) {
  obm_heap_t *h = arg, *traced = _obm_tls_traced_heap;
  if (!h || h->is_empty_heap) return;
  _obm_heap_collect_remote(h);
  _obm_heap_release_empty_pools(h);
  if (!traced->is_empty_heap) {
    _obm_heap_collect_remote(traced);
    _obm_heap_release_empty_pools(traced);
  }
  _obm_tls_heap = &_obm_heap_empty;
  tls_exiting = 1;
  pthread_mutex_lock(&_obm_global_lock);
  h->fast_slot = NULL; /* the thread's TLS goes away */
  __atomic_store_n(&_obm_tls_fast_heap, &_obm_heap_empty, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&_obm_global_lock);
  _obm_tls_traced_heap = &_obm_heap_empty;
  abandon(h);
  if (!traced->is_empty_heap) abandon(traced);
  if (atomic_fetch_sub_explicit(&heaps_live, 1, memory_order_acq_rel) == 1) {
    _obm_purger_threads_gone();
    _obm_stats_threads_gone();
  }
}

size_t _obm_heap_collect_remote(obm_heap_t *heap) {
  size_t total = 0;
  obm_pool_t *pool = atomic_exchange_explicit(&heap->remote_pools, NULL, memory_order_acquire);
  while (pool) {
    /* Read the link first: once remote_free is emptied a pusher may queue the pool again. */
    obm_pool_t *next = pool->remote_next;
    obm_block_t *list = atomic_exchange_explicit(&pool->remote_free, NULL, memory_order_acq_rel);
    uint32_t n = 0;
    obm_block_t *tail = NULL;
    for (obm_block_t *b = list; b; b = b->next) {
      tail = b;
      n++;
    }
    if (tail) {
      tail->next = pool->free;
      pool->free = list;
      _obm_pool_after_collect(heap, pool, n);
      total += n;
    }
    pool = next;
  }
  return total;
}

void _obm_heap_release_empty_pools(obm_heap_t *heap) {
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_pool_t *pool = heap->cls[c].pool;
    while (pool != &_obm_pool_empty && pool != NULL) {
      obm_pool_t *next = pool->next;
      if (pool->nused == 0) {
        _obm_pool_unlink(heap, pool);
        _obm_arena_pool_release(heap, pool);
      }
      pool = next;
    }
  }
  _obm_arena_release_cached(heap);
}

size_t _obm_heap_collect_abandoned(void) {
  size_t total = 0;
  if (pthread_mutex_trylock(&_obm_abandoned_lock) != 0) return 0;
  for (obm_heap_t *h = abandoned_heaps; h; h = h->abandoned_next) {
    /* Holding _obm_abandoned_lock makes us the owner: adoption needs the same lock. */
    total += _obm_heap_collect_remote(h);
    _obm_heap_release_empty_pools(h);
  }
  pthread_mutex_unlock(&_obm_abandoned_lock);
  return total;
}

/* Decommits free slots of the heaps of exited threads (obm_trim). */
void _obm_heap_decommit_abandoned(void) {
  pthread_mutex_lock(&_obm_abandoned_lock);
  for (obm_heap_t *h = abandoned_heaps; h; h = h->abandoned_next)
    _obm_arena_decommit_free(h);
  pthread_mutex_unlock(&_obm_abandoned_lock);
}

void _obm_heap_lock_wait(obm_heap_t *heap) {
  /* held by the purge thread for one pass over this heap's arenas: a few madvise calls */
  do {
    sched_yield();
  } while (atomic_exchange_explicit(&heap->arena_lock, 1, memory_order_acquire));
}

obm_heap_t *_obm_heaps_next(obm_heap_t *h) {
  pthread_mutex_lock(&_obm_global_lock);
  h = h ? h->all_next : _obm_heaps_all;
  while (h && (h->orphaned || h->is_empty_heap))
    h = h->all_next;
  pthread_mutex_unlock(&_obm_global_lock);
  return h;
}

void _obm_heaps_arm_sampling(void) {
  pthread_mutex_lock(&_obm_global_lock);
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next)
    atomic_store_explicit(&h->sample_left, OBM_SAMPLE_ARMED, memory_order_relaxed);
  pthread_mutex_unlock(&_obm_global_lock);
}

int _obm_heap_take_redirect_slow(obm_heap_t *heap) {
  if (heap->is_empty_heap || _obm_debug_on || tls_exiting) return 0;
  pthread_mutex_lock(&_obm_global_lock);
  fast_heap_set_locked(heap);
  pthread_mutex_unlock(&_obm_global_lock);
  return 1;
}

void _obm_heaps_redirect(void) {
  pthread_mutex_lock(&_obm_global_lock);
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next)
    if (h->fast_slot && !h->orphaned)
      __atomic_store_n(h->fast_slot, &_obm_heap_empty, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&_obm_global_lock);
}

void _obm_heap_after_fork_child(void) {
  obm_heap_t *self = _obm_tls_heap, *self_traced = _obm_tls_traced_heap;
  pthread_mutex_lock(&_obm_global_lock);
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next)
    if (h != self && h != self_traced && !h->abandoned) {
      h->orphaned = 1;
      h->fast_slot = NULL; /* its thread did not survive the fork */
    }
  pthread_mutex_unlock(&_obm_global_lock);
  if (!self->is_empty_heap) self->thread_id = _obm_os_thread_id();
  if (!self_traced->is_empty_heap) self_traced->thread_id = _obm_os_thread_id();
  atomic_store_explicit(&heaps_live, self->is_empty_heap ? 0 : 1, memory_order_relaxed);
}
