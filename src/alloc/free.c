/* free.c — free, usable size and ownership.
 *
 * free(p): the thread's own arena by p's 1 MiB frame (heap->owned, a direct-mapped table of
 * 64), or its traced heap's (a block the tracer recorded: the free is reported first), else
 * page map -> segment (NULL: not ours, reported) -> owner test; then the pool
 * descriptor by slot.  Same thread: push on pool->free, no atomic; the slow path runs only
 * when the pool was full (relink it at its list's tail) or becomes empty (keep it in the
 * class list, or cache it: pool_became_empty).  A single "last arena freed into" hint,
 * before the table, mispredicted whenever blocks came from several arenas.
 * Other thread: one CAS onto pool->remote_free (see heap.c).
 */
#include "alloc/alloc_internal.h"

#include <errno.h>

void _obm_report_foreign(const char *op, const void *p) {
  _obm_error(OBM_ERR_FOREIGN_POINTER, (void *)p,
             "%s(%p): this address is not in memory obmem handed out (a pointer from another "
             "allocator, a stack or static address, or a corrupted pointer)",
             op, p);
}

/* CPython returns an empty pool to its arena at once.  We keep the class's current pool listed
 * (marked OBM_LISTED_KEEP, so that free's fast path may empty it again: a malloc/free pair on
 * an otherwise empty class never takes and returns a pool), and put any other in the heap's
 * pool cache (arena.c), from which the class's next malloc that finds no listed pool with a
 * free block takes it back warm, formatted and with its free list; what stays cached for
 * two purge passes goes back to its arena.  Unlike pools kept listed (a ring of 64 before),
 * the cache is purged while the thread sleeps; against that ring the peak RSS of the LIFO,
 * FIFO, threads and producer/consumer benchmarks fell 22-47 %, their times the same or
 * better (docs/cpython.md, section 3). */
static void pool_became_empty(obm_heap_t *heap, obm_pool_t *pool) {
  obm_pool_t *head = heap->cls[pool->size_class].pool;
  if (head != &_obm_pool_empty && head != pool && head->nused == 0) {
    /* The current pool is empty too: the one emptied last is the warmer (a stack emptied in
     * reverse hands it out first again), so it becomes current and the other waits. */
    _obm_pool_unlink(heap, head);
    _obm_arena_pool_cache(heap, head);
    head = heap->cls[pool->size_class].pool;
    if (pool->in_list) _obm_pool_unlink(heap, pool);
    _obm_pool_link(heap, pool);
    head = pool;
  }
  if (head == &_obm_pool_empty || head == pool) {
    if (!pool->in_list) _obm_pool_link(heap, pool);
    pool->in_list = OBM_LISTED_KEEP;
    return;
  }
  if (pool->in_list) _obm_pool_unlink(heap, pool);
  _obm_arena_pool_cache(heap, pool);
}

void _obm_free_local_slow(obm_heap_t *heap, obm_pool_t *pool, obm_block_t *b) {
  b->next = pool->free;
  pool->free = b;
  if (--pool->nused == 0) {
    pool_became_empty(heap, pool);
  } else if (!pool->in_list) {
    _obm_pool_link_tail(heap, pool); /* was full (CPython relinks at the front) */
  }
}

void _obm_pool_after_collect(obm_heap_t *heap, obm_pool_t *pool, uint32_t n) {
  obm_assert(pool->nused >= n);
  pool->nused = (uint16_t)(pool->nused - n);
  if (pool->nused == 0)
    pool_became_empty(heap, pool);
  else if (!pool->in_list)
    _obm_pool_link_tail(heap, pool);
}

