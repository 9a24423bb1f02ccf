/* alloc_internal.h — the allocator's data structures and the inline pieces of its fast paths.
 *
 *   address space ──page map──> segment (1 MiB aligned)
 *      arena   (kind ARENA, 1 MiB): slot 0 = this header + 64 pool descriptors,
 *              slots 1..63 = 16 KiB pool slots; a pool spans 1..16 contiguous slots
 *      large   (kind LARGE, >= 1 page): header, then one block
 *   heap (one per thread) ──cls[class].pool──> pools with free blocks ──> blocks
 *
 * A block is found from a pointer without touching the block: page map -> segment; for an
 * arena, slot = (p >> 14) & 63, descriptor = arena->pools[slot - head_offset].
 */
#ifndef OBM_ALLOC_INTERNAL_H
#define OBM_ALLOC_INTERNAL_H

#include "internal.h"

#include <pthread.h>

#define OBM_POOL_SHIFT     14
#define OBM_ARENA_SHIFT    20
#define OBM_NSLOTS         (OBM_ARENA_SIZE / OBM_POOL_SIZE) /* 64, slot 0 is metadata */
#define OBM_MAX_POOL_SLOTS 16
#define OBM_LARGE_HEADER   64 /* bytes before the block in a large segment */
/* Emptied pools a heap keeps per class (arena.c, the pool cache), so that stack- and
 * queue-like programs which empty and refill pools take them back warm, formatted and with
 * their free lists, instead of releasing slots and formatting them again. */
#define OBM_CACHED_PER_CLASS 8
/* Entries of a heap's table of its own arenas (heap->owned). */
#define OBM_OWNED 64

typedef struct obm_block_s {
  struct obm_block_s *next;
} obm_block_t;

typedef struct obm_heap_s obm_heap_t;
typedef struct obm_arena_s obm_arena_t;

/* Arenas in debug mode carry OBM_SEG_ARENA_DEBUG, and those of a thread's traced heap (the
 * blocks the tracer recorded) OBM_SEG_ARENA_TRACED, so that free's fast path
 * (kind == OBM_SEG_ARENA) needs no separate test of either. */
enum {
  OBM_SEG_ARENA = 0xA7E4A,
  OBM_SEG_ARENA_DEBUG = 0xA7E4B,
  OBM_SEG_ARENA_TRACED = 0xA7E4C,
  OBM_SEG_LARGE = 0x1A76E
};
enum { OBM_SLOT_FREE = 0, OBM_SLOT_HEAD = 1, OBM_SLOT_TAIL = 2, OBM_SLOT_META = 3 };

/* pool->in_list: not listed (full, cached or free), listed, or listed and allowed to become
 * empty on free's fast path: the class's only pool when it last emptied, which stays listed
 * so that a malloc/free pair never leaves the fast path.  pool->cached: not cached, cached
 * since the heap's last purge pass, or from before it (released at the next pass). */
enum { OBM_UNLISTED = 0, OBM_LISTED = 1, OBM_LISTED_KEEP = 2 };
enum { OBM_UNCACHED = 0, OBM_CACHED_NEW = 1, OBM_CACHED_OLD = 2 };

/* A pool: a run of 1..16 slots holding blocks of one class.  Owned by arena->heap.
 * Invariants (owner's view, remote list counted as used):
 *   nused + |free| + (capacity - ncarved) == capacity  (the class's capacity)
 *   in_list != 0  <=>  the pool is in heap->cls[size_class].pool's list; a pool that is
 *   neither full nor cached is in the list (one that just became full stays until its
 *   class's next malloc)
 *   cached != 0  =>  nused == 0, in_list == 0, the pool is in heap->cached[size_class]
 *   remote_free != NULL  =>  pool is, or is about to be, on heap->remote_pools exactly once */
typedef struct obm_pool_s {
  obm_block_t *free;    /* local free list (owner only) */
  uint8_t *start;       /* first block; blocks are start + i * block_size */
  uint16_t nused;       /* blocks handed out, not freed locally */
  uint16_t ncarved;     /* blocks [0, ncarved) have been carved (lazily, as CPython) */
  uint32_t div_inverse; /* HEAD: the class's block-start test (_obm_class_div), here so that
                           free reads it from the line it writes */
  uint8_t kind;         /* OBM_SLOT_* */
  uint8_t head_offset;  /* for a TAIL slot: slot - head slot; 0 otherwise */
  uint8_t nslots;       /* HEAD: slots in this pool */
  uint8_t size_class;   /* HEAD: class index; block size and capacity are the class's */
  uint8_t in_list;      /* HEAD: OBM_LISTED or _KEEP: in heap->cls[size_class] */
  uint8_t cached;       /* HEAD: OBM_CACHED_NEW or _OLD: in heap->cached[size_class] */
  uint8_t div_shift;    /* HEAD: with div_inverse */
  uint8_t pad_;
  struct obm_pool_s *next; /* in heap->cls[size_class] or heap->cached[size_class] */
  struct obm_pool_s *prev;
  _Atomic(obm_block_t *) remote_free; /* pushed by other threads, taken by the owner */
  struct obm_pool_s *remote_next;     /* link in heap->remote_pools */
} obm_pool_t;

_Static_assert(sizeof(obm_pool_t) == 64, "a pool descriptor is one cache line");

/* Common first fields of every segment, so that a page-map hit can be classified. */
typedef struct obm_segment_s {
  uint32_t kind; /* OBM_SEG_ARENA, OBM_SEG_ARENA_DEBUG or OBM_SEG_LARGE */
} obm_segment_t;

