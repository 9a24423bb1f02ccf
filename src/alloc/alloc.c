/* alloc.c — malloc, calloc, realloc and aligned allocation.
 *
 * Fast path (small): class = (size - 1) >> 4 after one range compare; pool = heap->cls[class].pool
 * (CPython's usedpools[class]); pop pool->free.  No lock, no atomic.  When the pool's free list is
 * empty the inline path hands out the pool's next never-used block (CPython's nextoffset bump, no
 * write to the block); when the pool is full the generic path collects cross-thread frees,
 * moves on to the next pool of the class, or takes a new pool from the fullest arena.
 * Medium sizes take the same path, their class read from a 512-entry table by (size - 1) >> 7.
 */
#include "alloc/alloc_internal.h"

#include <errno.h>
#include <string.h>

/* Hands out the next never-used block (CPython's nextoffset bump): nothing is written to the
 * block, so fresh memory is touched only by the program.  ncarved is stored with a relaxed
 * atomic: other threads' frees read it to validate their pointer. */
OBM_INLINE obm_block_t *pool_bump(obm_pool_t *pool, size_t cls) {
  unsigned n = pool->ncarved;
  __atomic_store_n(&pool->ncarved, (uint16_t)(n + 1), __ATOMIC_RELAXED);
  return (obm_block_t *)(pool->start + (size_t)n * _obm_class_size[cls]);
}

static void pool_init(obm_pool_t *pool, unsigned cls) {
  pool->size_class = (uint8_t)cls;
  pool->div_inverse = _obm_class_div[cls].inverse;
  pool->div_shift = (uint8_t)_obm_class_div[cls].shift;
  pool->ncarved = 0;
  pool->nused = 0;
  pool->free = NULL;
  pool->in_list = OBM_UNLISTED;
  pool->cached = OBM_UNCACHED;
  pool->next = pool->prev = NULL;
  pool->remote_next = NULL;
  atomic_store_explicit(&pool->remote_free, NULL, memory_order_relaxed);
}

void *_obm_malloc_generic(obm_heap_t *heap, size_t size, unsigned cls) {
  if (obm_unlikely(heap->is_empty_heap)) {
    heap = _obm_heap_init_thread();
    if (!heap) return NULL;
  }
  if (atomic_load_explicit(&heap->remote_pools, memory_order_relaxed))
    _obm_heap_collect_remote(heap);
  obm_pool_t *pool = heap->cls[cls].pool;
  obm_block_t *b;
  while (pool != &_obm_pool_empty) {
    if (pool->free) goto pop;
    if (pool->ncarved < _obm_class_capacity[cls]) {
      b = pool_bump(pool, cls);
      goto done;
    }
    _obm_pool_unlink(heap, pool); /* full: leaves the list until a block comes back */
    pool = heap->cls[cls].pool;
  }
  /* an emptied pool of the class, kept warm (the peek needs no lock: only this thread adds) */
  if (atomic_load_explicit(&heap->cached[cls], memory_order_relaxed)) {
    pool = _obm_arena_pool_uncache(heap, cls);
    if (pool) {
      _obm_pool_link(heap, pool);
      if (pool->free) goto pop;
      b = pool_bump(pool, cls); /* never NULL: an empty pool has a free block or an uncarved one */
      goto done;
    }
  }
  pool = _obm_arena_pool_take(heap, _obm_class_slots[cls]);
  if (!pool) {
    /* Memory pressure: reclaim what exited threads left and retry once. */
    _obm_heap_collect_abandoned();
    _obm_arena_trim_spares();
    _obm_large_trim();
    pool = _obm_arena_pool_take(heap, _obm_class_slots[cls]);
    if (!pool) {
      errno = ENOMEM;
      return NULL;
    }
  }
  pool_init(pool, cls);
  /* Debug mode: headers left by the slots' previous pools must not be taken for freed
   * blocks of this one. */
  if (_obm_debug_on) memset(pool->start, 0, (size_t)pool->nslots * OBM_POOL_SIZE);
  _obm_pool_link(heap, pool);
  b = pool_bump(pool, cls);
  goto done;
pop:
  b = pool->free;
  pool->free = b->next;
done:
  pool->nused++;
  heap->cls[cls].nmalloc++;
  heap->cls[cls].requested += size;
  return b;
}