void _obm_free_remote(obm_pool_t *pool, obm_block_t *b) {
  /* acquire on the old value: when it is NULL, the owner's collecting exchange happened
   * before, and with it the previous pusher's write of remote_next that we overwrite next */
  obm_block_t *old = atomic_load_explicit(&pool->remote_free, memory_order_acquire);
  do {
    b->next = old;
  } while (!atomic_compare_exchange_weak_explicit(&pool->remote_free, &old, b, memory_order_acq_rel,
                                                  memory_order_acquire));
  if (old == NULL) {
    /* First pending free: queue the pool for its owner.  The pool cannot be released before
     * the owner collects b, so pool and arena stay valid here. */
    obm_heap_t *owner = _obm_pool_arena(pool)->heap;
    obm_pool_t *top = atomic_load_explicit(&owner->remote_pools, memory_order_relaxed);
    do {
      pool->remote_next = top;
    } while (!atomic_compare_exchange_weak_explicit(&owner->remote_pools, &top, pool,
                                                    memory_order_release, memory_order_relaxed));
  }
}

static OBM_COLD void report_not_block(const char *op, const void *p) {
  _obm_error(OBM_ERR_NOT_BLOCK_START, (void *)p,
             "%s(%p): the address is inside obmem's memory but not the start of a live block "
             "(an interior pointer, a freed pool, or allocator metadata)",
             op, p);
}

/* Frees a large block, or reports why p is not one. */
static OBM_NOINLINE void free_large(void *p, obm_large_t *large) {
  if (obm_unlikely(!_obm_large_contains(large, p))) {
    _obm_report_foreign("free", p);
    return;
  }
  if (obm_unlikely(large->cached || (uint8_t *)p != large->block)) {
    if (large->cached && (uint8_t *)p == large->block)
      _obm_error(OBM_ERR_DOUBLE_FREE, p, "free(%p): this large block was already freed", p);
    else
      report_not_block("free", p);
    return;
  }
  _obm_large_free(large);
}

/* Everything but the common case: the pool was full or becomes empty, another thread owns
 * it, or p is not a live block (checked here so that the fast path need not).  For another
 * thread's pool only fields fixed while any of its blocks is live are read, and ncarved with
 * a relaxed atomic load (the owner may be carving). */
static OBM_NOINLINE void free_arena_slow(void *p, obm_arena_t *arena, obm_pool_t *pool,
                                         obm_heap_t *heap) {
  size_t offset = (size_t)((uint8_t *)p - pool->start);
  size_t ncarved = __atomic_load_n(&pool->ncarved, __ATOMIC_RELAXED);
  if (obm_unlikely(pool->kind != OBM_SLOT_HEAD || (uint8_t *)p < pool->start ||
                   offset >= ncarved * (size_t)_obm_pool_block_size(pool) ||
                   offset % _obm_pool_block_size(pool) != 0)) {
    report_not_block("free", p);
    return;
  }
  if (arena->heap != heap) {
    _obm_free_remote(pool, p);
  } else if (obm_unlikely(pool->nused == 0)) { /* an empty (perhaps cached) pool */
    _obm_error(OBM_ERR_DOUBLE_FREE, p,
               "free(%p): the block's pool has no live block (a double free, or a pointer "
               "that was never handed out)",
               p);
  } else {
    _obm_free_local_slow(heap, pool, p);
  }
}

/* The free that emptied a listed pool (the block is pushed already): nothing to do for the
 * class's kept current pool. */
static OBM_NOINLINE void free_local_emptied(obm_heap_t *heap, obm_pool_t *pool) {
  if (pool->in_list != OBM_LISTED_KEEP) pool_became_empty(heap, pool);
}

/* arena is owned by heap, the calling thread's: only the owner reads the pool's mutable
 * fields. */