/* An arena: 1 MiB, 1 MiB aligned.  Invariants:
 *   nfree_slots == popcount(free_slots);  bit 0 of free_slots is never set
 *   in heap's usable list  <=>  nfree_slots > 0; the list is ordered by nfree_slots ascending
 *   (allocation comes from the fullest arena, as CPython's usable_arenas) */
struct obm_arena_s {
  uint32_t kind; /* OBM_SEG_ARENA or OBM_SEG_ARENA_DEBUG */
  uint32_t nfree_slots;
  uint64_t free_slots;              /* bit i set <=> slot i is free */
  obm_heap_t *heap;                 /* owner; stable while any block of the arena is live */
  obm_arena_t *next, *prev;         /* heap's usable list */
  obm_arena_t *all_next, *all_prev; /* global list of arenas in use (under _obm_global_lock) */
  uint8_t in_usable;
  uint8_t pad_[7];
  uint64_t dirty_slots; /* free slots released since the heap's last purge pass (resident) */
  uint64_t dirty_old;   /* free slots already dirty at that pass: purged at the next one */
  uint64_t purged_slots; /* free slots a purge pass decommitted, not taken again since */
  uint64_t spare_delay;  /* ns a spare arena is kept: its last heap's purge delay */
  _Alignas(OBM_CACHE_LINE) obm_pool_t pools[OBM_NSLOTS]; /* one cache line each */
};

/* A large segment: one block of more than OBM_MEDIUM_MAX bytes (or a very aligned one).
 * Invariant: block + usable_size == (uint8_t *)this + mapped_size. */
typedef struct obm_large_s {
  uint32_t kind;      /* OBM_SEG_LARGE */
  uint16_t cached;    /* 1 while in the cache (freed) */
  uint16_t traced;    /* 1: the tracer recorded the block (its free is reported) */
  size_t mapped_size; /* bytes mapped, a multiple of the page size */
  uint8_t *block;     /* the pointer handed out */
  size_t usable_size;
  struct obm_large_s *next, *prev; /* live list or cache list */
  size_t requested_size;           /* size of the last malloc or realloc of the block that reached
                                      large.c (realloc's in-place cases in alloc.c do not); meaningless
                                      while cached */
  uint32_t traced_size;   /* sampled tracing: the size last recorded (saturated), so that a
                             growth in place is reported once it drifts (traced.c) */
} obm_large_t;

/* A heap's per-class state, in one place so that a malloc touches one cache line of it. */
typedef struct obm_heap_class_s {
  struct obm_pool_s *pool; /* head of pools with free blocks (or &_obm_pool_empty): CPython's
                              usedpools[class] */
  uint64_t nmalloc;        /* cumulative allocations */
  uint64_t requested;      /* cumulative requested bytes */
  /* Bytes obm_malloc's inline path may still hand out in this class before it leaves for
   * malloc_budget (alloc.c), which asks the tracer: OBM_BUDGET_FULL when not tracing,
   * OBM_BUDGET_ARMED (0: every call leaves) from a start until the class's first call, and
   * in sampled mode the bytes left to the class's next sample (traced.c).  So the inline path
   * needs no test of the tracer's own.  Only the owner writes it. */
  uint64_t budget;
} obm_heap_class_t;

/* Per-thread heap.  The allocation state (cls, usable, last_with)
 * is touched only by the owner thread (or, for an exited thread's heap, by whoever holds
 * _obm_abandoned_lock); abandoned/orphaned/abandoned_next change under the locks; other
 * threads only push on remote_pools; obm_stats_get reads the counters unsynchronized
 * (documented as a snapshot).
 * Heaps are never freed: a heap of an exited thread is abandoned, then adopted. */
