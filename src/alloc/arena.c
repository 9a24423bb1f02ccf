/* arena.c — 1 MiB arenas: carving pools out of slots, the fullest-first arena order, and
 * giving empty arenas back (one spare kept, OBMEM_ARENA_SPARE).
 *
 * As CPython's obmalloc: each heap keeps its arenas with free slots in a list ordered by the
 * number of free slots, ascending, so pools come from the fullest arena and the emptiest
 * ones get a chance to become entirely free and go back to the OS.  last_with[n] (CPython's
 * nfp2lasta) makes a reorder O(1) in the common case.  Unlike CPython a pool may span up to
 * 16 contiguous slots (medium classes); slots are tracked in a 64-bit bitmap per arena.
 */
#include "alloc/alloc_internal.h"

#include <errno.h>
#include <string.h>

obm_arena_t *_obm_arenas_all;
uint64_t _obm_arenas_allocated, _obm_arenas_reclaimed, _obm_arenas_current, _obm_arenas_highwater,
    _obm_arenas_nspare;
_Atomic(uint64_t) _obm_bytes_mapped, _obm_bytes_mapped_peak;
/* Empty arenas kept mapped, newest first (linked by next, under _obm_global_lock).  The first
 * OBMEM_ARENA_SPARE stay indefinitely (CPython keeps one); the others are unmapped once they
 * have been empty for OBMEM_PURGE_DELAY_MS, checked whenever an arena is taken or emptied, so
 * that a program which frees and refills memory in bursts does not map and fault it in again
 * each time (mimalloc and jemalloc delay purging for the same reason).  At most
 * SPARE_MAX recent spares are kept. */
#define SPARE_MAX 256
static obm_arena_t *spare_arenas;

/* The empty time of a spare lives in its (unused) pools[1].start field. */
static uint64_t heap_delay(const obm_heap_t *heap);
static void give_back_before_map(obm_heap_t *self);

static uint64_t spare_since(obm_arena_t *a) {
  return (uint64_t)(uintptr_t)a->pools[1].start;
}

/* Detaches the spares past the kept ones that are too old (or too many); caller unmaps.
 * *left (if not NULL) tells whether spares that will expire later remain. */
static obm_arena_t *spares_expire(uint64_t now, int *left) {
  long keep = _obm_option(OBM_OPTION_ARENA_SPARE);
  obm_arena_t **link = &spare_arenas, *victims = NULL;
  long i = 0;
  while (*link) {
    obm_arena_t *a = *link;
    if (i >= keep && (now - spare_since(a) >= a->spare_delay || i >= keep + SPARE_MAX)) {
      *link = a->next;
      a->next = victims;
      victims = a;
      _obm_arenas_nspare--;
      _obm_arenas_current--;
      _obm_arenas_reclaimed++;
      continue;
    }
    link = &a->next;
    i++;
  }
  if (left) *left = i > keep;
  return victims;
}