/* A block handed out from pool, of class hc. */
OBM_INLINE void *class_took(obm_heap_class_t *hc, obm_pool_t *pool, obm_block_t *b, size_t size) {
  pool->nused++;
  hc->nmalloc++;
  hc->requested += size;
  return b;
}

/* Pops the class's first pool's free list, or bumps into its never-used blocks (the
 * empty-pool placeholder's ncarved is the largest); NULL sends the caller to the generic
 * path. */
OBM_INLINE void *heap_class_alloc(obm_heap_t *heap, size_t size, size_t cls) {
  obm_heap_class_t *hc = &heap->cls[cls];
  obm_pool_t *pool = hc->pool;
  obm_block_t *b = pool->free;
  if (obm_likely(b != NULL)) {
    pool->free = b->next;
  } else if (pool->ncarved < _obm_class_capacity[cls]) {
    b = pool_bump(pool, cls);
  } else {
    return NULL;
  }
  return class_took(hc, pool, b, size);
}

OBM_INLINE void *class_malloc(obm_heap_t *heap, size_t size, unsigned cls) {
  void *b = heap_class_alloc(heap, size, cls);
  if (obm_likely(b != NULL)) return b;
  return _obm_malloc_generic(heap, size, cls);
}

void *_obm_raw_malloc(size_t size) {
  if (obm_likely(size <= OBM_MEDIUM_MAX))
    return class_malloc(_obm_heap_get(), size, _obm_size_to_class(size));
  return _obm_large_alloc(size, OBM_ALIGNMENT, 0);
}

/* An aligned block from heap's pools, or a large block. */
static void *aligned_in(obm_heap_t *heap, size_t alignment, size_t size) {
  if (size <= OBM_MEDIUM_MAX && alignment <= OBM_POOL_SIZE) {
    /* Pools start on 16 KiB boundaries: a class whose size is a multiple of the alignment
     * has every block aligned (alignment is a power of two, 32 .. 16 KiB here). */
    obm_assert(alignment >= 32);
    unsigned shift = (unsigned)__builtin_ctzll(alignment) - 5;
    unsigned cls = _obm_aligned_class[shift][_obm_size_to_class(size)];
    if (cls < OBM_NCLASSES) return class_malloc(heap, size, cls);
  }
  return _obm_large_alloc(size, alignment, 0);
}

void *_obm_raw_aligned(size_t alignment, size_t size) {
  if (alignment <= OBM_ALIGNMENT) return _obm_raw_malloc(size);
  return aligned_in(_obm_heap_get(), alignment, size);
}

/* ---- tracing (traced.c calls the hooks) -------------------------------------------------- */

/* _obm_traced_raw past its pop: the traced heap made, a class's first pool refilled, aligned
 * and large blocks. */
static OBM_NOINLINE void *traced_raw_slow(size_t alignment, size_t size, int zero) {
  obm_heap_t *heap = _obm_tls_traced_heap;
  if (obm_unlikely(heap->is_empty_heap)) {
    heap = _obm_heap_init_traced();
    if (!heap) return NULL;
  }
  void *p;
  if (alignment <= OBM_ALIGNMENT && size <= OBM_MEDIUM_MAX) {
    p = class_malloc(heap, size, _obm_size_to_class(size));
    if (p && zero) memset(p, 0, size);
    return p;
  }
  if (alignment <= OBM_ALIGNMENT || size > OBM_MEDIUM_MAX)
    p = _obm_large_alloc(size, alignment < OBM_ALIGNMENT ? OBM_ALIGNMENT : alignment, zero);
  else
    p = aligned_in(heap, alignment, size);
  if (!p) return NULL;
  obm_segment_t *seg = _obm_pagemap_lookup(p);
  if (seg->kind == OBM_SEG_LARGE) ((obm_large_t *)seg)->traced = 1;
  if (zero && seg->kind != OBM_SEG_LARGE) memset(p, 0, size);
  return p;
}