struct obm_heap_s {
  obm_heap_class_t cls[OBM_NCLASSES]; /* per class: what malloc's fast path touches, together */
  /* The heap's own arenas by frame number mod OBM_OWNED (direct-mapped; OBM_NO_ARENA when
   * empty, never set in debug mode): free() finds an arena here without the page map, and
   * knows it is this thread's.  Written by whoever holds the heap's arena lock (arena.c),
   * read by the owner without it: an entry names an arena of this heap while the arena holds
   * any live block, which is all a valid free needs. */
  _Atomic(obm_arena_t *) owned[OBM_OWNED];
  /* Sampled tracing: bytes this thread may still allocate before its next recorded one, for
   * what the class budgets do not count (large blocks, realloc growth): counted down by
   * traced.c; only the owner writes it. */
  _Atomic(int64_t) sample_left;
  int sample_drawn;    /* sample_left was drawn once (traced.c) */
  obm_arena_t *usable; /* arenas with free slots, nfree_slots ascending */
  /* Empty pools kept per class, newest first (arena.c): changed under arena_lock only, by
   * the owner and the purge thread; the owner peeks at an entry without the lock. */
  _Atomic(obm_pool_t *) cached[OBM_NCLASSES];
  uint8_t ncached[OBM_NCLASSES];          /* pools in cached[c], <= OBM_CACHED_PER_CLASS */
  uint32_t ncached_slots;                 /* slots of all cached pools */
  obm_arena_t *last_with[OBM_NSLOTS + 1]; /* last arena in `usable` with that nfree (nfp2lasta) */
  uint64_t last_with_mask;                /* bit n set <=> last_with[n] != NULL (n < 64) */
  uint64_t last_purge_check;              /* coarse clock of the last purge pass (arena.c) */
  uint64_t purge_delay;   /* ns; this heap's own delay, adapted (arena.c); 0: the option's */
  uint32_t purged_last;   /* slots the last purge pass decommitted */
  uint32_t purge_refault; /* purged slots pools took again since the last pass */
  /* Held by the owner while it changes its arenas' slots (taking or releasing a pool, and
   * trim), and by the purge thread while it decommits them (purge.c): the only state another
   * thread touches outside remote frees.  Never taken on malloc's or free's fast path. */
  _Atomic(int) arena_lock;
  unsigned purge_tick;          /* pool events since the clock was last read */
  uint32_t slots_in_use;        /* pool slots this heap holds (arena.c) */
  uint32_t released_since_pass; /* pool slots released since its last purge pass */
  uint64_t thread_id;
  obm_heap_t *all_next; /* global list of heaps */
  obm_heap_t *abandoned_next;
  int abandoned;
  int orphaned;      /* in a forked child: its thread did not survive the fork
                        and may have been mid-update; never adopted */
  int is_empty_heap; /* the static placeholder heap before a thread's init */
  int traced;        /* a traced heap: arenas of kind OBM_SEG_ARENA_TRACED (alloc.c) */
  obm_pool_t *cls_tail[OBM_NCLASSES]; /* last pool of cls[c].pool's list (NULL when empty) */
  /* The owner thread's _obm_tls_fast_heap, so that a tracer start can send the thread's next
   * malloc to the slow path (_obm_heaps_redirect); NULL when no thread owns the heap.  Under
   * _obm_global_lock. */
  obm_heap_t **fast_slot;
  _Alignas(OBM_CACHE_LINE) _Atomic(obm_pool_t *) remote_pools; /* pools with remote frees */
  char pad_[OBM_CACHE_LINE - sizeof(void *)];
};

/* Bytes of blocks obm_malloc carves at once from a pool's never-used part (alloc.c). */
#define OBM_CARVE_BATCH 4096

/* Never a 1 MiB frame (frames are multiples of 1 MiB), NULL's included. */
#define OBM_NO_ARENA ((obm_arena_t *)(uintptr_t)1)
OBM_INLINE unsigned _obm_owned_index(const void *p) {
  return (unsigned)((uintptr_t)p >> OBM_ARENA_SHIFT) & (OBM_OWNED - 1);
}
/* heap->owned's entry for p, its byte offset computed in two instructions (with the index,
 * the compiler adds the array's offset separately). */
OBM_INLINE _Atomic(obm_arena_t *) *_obm_owned_entry(obm_heap_t *heap, const void *p) {
  size_t off = ((uintptr_t)p >> (OBM_ARENA_SHIFT - 3)) & ((size_t)(OBM_OWNED - 1) << 3);
  return (_Atomic(obm_arena_t *) *)((uint8_t *)heap->owned + off);
}

/* ---- globals --------------------------------------------------------------------------- */
extern OBM_HIDDEN obm_pool_t _obm_pool_empty; /* placeholder: no free blocks, never full */
extern OBM_HIDDEN obm_heap_t _obm_heap_empty; /* placeholder heap of uninitialized threads */
extern OBM_HIDDEN __thread obm_heap_t *_obm_tls_heap;
/* The heap obm_malloc's inline path uses: the thread's heap, or &_obm_heap_empty before the
 * thread's first allocation and always in debug mode, so that those take the slow path with
 * no test of their own. */
extern OBM_HIDDEN __thread obm_heap_t *_obm_tls_fast_heap;
/* The thread's traced heap (&_obm_heap_empty until its first recorded allocation): what the
 * tracer records lives there, so that only its frees reach the free hook (alloc.c). */
extern OBM_HIDDEN __thread obm_heap_t *_obm_tls_traced_heap;
extern OBM_HIDDEN pthread_mutex_t _obm_global_lock; /* arenas list, spares, heaps list */
/* Lock order (fork takes them all in this order): init, abandoned, global, pagemap, large. */
extern OBM_HIDDEN pthread_mutex_t _obm_abandoned_lock; /* heaps of exited threads */
extern OBM_HIDDEN pthread_mutex_t _obm_pagemap_lock;   /* creating page-map leaves */
extern OBM_HIDDEN int _obm_debug_on;                   /* debug mode, fixed at init */
/* The kind of the arenas heap makes (debug, traced or plain). */
OBM_INLINE uint32_t _obm_arena_kind(const obm_heap_t *heap) {
  return _obm_debug_on ? OBM_SEG_ARENA_DEBUG : heap->traced ? OBM_SEG_ARENA_TRACED : OBM_SEG_ARENA;
}
extern OBM_HIDDEN int _obm_initialized;
/* _obm_init when needed; the test is one acquire load (threads may race to the first call). */
OBM_INLINE void _obm_ensure_init(void) {
  if (obm_unlikely(!__atomic_load_n(&_obm_initialized, __ATOMIC_ACQUIRE))) _obm_init();
}

extern OBM_HIDDEN const uint32_t _obm_class_size[OBM_NCLASSES];
extern OBM_HIDDEN uint8_t _obm_class_slots[OBM_NCLASSES]; /* slots per pool */
/* For an alignment of 2^(i + 5) (32 B .. 16 KiB, the pools' alignment): the first class >= c
 * whose block size is a multiple of it (so that every block of its pools is aligned), or
 * OBM_NCLASSES when none is.  Filled by _obm_sizeclass_init. */
