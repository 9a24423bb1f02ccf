/* traced.c — the allocator's side of tracing: which allocations are recorded, and the hooks.
 *
 * While the tracer's hooks are installed (_obm_alloc_hooks != NULL), each allocation entry
 * point comes here and asks whether this call is recorded: in exact mode always; in sampled
 * mode when a byte countdown runs out (Poisson sampling by bytes, as tcmalloc's and memray's
 * samplers: the tracer draws the countdown from an exponential distribution), so most calls
 * go on to the plain path after a subtraction.  obm_malloc's inline path does not test the
 * hooks: it subtracts from its class's budget, which is full when not tracing, 0 in exact mode
 * and the class's countdown in sampled mode, and comes here when that runs out (alloc.c).  A
 * recorded block comes from the thread's traced heap (alloc.c, _obm_traced_raw), whose arenas
 * free's fast path does not serve: free calls _obm_alloc_report_free (inline,
 * alloc_internal.h) for exactly those blocks (found by the traced heap's own table of arenas
 * after the thread's heap's, or by the page map in free_other, with large blocks marked
 * traced), and every other free keeps the fast path.  Each call of the program is one event: the
 * entry points call one another's raw versions, never these.
 *
 * Compiled with frame pointers (CMakeLists.txt): the tracer walks the stack from the frame of
 * the function here that called its hook (named _obm_*, which the report skips), so the first
 * frame it records is that function's return address, into the program's call.
 * _obm_alloc_muted > 0 on a thread records nothing: obmem's own threads being started, the
 * tracer's own work, a hook in progress (so a hook is never re-entered).
 *
 * Start and stop: a thread that saw the hooks installed may call them after they are removed
 * (the tracer's hooks then return at once); recorded blocks stay valid after stop, and their
 * frees then call nothing.  A block recorded in one session and freed in a later one is
 * reported as a free the capture has no allocation for (the report ignores it).
 */
#include "alloc/alloc_internal.h"

#include <errno.h>

_Atomic(const obm_alloc_hooks_t *) _obm_alloc_hooks;
__thread int _obm_alloc_muted __attribute__((tls_model("initial-exec")));

int _obm_alloc_set_hooks(const obm_alloc_hooks_t *h) {
  _obm_ensure_init();
  if (h && _obm_debug_on) return ENOTSUP;
  atomic_store_explicit(&_obm_alloc_hooks, h, memory_order_release);
  /* every thread's next malloc sets its class budgets for these hooks (alloc.c) */
  if (h) _obm_heaps_redirect();
  return 0;
}

void _obm_alloc_arm_sampling(void) {
  _obm_ensure_init();
  if (!atomic_load_explicit(&_obm_alloc_hooks, memory_order_relaxed)) _obm_heaps_arm_sampling();
}

int _obm_own_thread_start(pthread_t *thread, const char *name, size_t stack_size, int joinable,
                          void *(*fn)(void *)) {
  _obm_alloc_muted++;
  int rc = _obm_os_thread_start(thread, name, stack_size, joinable, fn);
  _obm_alloc_muted--;
  return rc;
}

/* record_size's slow path, out of line (so the countdown's path saves no registers): the
 * heap's first draw (a heap never drawn, or armed by a start or when it was made or adopted:
 * its first call is not a sample; the exponential distribution is memoryless, so a fresh
 * draw is as good as the wait left), or the countdown ran out. */
static OBM_NOINLINE const obm_alloc_hooks_t *sample_due(const obm_alloc_hooks_t *h,
                                                        obm_heap_t *heap, size_t size) {
  if (!heap->sample_drawn ||
      atomic_load_explicit(&heap->sample_left, memory_order_relaxed) < OBM_SAMPLE_ARMED / 2) {
    heap->sample_drawn = 1;
    int64_t left = h->next_sample() - (int64_t)size;
    if (left > 0) {
      atomic_store_explicit(&heap->sample_left, left, memory_order_relaxed);
      return NULL;
    }
  }
  atomic_store_explicit(&heap->sample_left, h->next_sample(), memory_order_relaxed);
  return h;
}

/* A class budget drawn by the tracer (never OBM_BUDGET_ARMED, never "full"). */
static uint64_t draw_budget(const obm_alloc_hooks_t *h) {
  int64_t d = h->next_sample();
  return d < 1 ? 1 : d > (int64_t)(OBM_BUDGET_FULL / 4) ? OBM_BUDGET_FULL / 4 : (uint64_t)d;
}

/* sample_due for a class budget (the countdown obm_malloc's inline path subtracts from), which
 * ran out: a class armed by a start (or left full from before it) draws afresh, and its first
 * call is not a sample.  Each class counts its own bytes, a Poisson process of the same mean:
 * together they sample the heap's bytes as one countdown would. */