/* A block of size bytes popped from the traced heap's class pool, or NULL: size 0 (size - 1
 * wraps around) or above the classes, a pool to refill, or the traced heap not made yet (the
 * empty heap, whose pools give NULL). */
OBM_INLINE void *traced_pop(size_t size) {
  if (obm_unlikely(size - 1 >= OBM_MEDIUM_MAX)) return NULL;
  return heap_class_alloc(_obm_tls_traced_heap, size, _obm_size_to_class(size));
}

void *_obm_traced_raw(size_t alignment, size_t size, int zero) {
  void *b = alignment <= OBM_ALIGNMENT ? traced_pop(size) : NULL;
  if (obm_unlikely(b == NULL)) return traced_raw_slow(alignment, size, zero);
  if (zero) memset(b, 0, size);
  return b;
}

void *_obm_traced_malloc(size_t size) {
  void *b = traced_pop(size);
  if (obm_likely(b != NULL)) return b;
  return traced_raw_slow(OBM_ALIGNMENT, size, 0);
}

/* Everything obm_malloc's inline path does not serve: size 0, large sizes, a class whose
 * first pool is full (or none), the first call of a thread, debug mode, and a thread whose
 * fast heap a tracer start redirected (_obm_heap_take_redirect).  While tracing, the calls
 * that are not for a class go to traced.c.  Frameless, with tail calls: the tracer's walk
 * finds the program's return address first (traced.c). */
static OBM_NOINLINE __attribute__((optimize("omit-frame-pointer"))) void *malloc_slow(size_t size) {
  /* The hooks first: they are installed only after the first init, never in debug mode.
   * Exact mode's call is the tracer's malloc whole, before the redirect is taken: a thread
   * whose fast heap a start redirected keeps the placeholder for the session (its every call
   * comes here from the placeholder pool, malloc_carve, and would reach the hook anyway), and
   * takes the redirect at its first call after the stop. */
  if (obm_unlikely(atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed) != NULL)) {
    const obm_alloc_hooks_t *h = _obm_alloc_hooks_for_call();
    if (h && h->malloc) return h->malloc(size);
    if (_obm_heap_take_redirect(_obm_tls_heap)) return obm_malloc(size);
    return _obm_malloc_traced(size);
  }
  _obm_ensure_init();
  if (_obm_debug_on) return _obm_debug_malloc(size, OBM_ALIGNMENT, 0);
  if (_obm_heap_take_redirect(_obm_tls_heap)) return obm_malloc(size);
  return _obm_raw_malloc(size);
}

/* obm_malloc's inline path when its class budget ran out (it subtracted size already): while
 * tracing, traced.c decides (record_size counts the call down again); else the budget is full
 * again.  Frameless, tail calls only, as malloc_slow. */
static OBM_NOINLINE __attribute__((optimize("omit-frame-pointer"))) void *
malloc_budget(obm_heap_class_t *hc, size_t size) {
  hc->budget += size; /* counted again where the call is served */
  if (atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed) != NULL)
    return _obm_malloc_traced(size);
  hc->budget = OBM_BUDGET_FULL;
  return obm_malloc(size);
}

/* obm_malloc's pop of b, the first block of pool (its class's current pool), after the class
 * budget's test: the inline path's and malloc_carve's. */
OBM_INLINE void *pop_budgeted(obm_heap_class_t *hc, obm_pool_t *pool, obm_block_t *b, size_t size) {
  if (obm_unlikely(_obm_budget_take(&hc->budget, size))) return malloc_budget(hc, size);
  pool->free = b->next;
  return class_took(hc, pool, b, size);
}

/* obm_malloc when the class's first pool has no free block: carve, or the slow path.  Where
 * CPython carves one block per malloc, this carves up to a page of blocks at once into the
 * free list and pops the first, so that the next mallocs pop too (a carved block costs a
 * store here instead of a trip through this function); the page is the program's next to
 * touch anyway. */