#define OBM_ALIGNED_CLASS_SHIFTS (OBM_POOL_SHIFT - 5 + 1)
extern OBM_HIDDEN uint8_t _obm_aligned_class[OBM_ALIGNED_CLASS_SHIFTS][OBM_NCLASSES];
extern OBM_HIDDEN uint32_t _obm_class_capacity[OBM_NCLASSES];
/* Exact division by a class's block size b = d << shift (d odd), as a divisibility test
 * (Granlund & Montgomery): q = rotr32(offset * inverse, shift), inverse = d^-1 mod 2^32, for
 * an offset inside a pool (< 2^20).  When b divides offset, q == offset / b.  Otherwise
 * either a bit below `shift` is set and rotates to the top (q >= 2^(32 - shift) >= 2^16, as
 * b <= 64 KiB), or offset = m << shift with d not dividing m, and q = m * inverse mod
 * 2^(32 - shift): q < capacity would give m = q * d exactly (both sides < 2^(20 - shift)),
 * a contradiction.  So "q < ncarved" tests both that offset starts a block and that the
 * block was carved, with one multiply. */
typedef struct obm_class_div_s {
  uint32_t inverse;
  uint32_t shift;
} obm_class_div_t;
extern OBM_HIDDEN obm_class_div_t _obm_class_div[OBM_NCLASSES];
OBM_INLINE uint32_t _obm_div_test(uint32_t offset, uint32_t inverse, unsigned shift) {
  uint32_t x = offset * inverse;
  return (x >> shift) | (x << ((32 - shift) & 31));
}
extern OBM_HIDDEN const uint8_t _obm_small_class[OBM_NSMALL_CLASSES + 1]; /* by (size+15)>>4 */
/* Medium class by (size - 1) >> 7 (class boundaries above 512 are multiples of 128), filled by
 * _obm_sizeclass_init.  A table, not a bit scan: bsr's output depends on its destination
 * register, which chained every malloc to the previous free (12.9 ns a pair instead of 3.9). */
extern OBM_HIDDEN uint8_t _obm_medium_class[OBM_MEDIUM_MAX >> 7];

/* ---- size classes ---------------------------------------------------------------------- */
/* Class for OBM_SMALL_MAX < size <= OBM_MEDIUM_MAX (0 before _obm_sizeclass_init). */
OBM_INLINE unsigned _obm_medium_size_to_class(size_t size) {
  return _obm_medium_class[(size - 1) >> 7];
}
/* Class for size <= OBM_MEDIUM_MAX (after _obm_sizeclass_init). */
OBM_INLINE unsigned _obm_size_to_class(size_t size) {
  if (obm_likely(size <= OBM_SMALL_MAX)) return _obm_small_class[(size + 15) >> 4];
  return _obm_medium_size_to_class(size);
}
OBM_HIDDEN void _obm_sizeclass_init(void);

/* ---- page map: chunk (1 MiB) -> segment ------------------------------------------------- */
#define OBM_PAGEMAP_BITS      48
#define OBM_PAGEMAP_LEAF_BITS 14
#define OBM_PAGEMAP_ROOT_BITS (OBM_PAGEMAP_BITS - OBM_ARENA_SHIFT - OBM_PAGEMAP_LEAF_BITS)
typedef _Atomic(obm_segment_t *) obm_pagemap_leaf_t[1u << OBM_PAGEMAP_LEAF_BITS];
extern OBM_HIDDEN _Atomic(obm_pagemap_leaf_t *) _obm_pagemap_root[1u << OBM_PAGEMAP_ROOT_BITS];

/* The same without the range test: an address above 2^48 aliases one below.  Only for callers
 * that then check p against the segment's own range (free's fast path: a block index or
 * _obm_large_contains), which an aliased address always fails. */
OBM_INLINE obm_segment_t *_obm_pagemap_lookup_masked(const void *p) {
  uintptr_t a = (uintptr_t)p;
  obm_pagemap_leaf_t *leaf =
      atomic_load_explicit(&_obm_pagemap_root[(a >> (OBM_ARENA_SHIFT + OBM_PAGEMAP_LEAF_BITS)) &
                                              ((1u << OBM_PAGEMAP_ROOT_BITS) - 1)],
                           memory_order_acquire);
  if (obm_unlikely(leaf == NULL)) return NULL;
  return atomic_load_explicit(
      &(*leaf)[(a >> OBM_ARENA_SHIFT) & ((1u << OBM_PAGEMAP_LEAF_BITS) - 1)], memory_order_relaxed);
}
/* The segment covering p, or NULL when p is not in memory obmem mapped.  Reads only the page
 * map.  For a large segment, p may lie past its end in the same chunk: check with
 * _obm_large_contains. */
OBM_INLINE obm_segment_t *_obm_pagemap_lookup(const void *p) {
  uintptr_t a = (uintptr_t)p;
  if (obm_unlikely(a >> OBM_PAGEMAP_BITS)) return NULL;
  return _obm_pagemap_lookup_masked(p);
}
/* Points chunks [start, start+size) at seg (NULL clears).  0 or ENOMEM (leaf map failed). */
OBM_HIDDEN int _obm_pagemap_set(void *start, size_t size, obm_segment_t *seg);
OBM_HIDDEN size_t _obm_pagemap_bytes(void);