OBM_INLINE void free_local(void *p, obm_arena_t *arena, obm_heap_t *heap) {
  obm_pool_t *pool = _obm_pool_of(arena, p);
  uint32_t index = _obm_pool_block_test(pool, p); /* >= 2^16 unless a block start */
  /* A pool that is not in its class list was full (the slow path links it back) or cached; a
   * free or metadata slot is never in a list, and an interior pointer fails the index check:
   * all take the slow path, which reports the bad ones, as it does a free into an empty pool
   * (before the push: a block pushed twice could not be taken out again).  A listed pool that
   * becomes empty here leaves through free_local_emptied (the class's kept pool stays as it
   * is, so that a malloc/free pair on an otherwise empty class stays on the fast paths). */
  unsigned n = pool->nused;
  if (obm_likely(pool->in_list && index < pool->ncarved && n != 0)) {
    obm_block_t *b = p;
    b->next = pool->free;
    pool->free = b;
    pool->nused = (uint16_t)(n - 1);
    if (obm_unlikely(n == 1)) free_local_emptied(heap, pool);
    return;
  }
  free_arena_slow(p, arena, pool, heap);
}

OBM_INLINE void free_in_arena(void *p, obm_arena_t *arena) {
  obm_heap_t *heap = _obm_heap_get();
  if (obm_likely(arena->heap == heap)) {
    free_local(p, arena, heap);
    return;
  }
  free_arena_slow(p, arena, _obm_pool_of(arena, p), heap);
}

/* A block of a traced arena: the thread's traced heap is the owner to compare with. */
static void free_traced(void *p, obm_arena_t *arena) {
  obm_heap_t *heap = _obm_tls_traced_heap;
  if (arena->heap == heap)
    free_local(p, arena, heap);
  else
    free_arena_slow(p, arena, _obm_pool_of(arena, p), heap);
}

void _obm_raw_free(void *p, obm_segment_t *seg) {
  if (obm_unlikely(seg->kind == OBM_SEG_LARGE))
    free_large(p, (obm_large_t *)seg);
  else if (obm_unlikely(seg->kind == OBM_SEG_ARENA_TRACED))
    free_traced(p, (obm_arena_t *)seg);
  else
    free_in_arena(p, (obm_arena_t *)seg);
}

/* Debug blocks, large blocks and recorded blocks (whose frees go to the tracer's hook). */
static OBM_NOINLINE void free_other(void *p, obm_segment_t *seg) {
  if (_obm_debug_on) {
    _obm_debug_free(p, seg);
    return;
  }
  if (seg->kind == OBM_SEG_LARGE) {
    obm_large_t *large = (obm_large_t *)seg;
    if (large->traced && _obm_large_contains(large, p)) _obm_alloc_report_free(p);
    free_large(p, large);
  } else if (seg->kind == OBM_SEG_ARENA_TRACED) {
    _obm_alloc_report_free(p);
    free_traced(p, (obm_arena_t *)seg);
  } else {
    _obm_error(OBM_ERR_CORRUPTION, p,
               "free(%p): the page map points at %p, which is not an "
               "obmem segment",
               p, (void *)seg);
  }
}

/* obm_free, and obm_free_if_owned when report_foreign is 0: 0 for a pointer not in obmem's
 * memory (NULL included), left untouched and not reported. */
OBM_INLINE int free_impl(void *p, int report_foreign) {
  obm_heap_t *heap = _obm_heap_get();
  /* This thread's arena by its frame: no page map, no owner test (NULL and foreign frames
   * never match; an entry is OBM_NO_ARENA or an arena of this heap). */
  obm_arena_t *frame = (obm_arena_t *)((uintptr_t)p & ~(uintptr_t)(OBM_ARENA_SIZE - 1));
  if (obm_likely(atomic_load_explicit(_obm_owned_entry(heap, p), memory_order_relaxed) == frame)) {
    free_local(p, frame, heap);
    return 1;
  }
  /* A block the tracer recorded, from this thread's traced heap (owned entries of its own):
   * its free is reported, then the same local free, without the page map. */
  obm_heap_t *traced = _obm_tls_traced_heap;
  if (atomic_load_explicit(_obm_owned_entry(traced, p), memory_order_relaxed) == frame) {
    _obm_alloc_report_free(p);
    free_local(p, frame, traced);
    return 1;
  }
  /* NULL (chunk 0 is never ours) and addresses above 2^48 (aliases, refused by the range
   * checks that follow) need no test of their own here. */
  obm_segment_t *seg = _obm_pagemap_lookup_masked(p);
  if (obm_unlikely(seg == NULL)) {
    if (report_foreign && p != NULL) _obm_report_foreign("free", p);
    return 0;
  }
  if (obm_likely(seg->kind == OBM_SEG_ARENA)) {
    obm_arena_t *arena = (obm_arena_t *)seg;
    if (obm_likely(arena->heap == heap)) {
      free_local(p, arena, heap);
    } else {
      free_arena_slow(p, arena, _obm_pool_of(arena, p), heap);
    }
    return 1;
  }
  /* A large segment need not cover its page-map chunks whole: the rest may be anyone's. */
  if (obm_unlikely(!report_foreign && seg->kind == OBM_SEG_LARGE &&
                   !_obm_large_contains((obm_large_t *)seg, p)))
    return 0;
  free_other(p, seg);
  return 1;
}