void _obm_mapped_add(size_t bytes) {
  uint64_t now = atomic_fetch_add_explicit(&_obm_bytes_mapped, bytes, memory_order_relaxed) + bytes;
  uint64_t peak = atomic_load_explicit(&_obm_bytes_mapped_peak, memory_order_relaxed);
  while (now > peak &&
         !atomic_compare_exchange_weak_explicit(&_obm_bytes_mapped_peak, &peak, now,
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}
void _obm_mapped_sub(size_t bytes) {
  atomic_fetch_sub_explicit(&_obm_bytes_mapped, bytes, memory_order_relaxed);
}

/* ---- the usable list, ordered by nfree_slots ascending ---------------------------------- */

static void usable_remove(obm_heap_t *heap, obm_arena_t *a) {
  obm_assert(a->in_usable);
  unsigned n = a->nfree_slots;
  if (heap->last_with[n] == a) {
    heap->last_with[n] = (a->prev && a->prev->nfree_slots == n) ? a->prev : NULL;
    if (!heap->last_with[n]) heap->last_with_mask &= ~((uint64_t)1 << n);
  }
  if (a->prev)
    a->prev->next = a->next;
  else
    heap->usable = a->next;
  if (a->next) a->next->prev = a->prev;
  a->next = a->prev = NULL;
  a->in_usable = 0;
}

static void usable_insert(obm_heap_t *heap, obm_arena_t *a) {
  obm_assert(!a->in_usable && a->nfree_slots > 0);
  unsigned n = a->nfree_slots;
  /* after the last arena with the largest count <= n: one bit search, not a scan */
  obm_arena_t *after = NULL;
  uint64_t below = heap->last_with_mask & (n >= 63 ? ~(uint64_t)0 : (((uint64_t)2 << n) - 1));
  if (below) after = heap->last_with[63 - __builtin_clzll(below)];
  if (after) {
    a->prev = after;
    a->next = after->next;
    if (after->next) after->next->prev = a;
    after->next = a;
  } else {
    a->prev = NULL;
    a->next = heap->usable;
    if (heap->usable) heap->usable->prev = a;
    heap->usable = a;
  }
  heap->last_with[n] = a;
  heap->last_with_mask |= (uint64_t)1 << n;
  a->in_usable = 1;
}

/* ---- arenas ------------------------------------------------------------------------------ */

static void arena_init(obm_arena_t *a, obm_heap_t *heap) {
  memset(a->pools, 0, sizeof a->pools);
  a->kind = _obm_arena_kind(heap);
  a->free_slots = ~(uint64_t)1;
  a->nfree_slots = OBM_NSLOTS - 1;
  a->heap = heap;
  a->next = a->prev = NULL;
  a->in_usable = 0;
  a->dirty_slots = 0;
  a->dirty_old = 0;
  a->purged_slots = 0;
  a->pools[0].kind = OBM_SLOT_META;
}

static void arena_unmap(obm_arena_t *a);

static void unmap_list(obm_arena_t *list) {
  while (list) {
    obm_arena_t *next = list->next;
    arena_unmap(list);
    list = next;
  }
}

static obm_arena_t *arena_new(obm_heap_t *heap) {
  pthread_mutex_lock(&_obm_global_lock);
  obm_arena_t *a = spare_arenas;
  if (a) {
    spare_arenas = a->next;
    _obm_arenas_nspare--;
  }
  obm_arena_t *victims = spare_arenas ? spares_expire(_obm_os_clock_coarse_ns(), NULL) : NULL;
  pthread_mutex_unlock(&_obm_global_lock);
  unmap_list(victims);
  if (!a) {
    give_back_before_map(heap);
    a = _obm_os_map(OBM_ARENA_SIZE, OBM_ARENA_SIZE);
    if (!a) return NULL;
    if (_obm_pagemap_set(a, OBM_ARENA_SIZE, (obm_segment_t *)a) != 0) {
      _obm_os_unmap(a, OBM_ARENA_SIZE);
      errno = ENOMEM;
      return NULL;
    }
    _obm_mapped_add(OBM_ARENA_SIZE);
    pthread_mutex_lock(&_obm_global_lock);
    _obm_arenas_allocated++;
    _obm_arenas_current++;
    if (_obm_arenas_current > _obm_arenas_highwater) _obm_arenas_highwater = _obm_arenas_current;
    pthread_mutex_unlock(&_obm_global_lock);
  }
  arena_init(a, heap);
  if (a->kind != OBM_SEG_ARENA_DEBUG) /* debug frees reach free_other by the page map */
    atomic_store_explicit(&heap->owned[_obm_owned_index(a)], a, memory_order_relaxed);
  pthread_mutex_lock(&_obm_global_lock);
  a->all_prev = NULL;
  a->all_next = _obm_arenas_all;
  if (_obm_arenas_all) _obm_arenas_all->all_prev = a;
  _obm_arenas_all = a;
  pthread_mutex_unlock(&_obm_global_lock);
  return a;
}

static void arena_unmap(obm_arena_t *a) {
  _obm_pagemap_set(a, OBM_ARENA_SIZE, NULL);
  _obm_os_unmap(a, OBM_ARENA_SIZE);
  _obm_mapped_sub(OBM_ARENA_SIZE);
}

/* The arena is entirely free: keep it as a spare or give it back to the OS. */
static void arena_free(obm_arena_t *a) {
  obm_assert(a->nfree_slots == OBM_NSLOTS - 1);
  uint64_t now = _obm_os_clock_coarse_ns();
  pthread_mutex_lock(&_obm_global_lock);
  if (a->all_prev)
    a->all_prev->all_next = a->all_next;
  else
    _obm_arenas_all = a->all_next;
  if (a->all_next) a->all_next->all_prev = a->all_prev;
  obm_heap_t *heap = a->heap;
  if (atomic_load_explicit(&heap->owned[_obm_owned_index(a)], memory_order_relaxed) == a)
    atomic_store_explicit(&heap->owned[_obm_owned_index(a)], OBM_NO_ARENA, memory_order_relaxed);
  a->spare_delay = heap_delay(heap);
  a->heap = NULL;
  a->pools[1].start = (uint8_t *)(uintptr_t)now;
  a->next = spare_arenas;
  spare_arenas = a;
  _obm_arenas_nspare++;
  obm_arena_t *victims = spares_expire(now, NULL);
  pthread_mutex_unlock(&_obm_global_lock);
  unmap_list(victims);
}

int _obm_arena_purge_expired(void) {
  int left = 0;
  pthread_mutex_lock(&_obm_global_lock);
  obm_arena_t *victims = spares_expire(_obm_os_clock_coarse_ns(), &left);
  pthread_mutex_unlock(&_obm_global_lock);
  unmap_list(victims);
  return left;
}

void _obm_arena_trim_spares(void) {
  pthread_mutex_lock(&_obm_global_lock);
  obm_arena_t *list = spare_arenas;
  spare_arenas = NULL;
  for (obm_arena_t *a = list; a; a = a->next) {
    _obm_arenas_nspare--;
    _obm_arenas_current--;
    _obm_arenas_reclaimed++;
  }
  pthread_mutex_unlock(&_obm_global_lock);
  unmap_list(list);
}

/* Purging, as mimalloc and jemalloc do it: a released pool's slots become dirty (free, and
 * resident); dirty slots go back to the OS (MADV_DONTNEED; they stay mapped and read as zero)
 * between one and two OBMEM_PURGE_DELAY_MS after their release.  Each heap makes a pass once
 * per delay (when it releases a pool, or from the purge thread when it is idle): the slots
 * that were already dirty at the previous pass (dirty_old) are purged, and those released
 * since (dirty_slots) become the old ones — two generations, so that a slot released just
 * before a pass is never purged at once.  Slots taken again before that are never purged, and
 * a pool take prefers dirty slots, so a program that empties and refills pools pays nothing;
 * taking a pool never purges (it would purge just what the program is about to need).
 * OBMEM_PURGE_DELAY_MS=0 purges at once. */
static void decommit_slots(obm_arena_t *a, uint64_t m) {
  while (m) {
    int s = __builtin_ctzll(m);
    int e = s;
    while (e < 64 && (m >> e) & 1)
      e++;
    _obm_os_decommit((uint8_t *)a + (size_t)s * OBM_POOL_SIZE, (size_t)(e - s) * OBM_POOL_SIZE);
    m &= e == 64 ? 0 : ~((((uint64_t)1 << e) - 1));
  }
}

static void pool_release_locked(obm_heap_t *heap, obm_pool_t *pool, int clean);
static void cache_remove(obm_heap_t *heap, obm_pool_t *pool);

/* Ages the heap's pool cache by one pass: pools cached before the previous pass have not been
 * wanted for at least a delay and go back to their arenas, already decommitted (their slots
 * were resident and unused as long as dirty ones purged at this pass); the others become
 * old.  Caller holds the heap's arena lock. */
static void cache_age(obm_heap_t *heap) {
  if (heap->ncached_slots == 0) return;
  for (unsigned c = 0; c < OBM_NCLASSES; c++) {
    obm_pool_t *pool = atomic_load_explicit(&heap->cached[c], memory_order_relaxed);
    while (pool) {
      obm_pool_t *next = pool->next;
      if (pool->cached == OBM_CACHED_OLD) {
        cache_remove(heap, pool);
        pool_release_locked(heap, pool, 1);
      } else {
        pool->cached = OBM_CACHED_OLD;
      }
      pool = next;
    }
  }
}

/* The purge delay adapts per heap, between the option's value and PURGE_DELAY_MAX_FACTOR
 * times it.  A pass that finds that pools took again at least a quarter of the slots the
 * previous pass decommitted (16 or more) doubles the heap's delay: the program frees and
 * reallocates in rounds longer than the delay, and each purge only cost it the page faults of
 * the next round (CPython's bench/python/containers.py and instances.py had 1.5-2x the page
 * faults of pymalloc, which never purges a pool, and spent 5-10 % of their time on them at
 * 10 ms).  A pass that finds none of the previous pass's slots taken again halves it.  Spare
 * arenas are kept for the delay of the heap that freed them.  A program that idles still
 * falls back to its live size, after at most PURGE_DELAY_MAX_FACTOR times the option. */
#define PURGE_DELAY_MAX_FACTOR 64
static uint64_t heap_delay(const obm_heap_t *heap) {
  if (heap->purge_delay) return heap->purge_delay;
  return (uint64_t)_obm_option(OBM_OPTION_PURGE_DELAY_MS) * 1000000u;
}

static void adapt_delay(obm_heap_t *heap) {
  uint64_t base = (uint64_t)_obm_option(OBM_OPTION_PURGE_DELAY_MS) * 1000000u;
  uint64_t d = heap_delay(heap);
  if (heap->purge_refault >= 16 && heap->purge_refault * 4 >= heap->purged_last) {
    if (d < base * PURGE_DELAY_MAX_FACTOR) d *= 2;
  } else if (heap->purge_refault == 0 && heap->purged_last > 0 && d > base) {
    d /= 2;
  }
  __atomic_store_n(&heap->purge_delay, d > base ? d : 0, __ATOMIC_RELAXED); /* stats read it */
  heap->purge_refault = 0;
}

/* The heap's purge pass, if a delay has passed since the last one (delay 0: at once);
 * returns whether dirty slots or cached pools remain (purgeable at a later pass).  Caller
 * holds the heap's arena lock. */
static int purge_pass(obm_heap_t *heap, uint64_t now, uint64_t delay) {
  int due = now - heap->last_purge_check >= delay;
  if (due) {
    adapt_delay(heap);
    heap->last_purge_check = now;
    heap->released_since_pass = 0;
    heap->purged_last = 0;
    cache_age(heap);
  }
  int left = heap->ncached_slots != 0;
  for (obm_arena_t *a = heap->usable; a; a = a->next) {
    if (due) {
      uint64_t m = a->dirty_old & a->free_slots;
      if (m) {
        decommit_slots(a, m);
        a->purged_slots |= m;
        heap->purged_last += (uint32_t)__builtin_popcountll(m);
      }
      a->dirty_old = a->dirty_slots & a->free_slots;
      a->dirty_slots = 0;
    }
    left |= (a->dirty_old | a->dirty_slots) != 0;
  }
  return left;
}

/* Volume, not only time: a heap that releases more slots between two passes than it holds
 * (and at least RELEASE_BUDGET_MIN = 32 MiB) makes a pass at once, so that a program that
 * frees fast holds about twice that dirty, not one delay of its throughput (the server
 * benchmark held 4x its live size without the bound).  A tighter budget costs threaded
 * programs time: a purged slot is faulted in again when a pool takes it, and every madvise
 * interrupts the process's other threads to flush their TLBs.  Measured on the server
 * benchmark (3 allocating threads, one freeing): 16 MiB gave 197k page faults and 0.46 s at
 * 82 MiB peak RSS, 32 MiB 99k and 0.33 s at 127 MiB (glibc's peak), 64 MiB 54k and 0.27 s
 * at 162 MiB. */
#define RELEASE_BUDGET_MIN 2048
static uint32_t release_budget(const obm_heap_t *heap) {
  return heap->slots_in_use > RELEASE_BUDGET_MIN ? heap->slots_in_use : RELEASE_BUDGET_MIN;
}

static void heap_purge(obm_heap_t *heap) {
  int over = heap->released_since_pass > release_budget(heap);
  if (!over && (++heap->purge_tick & 15)) return; /* the clock is read every 16th release */
  uint64_t delay = heap_delay(heap);
  uint64_t now = _obm_os_clock_coarse_ns();
  if (!over && now - heap->last_purge_check < delay) return;
  purge_pass(heap, now, over ? 0 : delay);
  /* the global caches expire on this heap's clock too, not only on arena or large events */
  _obm_arena_purge_expired();
  _obm_large_purge_expired();
}

/* The purge thread's pass (purge.c), for a heap whose owner may be idle: the same, under
 * the heap's arena lock, skipped when the owner holds it (it is busy and purges itself). */
int _obm_arena_purge_heap(obm_heap_t *heap, uint64_t now) {
  if (!_obm_heap_trylock(heap)) return 1;
  int left = purge_pass(heap, now, heap_delay(heap));
  _obm_heap_unlock(heap);
  return left;
}

/* Decommits dirty free slots of the heap (caller holds its arena lock), the older
 * generation first, then its cached empty pools, until `want` bytes are given back or none is
 * left. */
static size_t give_back_locked(obm_heap_t *heap, size_t want) {
  size_t given = 0;
  for (int pass = 0; pass < 2 && given < want; pass++) {
    for (obm_arena_t *a = heap->usable; a && given < want; a = a->next) {
      uint64_t m = (pass == 0 ? a->dirty_old : a->dirty_slots | a->dirty_old) & a->free_slots;
      if (!m) continue;
      decommit_slots(a, m);
      a->dirty_old &= ~m;
      a->dirty_slots &= ~m;
      given += (size_t)__builtin_popcountll(m) * OBM_POOL_SIZE;
    }
  }
  /* then the empty pools kept for their class, decommitted on the way back */
  for (unsigned c = 0; c < OBM_NCLASSES && given < want && heap->ncached_slots; c++) {
    obm_pool_t *pool;
    while (given < want &&
           (pool = atomic_load_explicit(&heap->cached[c], memory_order_relaxed)) != NULL) {
      given += (size_t)pool->nslots * OBM_POOL_SIZE;
      cache_remove(heap, pool);
      pool_release_locked(heap, pool, 1);
    }
  }
  return given;
}

/* A heap is about to map a fresh arena (no free slot, no spare): dirty slots anywhere in the
 * process are free memory that would stay resident beside it.  A heap's purge delay may have
 * grown long (adapt_delay), and one thread's dirty slots are of no use to another's pools, so
 * they are given back now, the caller's own first, then those of every heap whose owner is not
 * in its arena code (a trylock), up to an arena's worth.  This keeps the peak of threads that
 * free what others allocate (bench/server.c: 110 -> 135 MiB with delays adapted and nothing
 * given back) where the short delay had it.  Caller holds self's arena lock. */
static void give_back_before_map(obm_heap_t *self) {
  if (_obm_option(OBM_OPTION_PURGE_DELAY_MS) == 0) return; /* nothing is left dirty */
  size_t want = OBM_ARENA_SIZE;
  size_t given = give_back_locked(self, want);
  /* Other heaps' locks only under the purge pass's lock (tried: the purge thread or a fork
   * holds it, and then they are left alone), which fork takes first: a child must not inherit
   * a heap lock held for another thread's heap.  The global lock is not held across a heap's
   * give-back, which may free an arena (arena_free takes it). */
  if (given >= want || !_obm_purger_pass_trylock()) return;
  for (obm_heap_t *h = _obm_heaps_next(NULL); h && given < want; h = _obm_heaps_next(h)) {
    if (h == self || !_obm_heap_trylock(h)) continue; /* an owner in its arena code purges */
    given += give_back_locked(h, want - given);
    _obm_heap_unlock(h);
  }
  _obm_purger_pass_unlock();
}

/* Gives the pages of every free slot of the arena back to the OS (they stay mapped). */
static void arena_decommit_free(obm_arena_t *a) {
  decommit_slots(a, a->free_slots);
  a->dirty_slots = 0;
  a->dirty_old = 0;
}

/* ---- pools ------------------------------------------------------------------------------ */

/* First slot of a run of k free slots, or -1. */
static int find_run(uint64_t free_slots, unsigned k) {
  uint64_t m = free_slots;
  for (unsigned i = 1; i < k && m; i++)
    m &= free_slots >> i;
  return m ? __builtin_ctzll(m) : -1;
}

obm_pool_t *_obm_arena_pool_take(obm_heap_t *heap, unsigned nslots) {
  _obm_heap_lock(heap);
  obm_arena_t *a = heap->usable;
  int slot = -1;
  for (int tries = 0; a && tries < 64; a = a->next, tries++) {
    if (a->nfree_slots < nslots) continue;
    /* resident slots first: the others fault in again */
    uint64_t dirty = a->free_slots & (a->dirty_slots | a->dirty_old);
    if (dirty) slot = find_run(dirty, nslots);
    if (slot < 0) slot = find_run(a->free_slots, nslots);
    if (slot >= 0) break;
  }
  if (slot < 0) {
    a = arena_new(heap);
    if (!a) {
      _obm_heap_unlock(heap);
      return NULL;
    }
    slot = 1;
  } else {
    usable_remove(heap, a);
  }
  uint64_t bits = (nslots == 64 ? ~(uint64_t)0 : (((uint64_t)1 << nslots) - 1)) << slot;
  if (a->purged_slots & bits) { /* what a purge pass gave back faults in again */
    heap->purge_refault += (uint32_t)__builtin_popcountll(a->purged_slots & bits);
    a->purged_slots &= ~bits;
  }
  a->free_slots &= ~bits;
  a->dirty_slots &= ~bits;
  a->dirty_old &= ~bits;
  heap->slots_in_use += nslots;
  a->nfree_slots -= nslots;
  if (a->nfree_slots > 0) usable_insert(heap, a);
  obm_pool_t *pool = &a->pools[slot];
  pool->kind = OBM_SLOT_HEAD;
  pool->head_offset = 0;
  pool->nslots = (uint8_t)nslots;
  pool->start = (uint8_t *)a + (size_t)slot * OBM_POOL_SIZE;
  for (unsigned i = 1; i < nslots; i++) {
    a->pools[slot + (int)i].kind = OBM_SLOT_TAIL;
    a->pools[slot + (int)i].head_offset = (uint8_t)i;
  }
  _obm_heap_unlock(heap);
  return pool;
}

/* Returns the pool's slots to its arena: dirty (purged later), or decommitted now when
 * `clean` or the delay is 0; frees the arena when all its slots are free.  Caller holds the
 * heap's arena lock. */
static void pool_release_locked(obm_heap_t *heap, obm_pool_t *pool, int clean) {
  obm_arena_t *a = _obm_pool_arena(pool);
  obm_assert(pool->kind == OBM_SLOT_HEAD && pool->nused == 0 && !pool->in_list && !pool->cached);
  unsigned slot = (unsigned)(pool - a->pools);
  unsigned nslots = pool->nslots;
  obm_assert(heap->slots_in_use >= nslots);
  heap->slots_in_use -= nslots;
  heap->released_since_pass += nslots;
  for (unsigned i = 0; i < nslots; i++) {
    obm_pool_t *p = &a->pools[slot + i];
    p->kind = OBM_SLOT_FREE;
    p->head_offset = 0;
    p->free = NULL;
    p->nused = 0;
    p->ncarved = 0;
  }
  if (a->in_usable) usable_remove(heap, a);
  a->free_slots |= (((uint64_t)1 << nslots) - 1) << slot;
  a->nfree_slots += nslots;
  uint64_t bits = (((uint64_t)1 << nslots) - 1) << slot;
  if ((clean || _obm_option(OBM_OPTION_PURGE_DELAY_MS) == 0) && a->nfree_slots < OBM_NSLOTS - 1) {
    decommit_slots(a, bits);
  } else {
    a->dirty_slots |= bits;
  }
  if (a->nfree_slots == OBM_NSLOTS - 1) {
    arena_free(a);
  } else
    usable_insert(heap, a);
}

void _obm_arena_pool_release(obm_heap_t *heap, obm_pool_t *pool) {
  _obm_heap_lock(heap);
  heap_purge(heap);
  pool_release_locked(heap, pool, 0);
  _obm_heap_unlock(heap);
  _obm_purger_poke(); /* dirty slots or a spare arena: purgeable later */
}

/* ---- the pool cache: empty pools kept per class ----------------------------------------
 * A pool that became empty while its class has other pools (free.c, pool_became_empty) is
 * kept here, unlisted, formatted and with its free list, newest first.  The class's next
 * malloc that finds no listed pool with a free block takes the newest back
 * (_obm_arena_pool_uncache) — warm memory, no slot search, no formatting — so a program that
 * empties and refills pools in rounds (a stack, a queue, a batch of requests) does not turn
 * them over through its arenas.  At most OBM_CACHED_PER_CLASS pools per class (the oldest
 * is released); a pool cached at two purge passes goes back (cache_age).  Because the pools
 * are unlisted, free's and malloc's fast paths never reach them, so the purge thread may
 * release them under the arena lock while the owner sleeps — unlike pools kept listed. */

static void cache_remove(obm_heap_t *heap, obm_pool_t *pool) {
  unsigned c = pool->size_class;
  if (pool->prev)
    pool->prev->next = pool->next;
  else
    atomic_store_explicit(&heap->cached[c], pool->next, memory_order_relaxed);
  if (pool->next) pool->next->prev = pool->prev;
  pool->next = pool->prev = NULL;
  pool->cached = OBM_UNCACHED;
  heap->ncached[c]--;
  heap->ncached_slots -= pool->nslots;
}

void _obm_arena_pool_cache(obm_heap_t *heap, obm_pool_t *pool) {
  obm_assert(pool->kind == OBM_SLOT_HEAD && pool->nused == 0 && !pool->in_list && !pool->cached);
  _obm_heap_lock(heap);
  heap_purge(heap);
  if (_obm_option(OBM_OPTION_PURGE_DELAY_MS) == 0) { /* purge at once: nothing is kept */
    pool_release_locked(heap, pool, 0);
  } else {
    unsigned c = pool->size_class;
    if (heap->ncached[c] >= OBM_CACHED_PER_CLASS) {
      obm_pool_t *oldest = atomic_load_explicit(&heap->cached[c], memory_order_relaxed);
      while (oldest->next)
        oldest = oldest->next;
      cache_remove(heap, oldest);
      pool_release_locked(heap, oldest, 0);
    }
    obm_pool_t *head = atomic_load_explicit(&heap->cached[c], memory_order_relaxed);
    pool->prev = NULL;
    pool->next = head;
    if (head) head->prev = pool;
    atomic_store_explicit(&heap->cached[c], pool, memory_order_relaxed);
    pool->cached = OBM_CACHED_NEW;
    heap->ncached[c]++;
    heap->ncached_slots += pool->nslots;
  }
  _obm_heap_unlock(heap);
  _obm_purger_poke(); /* cached pools and dirty slots: purgeable later */
}

obm_pool_t *_obm_arena_pool_uncache(obm_heap_t *heap, unsigned cls) {
  _obm_heap_lock(heap);
  obm_pool_t *pool = atomic_load_explicit(&heap->cached[cls], memory_order_relaxed);
  if (pool) cache_remove(heap, pool);
  _obm_heap_unlock(heap);
  return pool;
}

void _obm_arena_release_cached(obm_heap_t *heap) {
  _obm_heap_lock(heap);
  for (unsigned c = 0; c < OBM_NCLASSES; c++) {
    obm_pool_t *pool;
    while ((pool = atomic_load_explicit(&heap->cached[c], memory_order_relaxed)) != NULL) {
      cache_remove(heap, pool);
      pool_release_locked(heap, pool, 0);
    }
  }
  _obm_heap_unlock(heap);
  _obm_purger_poke();
}

void _obm_arena_decommit_free(obm_heap_t *heap) {
  _obm_heap_lock(heap);
  for (obm_arena_t *a = heap->usable; a; a = a->next)
    arena_decommit_free(a);
  _obm_heap_unlock(heap);
}