/* ---- pools and blocks ------------------------------------------------------------------- */
/* Descriptors live in their arena's first slot, so the arena is the descriptor's 1 MiB frame. */
OBM_INLINE obm_arena_t *_obm_pool_arena(const obm_pool_t *pool) {
  return (obm_arena_t *)((uintptr_t)pool & ~(uintptr_t)(OBM_ARENA_SIZE - 1));
}
OBM_INLINE obm_pool_t *_obm_pool_of(obm_arena_t *arena, const void *p) {
  /* the slot's descriptor offset straight from p: slot * 64 in two instructions */
  _Static_assert(sizeof(obm_pool_t) == 64, "");
  size_t off = ((uintptr_t)p >> (OBM_POOL_SHIFT - 6)) & ((size_t)(OBM_NSLOTS - 1) << 6);
  obm_pool_t *pool = (obm_pool_t *)((uint8_t *)arena->pools + off);
  return pool - pool->head_offset;
}
OBM_INLINE uint32_t _obm_pool_block_size(const obm_pool_t *pool) {
  return _obm_class_size[pool->size_class];
}
OBM_INLINE uint32_t _obm_pool_capacity(const obm_pool_t *pool) {
  return _obm_class_capacity[pool->size_class];
}
/* The index of the block that starts at p, or a number >= 2^16 (>= any ncarved) when p is
 * not a block start of the pool (HEAD pools; p in the pool's slots). */
OBM_INLINE uint32_t _obm_pool_block_test(const obm_pool_t *pool, const void *p) {
  return _obm_div_test((uint32_t)((const uint8_t *)p - pool->start), pool->div_inverse,
                       pool->div_shift);
}
/* Index of the block containing p (p inside the pool's carved range). */
OBM_INLINE size_t _obm_pool_block_index(const obm_pool_t *pool, const void *p) {
  return (size_t)((const uint8_t *)p - pool->start) / _obm_pool_block_size(pool);
}

/* ---- arena.c --------------------------------------------------------------------------- */
/* Takes a pool of `nslots` contiguous slots for the heap, from its fullest usable arena or a
 * new one.  NULL on OS failure. */
OBM_HIDDEN obm_pool_t *_obm_arena_pool_take(obm_heap_t *heap, unsigned nslots);
/* Returns an empty pool's slots to its arena; frees the arena when it becomes empty. */
OBM_HIDDEN void _obm_arena_pool_release(obm_heap_t *heap, obm_pool_t *pool);
/* Keeps an empty, unlisted pool in the heap's cache of its class (the oldest of a full
 * class cache is released); the heap's purge passes release what stays there two passes. */
OBM_HIDDEN void _obm_arena_pool_cache(obm_heap_t *heap, obm_pool_t *pool);
/* The newest cached pool of the class, taken out of the cache (unlisted), or NULL. */
OBM_HIDDEN obm_pool_t *_obm_arena_pool_uncache(obm_heap_t *heap, unsigned cls);
/* Releases every cached pool of the heap (obm_trim, thread exit). */
OBM_HIDDEN void _obm_arena_release_cached(obm_heap_t *heap);
OBM_HIDDEN void _obm_arena_trim_spares(void);
/* Unmaps spare arenas that have been empty longer than OBMEM_PURGE_DELAY_MS; returns
 * whether spares that will expire later remain. */
OBM_HIDDEN int _obm_arena_purge_expired(void);
/* The purge thread's pass over one heap (which it does not own): decommits the slots that
 * have been dirty for the delay, unless the owner holds the heap's arena lock.  Returns
 * whether dirty slots remain (or the heap was busy). */
OBM_HIDDEN int _obm_arena_purge_heap(obm_heap_t *heap, uint64_t now);
/* Gives the pages of the heap's free slots back to the OS (they stay mapped). */
OBM_HIDDEN void _obm_arena_decommit_free(obm_heap_t *heap);
OBM_HIDDEN extern obm_arena_t *_obm_arenas_all; /* under _obm_global_lock */
OBM_HIDDEN extern uint64_t _obm_arenas_allocated, _obm_arenas_reclaimed, _obm_arenas_current,
    _obm_arenas_highwater, _obm_arenas_nspare;
OBM_HIDDEN extern _Atomic(uint64_t) _obm_bytes_mapped, _obm_bytes_mapped_peak;
OBM_HIDDEN void _obm_mapped_add(size_t bytes);
OBM_HIDDEN void _obm_mapped_sub(size_t bytes);

/* ---- heap.c ---------------------------------------------------------------------------- */
OBM_HIDDEN obm_heap_t *_obm_heap_init_thread(void); /* NULL only on OS failure */
/* The thread's traced heap, made (or adopted) with its heap if needed; NULL on OS failure. */
OBM_HIDDEN obm_heap_t *_obm_heap_init_traced(void);
/* Collects the frees other threads pushed to this heap's pools; returns how many. */
OBM_HIDDEN size_t _obm_heap_collect_remote(obm_heap_t *heap);
/* Collects the remote frees of abandoned heaps and releases what became empty; returns
 * how many frees it collected. */
OBM_HIDDEN size_t _obm_heap_collect_abandoned(void);
/* Releases every empty pool of the heap: those still linked in its class lists and the
 * cached ones. */