void obm_free(void *p) {
  free_impl(p, 1);
}

int obm_free_if_owned(void *p) {
  return free_impl(p, 0);
}

void obm_free_or(void *p, void (*other)(void *ctx, void *p), void *ctx) {
  if (!free_impl(p, 0)) other(ctx, p);
}

uint8_t *_obm_raw_block_start(const void *p, obm_segment_t *seg, size_t *block_size) {
  if (seg->kind != OBM_SEG_LARGE) {
    obm_pool_t *pool = _obm_pool_of((obm_arena_t *)seg, p);
    if (pool->kind != OBM_SLOT_HEAD || (const uint8_t *)p < pool->start) return NULL;
    size_t i = _obm_pool_block_index(pool, p);
    if (i >= __atomic_load_n(&pool->ncarved, __ATOMIC_RELAXED)) return NULL; /* owner carves */
    *block_size = _obm_pool_block_size(pool);
    return pool->start + i * *block_size;
  }
  obm_large_t *large = (obm_large_t *)seg;
  if (!_obm_large_contains(large, p) || (const uint8_t *)p < large->block) return NULL;
  *block_size = large->usable_size;
  return large->block;
}

size_t _obm_raw_usable(const void *p, obm_segment_t *seg) {
  if (seg->kind != OBM_SEG_LARGE) {
    obm_pool_t *pool = _obm_pool_of((obm_arena_t *)seg, p);
    if (pool->kind != OBM_SLOT_HEAD || (const uint8_t *)p < pool->start) {
      report_not_block("usable_size", p);
      return 0;
    }
    uint32_t size = _obm_pool_block_size(pool);
    return size - (size_t)((const uint8_t *)p - pool->start) % size;
  }
  obm_large_t *large = (obm_large_t *)seg;
  if (!_obm_large_contains(large, p) || large->cached || (const uint8_t *)p < large->block) {
    report_not_block("usable_size", p);
    return 0;
  }
  return large->usable_size - (size_t)((const uint8_t *)p - large->block);
}

size_t obm_usable_size(const void *p) {
  if (p == NULL) return 0;
  obm_segment_t *seg = _obm_pagemap_lookup(p);
  if (seg == NULL) {
    _obm_report_foreign("usable_size", p);
    return 0;
  }
  if (_obm_debug_on) return _obm_debug_usable(p, seg);
  return _obm_raw_usable(p, seg);
}

int obm_owns(const void *p) {
  obm_segment_t *seg = _obm_pagemap_lookup(p);
  if (seg == NULL) return 0;
  if (seg->kind != OBM_SEG_LARGE) {
    obm_pool_t *pool = _obm_pool_of((obm_arena_t *)seg, p);
    return pool->kind == OBM_SLOT_HEAD && (const uint8_t *)p >= pool->start &&
           (const uint8_t *)p <
               pool->start + (size_t)__atomic_load_n(&pool->ncarved, __ATOMIC_RELAXED) *
                                 _obm_pool_block_size(pool);
  }
  obm_large_t *large = (obm_large_t *)seg;
  return _obm_large_contains(large, p) && !large->cached && (const uint8_t *)p >= large->block;
}