static OBM_NOINLINE void *malloc_carve(obm_heap_class_t *hc, obm_pool_t *pool, size_t size,
                                       size_t cls) {
  /* the placeholder first: before the first init the class tables are being written */
  if (obm_unlikely(pool == &_obm_pool_empty)) return malloc_slow(size);
  unsigned n = pool->ncarved, capacity = _obm_class_capacity[cls];
  if (obm_unlikely(n >= capacity)) return malloc_slow(size);
  size_t block_size = _obm_class_size[cls];
  unsigned k = block_size >= OBM_CARVE_BATCH ? 1 : (unsigned)(OBM_CARVE_BATCH / block_size);
  if (k > capacity - n) k = capacity - n;
  uint8_t *first = pool->start + (size_t)n * block_size;
  obm_block_t *list = NULL;
  for (uint8_t *q = first + (size_t)(k - 1) * block_size; q >= first; q -= block_size) {
    ((obm_block_t *)q)->next = list;
    list = (obm_block_t *)q;
  }
  pool->free = list;
  __atomic_store_n(&pool->ncarved, (uint16_t)(n + k), __ATOMIC_RELAXED);
  return pop_budgeted(hc, pool, list, size);
}

OBM_INLINE void *malloc_plain(size_t size) {
  /* size - 1 < 512: sizes 1..512, one compare (0 wraps around and goes the slow way) */
  size_t s1 = size - 1, cls;
  if (obm_likely(s1 < OBM_SMALL_MAX))
    cls = s1 >> 4;
  else if (s1 < OBM_MEDIUM_MAX)
    cls = _obm_medium_size_to_class(size); /* 0 before the first init: the empty heap */
  else
    return malloc_slow(size);
  /* The pop inline; the carving out of line, where its table lookups cost the pop nothing.
   * The class budget is full when not tracing, and while tracing the countdown to the class's
   * next sample (0 in exact mode: every call leaves), so the path tests nothing else. */
  obm_heap_class_t *hc = &__atomic_load_n(&_obm_tls_fast_heap, __ATOMIC_RELAXED)->cls[cls];
  __asm__("" : "+r"(hc)); /* one register for hc's fields (the budget's asm made GCC index) */
  obm_pool_t *pool = hc->pool;
  obm_block_t *b = pool->free;
  if (obm_unlikely(b == NULL)) return malloc_carve(hc, pool, size, cls);
  return pop_budgeted(hc, pool, b, size);
}

void *_obm_malloc_plain(size_t size) {
  return _obm_raw_malloc(size);
}

void *obm_malloc(size_t size) {
  return malloc_plain(size);
}

void *_obm_calloc_plain(size_t total) {
  if (total > OBM_MEDIUM_MAX) return _obm_large_alloc(total, OBM_ALIGNMENT, 1);
  void *p = class_malloc(_obm_heap_get(), total, _obm_size_to_class(total));
  if (p) memset(p, 0, total);
  return p;
}

void *obm_calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  _obm_ensure_init();
  if (_obm_debug_on) return _obm_debug_malloc(total, OBM_ALIGNMENT, 1);
  if (obm_unlikely(atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed) != NULL))
    return _obm_alloc_traced(OBM_ALIGNMENT, total, 1);
  return _obm_calloc_plain(total);
}

void *obm_aligned_alloc(size_t alignment, size_t size) {
  if (alignment == 0 || (alignment & (alignment - 1)) || alignment > OBM_MAX_ALIGNMENT) {
    errno = EINVAL;
    return NULL;
  }
  _obm_ensure_init();
  if (_obm_debug_on) return _obm_debug_malloc(size, alignment, 0);
  if (obm_unlikely(atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed) != NULL))
    return _obm_alloc_traced(alignment, size, 0);
  return _obm_raw_aligned(alignment, size);
}

int obm_posix_memalign(void **out, size_t alignment, size_t size) {
  if (alignment < sizeof(void *) || (alignment & (alignment - 1)) || alignment > OBM_MAX_ALIGNMENT)
    return EINVAL;
  int saved = errno;
  void *p = obm_aligned_alloc(alignment, size);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

void *obm_realloc(void *ptr, size_t size) {
  if (ptr == NULL) return obm_malloc(size);
  if (obm_unlikely(atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed) != NULL))
    return _obm_realloc_traced(ptr, size);
  return _obm_realloc_block(ptr, size, 0);
}