OBM_HIDDEN void _obm_heap_release_empty_pools(obm_heap_t *heap);
OBM_HIDDEN void _obm_heap_thread_done(void *heap); /* pthread key destructor */
OBM_HIDDEN void _obm_heap_decommit_abandoned(void);
/* In a forked child: the heaps of the threads that did not survive the fork become orphans.
 * Such a thread may have been in the middle of changing its heap, so nobody adopts or checks
 * them; their blocks stay valid and may be freed (those frees are never collected: the
 * memory stays with the orphan).  Caller holds no lock. */
OBM_HIDDEN void _obm_heap_after_fork_child(void);
OBM_HIDDEN extern pthread_key_t _obm_heap_key;
OBM_HIDDEN extern obm_heap_t *_obm_heaps_all; /* under _obm_global_lock */
/* Walks the heaps another thread may work on (not orphaned, not the placeholder) without
 * holding _obm_global_lock between steps: the first after h (NULL: the first one), or NULL.
 * Heaps are never freed, and one not orphaned at fork time never becomes orphaned in this
 * process, so the flags and the link read under the lock stay valid. */
OBM_HIDDEN obm_heap_t *_obm_heaps_next(obm_heap_t *h);
OBM_HIDDEN extern uint64_t _obm_heaps_count, _obm_heaps_abandoned;

OBM_INLINE obm_heap_t *_obm_heap_get(void) {
  return _obm_tls_heap;
}

OBM_HIDDEN OBM_COLD void _obm_heap_lock_wait(obm_heap_t *heap);
OBM_INLINE void _obm_heap_lock(obm_heap_t *heap) {
  if (obm_unlikely(atomic_exchange_explicit(&heap->arena_lock, 1, memory_order_acquire))) {
    _obm_heap_lock_wait(heap);
  }
}
OBM_INLINE int _obm_heap_trylock(obm_heap_t *heap) {
  return atomic_load_explicit(&heap->arena_lock, memory_order_relaxed) == 0 &&
         atomic_exchange_explicit(&heap->arena_lock, 1, memory_order_acquire) == 0;
}
OBM_INLINE void _obm_heap_unlock(obm_heap_t *heap) {
  atomic_store_explicit(&heap->arena_lock, 0, memory_order_release);
}

/* Links pool at the front of its class list. */
OBM_INLINE void _obm_pool_link(obm_heap_t *heap, obm_pool_t *pool) {
  obm_heap_class_t *hc = &heap->cls[pool->size_class];
  obm_pool_t *head = hc->pool;
  pool->prev = NULL;
  pool->next = head == &_obm_pool_empty ? NULL : head;
  if (pool->next)
    pool->next->prev = pool;
  else
    heap->cls_tail[pool->size_class] = pool;
  hc->pool = pool;
  pool->in_list = OBM_LISTED;
}
/* Links pool at the end of its class list: a pool that was full gets a few blocks back one at
 * a time; at the front it would hand out one block and be full again (mimalloc appends such
 * pages too), at the end it gathers free blocks before its turn. */
OBM_INLINE void _obm_pool_link_tail(obm_heap_t *heap, obm_pool_t *pool) {
  obm_heap_class_t *hc = &heap->cls[pool->size_class];
  if (hc->pool == &_obm_pool_empty) {
    _obm_pool_link(heap, pool);
    return;
  }
  pool->next = NULL;
  pool->prev = heap->cls_tail[pool->size_class];
  pool->prev->next = pool;
  heap->cls_tail[pool->size_class] = pool;
  pool->in_list = OBM_LISTED;
}
OBM_INLINE void _obm_pool_unlink(obm_heap_t *heap, obm_pool_t *pool) {
  obm_heap_class_t *hc = &heap->cls[pool->size_class];
  if (pool->prev)
    pool->prev->next = pool->next;
  else
    hc->pool = pool->next ? pool->next : &_obm_pool_empty;
  if (pool->next)
    pool->next->prev = pool->prev;
  else
    heap->cls_tail[pool->size_class] = pool->prev;
  pool->next = pool->prev = NULL;
  pool->in_list = OBM_UNLISTED;
}

/* ---- alloc.c / free.c ------------------------------------------------------------------ */
/* Raw allocation (no debug wrapping).  `size` <= OBM_MEDIUM_MAX goes to class pools. */
OBM_HIDDEN void *_obm_malloc_generic(obm_heap_t *heap, size_t size, unsigned cls);
OBM_HIDDEN void *_obm_raw_malloc(size_t size);
OBM_HIDDEN void *_obm_raw_aligned(size_t alignment, size_t size);
OBM_HIDDEN void _obm_raw_free(void *p, obm_segment_t *seg);
/* Local free slow path: pool was full (relink) or became empty (release). */
OBM_HIDDEN void _obm_free_local_slow(obm_heap_t *heap, obm_pool_t *pool, obm_block_t *b);
OBM_HIDDEN void _obm_free_remote(obm_pool_t *pool, obm_block_t *b);
/* After the owner took `n` blocks off pool's remote list into pool->free. */
OBM_HIDDEN void _obm_pool_after_collect(obm_heap_t *heap, obm_pool_t *pool, uint32_t n);
/* Raw usable size of the block at p inside seg, or 0 with an error report. */
OBM_HIDDEN size_t _obm_raw_usable(const void *p, obm_segment_t *seg);
/* Start of the raw block containing p (p inside obmem memory), or NULL. */
OBM_HIDDEN uint8_t *_obm_raw_block_start(const void *p, obm_segment_t *seg, size_t *block_size);
OBM_HIDDEN OBM_COLD void _obm_report_foreign(const char *op, const void *p);
/* ---- traced.c: recorded allocations (the tracer's hooks) -------------------------------- */
/* The hooks while the tracer runs, else NULL: the entry points' one test (obm_malloc's inline
 * path has the class budgets instead). */