static OBM_NOINLINE const obm_alloc_hooks_t *class_sample_due(const obm_alloc_hooks_t *h,
                                                              obm_heap_class_t *hc, size_t size) {
  if (hc->budget == OBM_BUDGET_ARMED || hc->budget > OBM_BUDGET_FULL / 2) {
    uint64_t draw = draw_budget(h);
    if (draw > size) {
      hc->budget = draw - size;
      return NULL;
    }
  }
  hc->budget = draw_budget(h);
  return h;
}

/* The hooks when an allocation of size bytes is to be recorded, else NULL: in sampled mode
 * when the countdown for its size runs out. */
OBM_INLINE const obm_alloc_hooks_t *record_size_for(const obm_alloc_hooks_t *h, size_t size) {
  if (!h || !h->next_sample) return h;
  obm_heap_t *heap = _obm_tls_heap;
  if (obm_unlikely(heap->is_empty_heap)) {
    heap = _obm_heap_init_thread();
    if (!heap) return NULL; /* the plain path reports ENOMEM */
  }
  if (obm_likely(_obm_countdown(heap, size))) return NULL;
  if (size - 1 < OBM_MEDIUM_MAX)
    return class_sample_due(h, &heap->cls[_obm_size_to_class(size)], size);
  return sample_due(h, heap, size);
}

/* The same for the hooks of the moment (NULL while muted). */
OBM_INLINE const obm_alloc_hooks_t *record_size(size_t size) {
  return record_size_for(_obm_alloc_hooks_for_call(), size);
}

/* Whether a live block in seg was recorded: its free goes to the hook. */
OBM_INLINE int block_traced(obm_segment_t *seg) {
  return seg->kind == OBM_SEG_ARENA_TRACED ||
         (seg->kind == OBM_SEG_LARGE && ((obm_large_t *)seg)->traced);
}

/* Inline: the hook's caller is an _obm_* entry, whose frame the walk starts from (its return
 * address, into the program or an obmem entry point, is the first frame recorded). */
OBM_INLINE void *alloc_recorded(const obm_alloc_hooks_t *h, size_t alignment, size_t size,
                                int zero) {
  void *p = _obm_traced_raw(alignment, size, zero);
  if (p && h->alloc) {
    _obm_alloc_muted++;
    h->alloc(p, size);
    _obm_alloc_muted--;
  }
  if (p && h->next_sample && size > OBM_MEDIUM_MAX) { /* sampled, large: its recorded size */
    obm_segment_t *seg = _obm_pagemap_lookup(p);
    if (seg && seg->kind == OBM_SEG_LARGE)
      ((obm_large_t *)seg)->traced_size = size < UINT32_MAX ? (uint32_t)size : UINT32_MAX;
  }
  return p;
}

/* malloc's recorded path in sampled mode (exact mode's is the tracer's hooks->malloc), with a
 * frame: _obm_malloc_traced jumps here, so the program's return address is this frame's and
 * the walk, which starts from the hook's caller's frame, records it first. */
static OBM_NOINLINE void *_obm_malloc_recorded(const obm_alloc_hooks_t *h, size_t size) {
  return alloc_recorded(h, OBM_ALIGNMENT, size, 0);
}

/* Frameless (the sampled countdown is the path most calls take): both ends are tail jumps. */
static OBM_NOINLINE __attribute__((optimize("omit-frame-pointer"))) void *
malloc_sampled(const obm_alloc_hooks_t *h, size_t size) {
  h = record_size_for(h, size);
  if (h) return _obm_malloc_recorded(h, size);
  return _obm_malloc_plain(size);
}

/* Exact mode's call is the tracer's malloc whole, jumped to before any register is saved;
 * sampled mode's (and a muted thread's) goes on to malloc_sampled. */
__attribute__((optimize("omit-frame-pointer"))) void *_obm_malloc_traced(size_t size) {
  const obm_alloc_hooks_t *h = _obm_alloc_hooks_for_call();
  if (h && h->malloc) return h->malloc(size);
  return malloc_sampled(h, size);
}

void *_obm_alloc_traced(size_t alignment, size_t size, int zero) {
  const obm_alloc_hooks_t *h = record_size(size);
  if (h) return alloc_recorded(h, alignment, size, zero);
  if (zero) return _obm_calloc_plain(size);
  return _obm_raw_aligned(alignment, size);
}

/* The usable size of the live block ptr in seg (a pool block's class size, a large block's). */
OBM_INLINE size_t block_usable(obm_segment_t *seg, void *ptr) {
  if (seg->kind == OBM_SEG_LARGE) return ((obm_large_t *)seg)->usable_size;
  return _obm_pool_block_size(_obm_pool_of((obm_arena_t *)seg, ptr));
}