/* _obm_realloc_block's body, once its segment is known (inline in both entries: realloc's
 * own path keeps one call). */
OBM_INLINE void *realloc_seg(void *ptr, obm_segment_t *seg, size_t size, int traced, int sampled) {
  size_t old_size;
  if (obm_likely(seg->kind != OBM_SEG_LARGE)) {
    obm_pool_t *pool = _obm_pool_of((obm_arena_t *)seg, ptr);
    /* a block start of a carved block (the owner may be carving: a relaxed load) */
    if (obm_unlikely(pool->kind != OBM_SLOT_HEAD ||
                     _obm_pool_block_test(pool, ptr) >=
                         __atomic_load_n(&pool->ncarved, __ATOMIC_RELAXED))) {
      _obm_error(OBM_ERR_NOT_BLOCK_START, ptr,
                 "realloc of an address inside obmem's memory that is not a live block");
      errno = EINVAL;
      return NULL;
    }
    old_size = _obm_pool_block_size(pool);
    /* CPython's policy: keep the block if the request fits and the shrink would save less
     * than 25 %, or the smaller class is the same one. */
    if ((!traced || seg->kind == OBM_SEG_ARENA_TRACED) && size <= old_size &&
        (size * 4 > old_size * 3 ||
         (size <= OBM_MEDIUM_MAX && _obm_size_to_class(size) == pool->size_class)))
      return ptr;
    /* sampled: a growth counts the bytes it adds (its class's size beyond the old one) */
    if (sampled && size > old_size &&
        !_obm_countdown(_obm_tls_heap, _obm_class_size[_obm_size_to_class(size)] - old_size))
      return _obm_realloc_traced_slow(ptr, seg, size);
  } else {
    obm_large_t *large = (obm_large_t *)seg;
    if (obm_unlikely(!_obm_large_contains(large, ptr) || large->cached ||
                     (uint8_t *)ptr != large->block)) {
      _obm_error(OBM_ERR_NOT_BLOCK_START, ptr,
                 "realloc of an address that is not a live large block");
      errno = EINVAL;
      return NULL;
    }
    old_size = large->usable_size;
    if (size <= old_size && size * 4 > old_size * 3) { /* saves < 25 %: keep */
      if (traced) large->traced = 1;
      return ptr;
    }
    if (size > OBM_MEDIUM_MAX) {
      void *p = _obm_large_realloc(large, size);
      if (p && traced) ((obm_large_t *)_obm_pagemap_lookup(p))->traced = 1;
      if (p) return p;
    }
  }
  /* raw calls: the segment is known (no second page-map lookup), and while tracing this is
   * one realloc event, not a malloc and a free */
  void *fresh = traced ? _obm_traced_raw(OBM_ALIGNMENT, size, 0) : _obm_raw_malloc(size);
  if (!fresh) return NULL;
  memcpy(fresh, ptr, old_size < size ? old_size : size);
  _obm_raw_free(ptr, seg);
  return fresh;
}

/* realloc of a non-NULL ptr (obmem is initialized: ptr came from it).  traced: the result
 * must be a recorded block (an arena block not in a traced arena moves to the traced heap). */
void *_obm_realloc_block(void *ptr, size_t size, int traced) {
  obm_segment_t *seg = _obm_pagemap_lookup(ptr);
  if (obm_unlikely(seg == NULL)) {
    _obm_report_foreign("realloc", ptr);
    errno = EINVAL;
    return NULL;
  }
  if (_obm_debug_on) return _obm_debug_realloc(ptr, seg, size);
  return realloc_seg(ptr, seg, size, traced, 0);
}

void *_obm_realloc_seg(void *ptr, obm_segment_t *seg, size_t size, int traced) {
  return realloc_seg(ptr, seg, size, traced, 0);
}

void *_obm_realloc_sampled(void *ptr, obm_segment_t *seg, size_t size) {
  return realloc_seg(ptr, seg, size, 0, 1);
}