extern OBM_HIDDEN _Atomic(const obm_alloc_hooks_t *) _obm_alloc_hooks;
/* The entry points while hooks are installed: each call recorded or plain (traced.c). */
OBM_HIDDEN void *_obm_malloc_traced(size_t size);
/* Sampled tracing's byte countdown for what no class budget counts (heap->sample_left: large
 * sizes), counted down by traced.c: counts size down and returns 1 while bytes are left, else
 * 0 (the allocation is due for a sample, or the heap was armed: traced.c decides, and
 * redraws).  Heaps are armed (OBM_SAMPLE_ARMED) when made or adopted and by every start,
 * before the hooks are installed (_obm_heaps_arm_sampling), while no owner counts down. */
#define OBM_SAMPLE_ARMED (-((int64_t)1 << 62)) /* draw afresh at the next allocation */
#define OBM_BUDGET_FULL  ((uint64_t)1 << 62)   /* a class budget when not tracing: never runs out */
#define OBM_BUDGET_ARMED 0                     /* a class budget that every call runs out */
/* Subtracts size (> 0) from a class budget; 1 when the budget did not exceed it (*budget is
 * then size too small: the caller adds size back).  Two instructions on x86-64, where GCC
 * would load, subtract, store and test. */
OBM_INLINE int _obm_budget_take(uint64_t *budget, size_t size) {
#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 11 : __GNUC__ >= 11)
  __asm__ goto("subq %1, %0\n\tjbe %l[out]" : "+m"(*budget) : "r"(size) : "cc" : out);
  return 0;
out:
  return 1;
#else
  uint64_t b = *budget;
  *budget = b - size;
  return size >= b;
#endif
}
OBM_HIDDEN void _obm_heaps_arm_sampling(void);
/* Sends every thread's next obm_malloc to the slow path (its fast heap pointer set to the
 * placeholder), where it sets its class budgets for the hooks of the moment
 * (_obm_heap_take_redirect): called after the hooks are installed. */
OBM_HIDDEN void _obm_heaps_redirect(void);
/* The owner's, on a slow path, with its heap: if a tracer start redirected the thread, sets
 * its budgets for the hooks (OBM_BUDGET_ARMED while tracing, else OBM_BUDGET_FULL) and its fast
 * heap back, under the lock the redirect holds (so that a start in between redirects it
 * again), and returns 1.  malloc_slow calls it, and _obm_countdown before it counts a
 * class budget down: a budget from an earlier session, perhaps of another mean, must not.
 * The test of the fast heap inline (both callers run it once a call while tracing). */
OBM_HIDDEN int _obm_heap_take_redirect_slow(obm_heap_t *heap);
OBM_INLINE int _obm_heap_take_redirect(obm_heap_t *heap) {
  if (obm_likely(__atomic_load_n(&_obm_tls_fast_heap, __ATOMIC_RELAXED) != &_obm_heap_empty))
    return 0;
  return _obm_heap_take_redirect_slow(heap);
}

OBM_INLINE int _obm_sample_countdown(obm_heap_t *heap, size_t size) {
  int64_t left = atomic_load_explicit(&heap->sample_left, memory_order_relaxed) - (int64_t)size;
  if (left <= 0) return 0;
  atomic_store_explicit(&heap->sample_left, left, memory_order_relaxed);
  return 1;
}
/* Counts size down the countdown that sampled mode keeps for it: its class's budget for a
 * class size, else the heap's; 1 while bytes are left, else 0 (the countdown is then left as
 * it was, for traced.c's record_size and its slow paths). */
OBM_INLINE int _obm_countdown(obm_heap_t *heap, size_t size) {
  _obm_heap_take_redirect(heap); /* budgets of an earlier session are armed first */
  if (size - 1 < OBM_MEDIUM_MAX) {
    obm_heap_class_t *hc = &heap->cls[_obm_size_to_class(size)];
    if (size >= hc->budget || hc->budget > OBM_BUDGET_FULL / 2) return 0; /* or not drawn */
    hc->budget -= size;
    return 1;
  }
  return _obm_sample_countdown(heap, size);
}
OBM_HIDDEN void *_obm_alloc_traced(size_t alignment, size_t size, int zero);
OBM_HIDDEN void *_obm_realloc_traced(void *ptr, size_t size);
/* Their plain paths (alloc.c): malloc's (_obm_raw_malloc: no class budget), calloc's, realloc
 * of a live block into a recorded one when `traced` (an untraced arena block then moves to the
 * traced heap). */
OBM_HIDDEN void *_obm_malloc_plain(size_t size);
OBM_HIDDEN void *_obm_calloc_plain(size_t size);
OBM_HIDDEN void *_obm_realloc_block(void *ptr, size_t size, int traced);
/* The same for a ptr whose segment seg (not NULL) the caller looked up, outside debug mode. */
OBM_HIDDEN void *_obm_realloc_seg(void *ptr, obm_segment_t *seg, size_t size, int traced);
/* Sampled tracing's realloc of an unrecorded block of an arena (seg) to size <= OBM_MEDIUM_MAX:
 * _obm_realloc_seg's, but a move to a larger class counts the bytes it adds down the
 * countdown first, and one that runs it out goes to _obm_realloc_traced_slow (traced.c). */