/* Records a realloc of old (NULL: not recorded before) to p. */
OBM_INLINE void report_realloc(const obm_alloc_hooks_t *h, void *old, void *p, size_t size) {
  if (h->realloc) {
    _obm_alloc_muted++;
    h->realloc(old, p, size);
    _obm_alloc_muted--;
  }
}

/* Sampled mode, a realloc from or to a large block: the usable bytes it adds are known after
 * (a large block's usable size is not its class's: the large cache may hand out more), so the
 * block is marked traced after the fact when due.  A recorded large block's realloc is also
 * reported when it stays in place but its size drifted by more than 1/8 from the size last
 * recorded (the capture's size for it stays within 1/8 of the truth). */
static OBM_NOINLINE void *realloc_sampled_large(const obm_alloc_hooks_t *h, int was_traced,
                                                size_t usable, void *ptr, obm_segment_t *seg,
                                                size_t size) {
  if (!was_traced && size <= usable) return _obm_realloc_seg(ptr, seg, size, 0);
  void *p = _obm_realloc_seg(ptr, seg, size, was_traced);
  obm_segment_t *fresh = p ? _obm_pagemap_lookup(p) : NULL;
  if (!fresh) return p;
  size_t got = block_usable(fresh, p);
  int due = got > usable && record_size(got - usable) != NULL;
  obm_large_t *large = fresh->kind == OBM_SEG_LARGE ? (obm_large_t *)fresh : NULL;
  if (due && large) large->traced = 1;
  int drifted = 0;
  if (was_traced && p == ptr && large) {
    uint64_t last = large->traced_size;
    drifted = size > last + last / 8 || size < last - last / 8;
  }
  if (due || (was_traced && (p != ptr || drifted))) {
    report_realloc(h, was_traced ? ptr : NULL, p, size);
    if (large) large->traced_size = size < UINT32_MAX ? (uint32_t)size : UINT32_MAX;
  }
  return p;
}

/* Exact mode: every realloc is recorded (a block from before tracing as an allocation; it
 * moves to the traced heap, a large block is marked in place).
 * Sampled mode: a realloc counts down the usable bytes it adds (none when it fits in place):
 * the new block's class size, or for a large block the usable size it got, minus the old
 * block's usable size.  So a block grown to s bytes by many reallocs has counted about s bytes
 * (a large block from the large cache: its slack too) and is sampled with about the
 * probability 1 - exp(-s / mean) of one malloc(s), as the report's weights assume, not once
 * per realloc.  A block that becomes sampled moves to the traced heap (a large block is
 * marked after the fact) and is reported as an allocation; a recorded block stays recorded,
 * and its realloc is reported (a free and an allocation) when it moves, when its growth is
 * due, or (a large block) when its size drifted by more than 1/8 from the size recorded; a
 * pool block's realloc in place is not reported (the capture's size for it is then at most
 * its class's spacing smaller). */
OBM_NOINLINE void *_obm_realloc_traced_slow(void *ptr, obm_segment_t *seg, size_t size) {
  if (!seg || _obm_debug_on) return _obm_realloc_block(ptr, size, 0);
  int was_traced = block_traced(seg);
  const obm_alloc_hooks_t *h = _obm_alloc_hooks_for_call();
  int due = h != NULL; /* exact mode: every realloc */
  if (h && h->next_sample) {
    size_t usable = block_usable(seg, ptr);
    if (size > OBM_MEDIUM_MAX || seg->kind == OBM_SEG_LARGE)
      return realloc_sampled_large(h, was_traced, usable, ptr, seg, size);
    due = size > usable && record_size(_obm_class_size[_obm_size_to_class(size)] - usable) != NULL;
  }
  if (!due && !was_traced) return _obm_realloc_seg(ptr, seg, size, 0);
  void *p = _obm_realloc_seg(ptr, seg, size, 1);
  if (p && h && (due || p != ptr)) report_realloc(h, was_traced ? ptr : NULL, p, size);
  return p;
}

/* Sampled mode's common case, an unrecorded pool block resized within the pools, with tail
 * calls only: alloc.c's _obm_realloc_sampled, which counts a growth down and sends one that
 * runs the countdown out to _obm_realloc_traced_slow (out of line, saves registers), which
 * decides again from the same state (a countdown that runs out is left as it was:
 * record_size's slow path draws; the placeholder heap's budgets are 0 and an armed heap's are
 * too, so they never pass).  Anything else goes there at once. */
void *_obm_realloc_traced(void *ptr, size_t size) {
  obm_segment_t *seg = _obm_pagemap_lookup(ptr);
  if (obm_likely(seg && seg->kind == OBM_SEG_ARENA && size <= OBM_MEDIUM_MAX && !_obm_debug_on)) {
    const obm_alloc_hooks_t *h = _obm_alloc_hooks_for_call();
    if (h && h->next_sample) return _obm_realloc_sampled(ptr, seg, size);
  }
  return _obm_realloc_traced_slow(ptr, seg, size);
}