OBM_HIDDEN void *_obm_realloc_sampled(void *ptr, obm_segment_t *seg, size_t size);
/* Any realloc while the hooks are installed (seg: ptr's segment, or NULL), recorded or not as
 * traced.c's rules say. */
OBM_HIDDEN void *_obm_realloc_traced_slow(void *ptr, obm_segment_t *seg, size_t size);
/* _obm_traced_raw, _obm_traced_malloc: internal.h. */
/* The hooks to call for a call of the program's, or NULL (not tracing, or muted). */
OBM_INLINE const obm_alloc_hooks_t *_obm_alloc_hooks_for_call(void) {
  if (_obm_alloc_muted) return NULL;
  return atomic_load_explicit(&_obm_alloc_hooks, memory_order_acquire);
}
/* Reports the free of a recorded block (in a traced arena, or a large block marked traced) to
 * the tracer while it runs and the thread is not muted (traced.c's rules; inline in free's
 * path: one call, the hook's, per recorded free). */
OBM_INLINE void _obm_alloc_report_free(void *p) {
  const obm_alloc_hooks_t *h = _obm_alloc_hooks_for_call();
  if (h && h->free) {
    _obm_alloc_muted++;
    h->free(p);
    _obm_alloc_muted--;
  }
}
/* Starts one of obmem's own threads (purge, statistics): _obm_os_thread_start, with the
 * allocations made for the new thread (its TLS blocks) not recorded while tracing. */
OBM_HIDDEN int _obm_own_thread_start(pthread_t *thread, const char *name, size_t stack_size,
                                     int joinable, void *(*fn)(void *));

/* ---- large.c --------------------------------------------------------------------------- */
OBM_HIDDEN void *_obm_large_alloc(size_t size, size_t alignment, int zero);
OBM_HIDDEN void _obm_large_free(obm_large_t *seg);
/* Resizes in place or moves pages; returns the new block or NULL (old still valid). */
OBM_HIDDEN void *_obm_large_realloc(obm_large_t *seg, size_t size);
OBM_HIDDEN void _obm_large_trim(void);
OBM_HIDDEN void _obm_large_stats(obm_stats_t *out);
OBM_HIDDEN size_t _obm_large_check(void);
extern OBM_HIDDEN pthread_mutex_t _obm_large_lock;
extern OBM_HIDDEN obm_large_t *_obm_large_live;
/* Unmaps cached large blocks older than 10x OBMEM_PURGE_DELAY_MS; returns whether the
 * cache still holds blocks. */
OBM_HIDDEN int _obm_large_purge_expired(void);

/* ---- purge.c: the purge thread ---------------------------------------------------------- */
/* Memory became purgeable later (dirty slots, a spare arena, a cached large block): makes
 * sure the purge thread will look (starts it the first time).  One relaxed load when it is
 * already due to look.  Call with no allocator lock held. */
OBM_HIDDEN void _obm_purger_poke_slow(void);
extern OBM_HIDDEN _Atomic(int) _obm_purger_pending;
OBM_INLINE void _obm_purger_poke(void) {
  if (!atomic_load_explicit(&_obm_purger_pending, memory_order_relaxed)) _obm_purger_poke_slow();
}
/* The last thread with a heap has exited: the purge thread must not keep the process alive. */
OBM_HIDDEN void _obm_purger_threads_gone(void);
OBM_HIDDEN void _obm_purger_fork_prepare(void);
/* The purge pass's lock, tried by a thread that is about to lock other threads' heaps
 * (arena.c give_back_before_map): fork takes it first, so that a child never inherits a heap
 * lock held for another heap's owner.  1 when taken. */
OBM_HIDDEN int _obm_purger_pass_trylock(void);
OBM_HIDDEN void _obm_purger_pass_unlock(void);
OBM_HIDDEN void _obm_purger_fork_parent(void);
OBM_HIDDEN void _obm_purger_fork_child(void);
OBM_INLINE int _obm_large_contains(const obm_large_t *seg, const void *p) {
  return (const uint8_t *)p >= (const uint8_t *)seg &&
         (const uint8_t *)p < (const uint8_t *)seg + seg->mapped_size;
}

/* ---- debug.c --------------------------------------------------------------------------- */
OBM_HIDDEN void *_obm_debug_malloc(size_t size, size_t alignment, int zero);
OBM_HIDDEN void _obm_debug_free(void *p, obm_segment_t *seg);
OBM_HIDDEN void *_obm_debug_realloc(void *p, obm_segment_t *seg, size_t size);
OBM_HIDDEN size_t _obm_debug_usable(const void *p, obm_segment_t *seg);
/* Checks the block at raw (a carved block or large block): 0 if fine or not a debug block. */
OBM_HIDDEN size_t _obm_debug_check_block(uint8_t *raw, size_t raw_size);
/* Requested bytes of a live debug block at raw, or 0 (for exact rounding statistics). */
OBM_HIDDEN size_t _obm_debug_block_requested(const uint8_t *raw, size_t raw_size);
/* Code that reads other threads' plain fields on purpose (stats.c's snapshot) is left out of
 * ThreadSanitizer's instrumentation: a suppression by function name misses a report whose
 * earlier access TSan restored without the reader's frame. */
#if defined(__SANITIZE_THREAD__)
#define OBM_NO_TSAN __attribute__((no_sanitize_thread))
#else
#define OBM_NO_TSAN
#endif

#endif /* OBM_ALLOC_INTERNAL_H */
