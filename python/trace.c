/* trace.c — obmem.start(): every allocation of CPython's RAW, MEM and OBJ domains recorded with
 * its Python stack, as tracemalloc records them, at a fraction of the cost.
 *
 * allocator.c's traced functions call _obm_py_trace_add(p, size) after each allocation and
 * _obm_py_trace_remove(p) after each free; both run with the GIL held, which is the only lock
 * the tables need: CPython calls the MEM and OBJ domains so, and allocator.c takes the GIL for
 * a RAW allocation made without it (as tracemalloc does).  A RAW free without the GIL is queued
 * (_obm_py_trace_remove_later: "frees without the GIL" below).
 *
 *   stack table   one entry per distinct stack: up to `limit` frames, each a (code object,
 *                 instruction offset) pair read from the interpreter's frames (frames.c), most
 *                 recent first.  Found by a hash of the pairs in an open-addressing index;
 *                 a new stack takes a strong reference to each code object (so no other code
 *                 object can take its address while the entry lives) and has its line numbers
 *                 resolved only when a snapshot needs them.  Each stack keeps the bytes and
 *                 blocks live under it now and at the last recorded peak.
 *   site cache    in front of the stack table: 2^SITE_CACHE_BITS slots, each holding a stack,
 *                 looked up under three keys (frames.c): the innermost frame's instruction
 *                 address, then, when that slot's stack does not match, the address hashed
 *                 with its 3 callers' (one helper line reached from several lines), then the
 *                 address hashed with the innermost frame's own address in the thread's
 *                 frame stack (a recursive function: the same 4 frames at many depths;
 *                 bench/python/cycles.py's tracing instructions -9 %, the others +0.1 %).  A hook
 *                 compares the thread's frames with a slot's stack by instruction address
 *                 (instrs[], beside frames[]): an address names the (code, offset) pair since
 *                 the stack holds its code object; all equal, to the limit or to the end of the
 *                 thread's frames, is that stack, without walking into frames[] or hashing.
 *                 Anything else takes the walk, the hash and the stack table, and refills
 *                 the three slots.  A stale slot only costs a failed comparison; the cache is
 *                 emptied with the stack table.
 *   trace table   pointer -> (size, stack), in two levels so that neighbouring blocks have
 *                 their traces side by side (a hash keyed by the pointer alone missed the
 *                 cache on nearly every hook: 2.7x on bench/python/containers): a directory
 *                 of 2 KiB address pages (open addressing by page number, backward-shift
 *                 deletion) gives each page with traced blocks a record: an index of its 128
 *                 16-byte offsets (entry number + 1, 0: none) and its entries (8 bytes: size,
 *                 stack id << 7 | offset), unordered, a removal moving the last entry into the
 *                 hole.  An empty record is kept until the directory is next rebuilt (at 1/2
 *                 load; empty pages count), which frees it.  A free of a pointer not in the
 *                 table (allocated before start()) is ignored.
 *
 *   invariants    traced_bytes == sum of the trace sizes == sum of stacks' live_bytes;
 *                 ntraces == sum of stacks' live_count;  peak_bytes >= traced_bytes;
 *                 recorded_bytes <= peak_bytes < recorded_bytes + step(recorded_bytes) + the
 *                 largest single allocation, where step(b) = max(b / 100, 64 KiB): each
 *                 stack's peak_bytes/peak_count is its live state when the total was
 *                 recorded_bytes.
 *
 * Sampled mode (start(sample=BYTES)): a countdown of bytes, exponential of mean BYTES
 * (xorshift64), decides which allocations are recorded; one of s bytes is recorded with
 * probability p = 1 - exp(-s / BYTES) as s / p bytes, so every total below is an unbiased
 * estimate.  allocator.c's sampled functions keep the countdown (_obm_py_trace_sample_left)
 * and call _obm_py_trace_add_sampled when it runs out.  A free is looked up only when its
 * block's counter in a filter of 2^12 (block address hashed; +1 per trace made, -1 per trace
 * taken out, stuck at 255) is not 0.
 *
 * The peak set is recorded (one pass over the stacks) only when a new peak exceeds the last
 * recorded one by step(), so at most about 100 + 70 * ln(peak / 6.4 MB) times a run, and once
 * more when get_peak_snapshot() is called while the total is at its peak.  The timeline takes a
 * sample (time, traced bytes, obmem's bytes in use, RSS) on the first allocation after each
 * interval; the clock is read every 256th allocation only.  GC events come from a C function
 * in gc.callbacks.  The tracer's own memory is libc's (calloc/realloc), never the traced
 * domains: the tables change under the hooks, so nothing here may allocate through them.
 */
#include "obmem_py.h"

#include <obmem.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NFRAME    128
#define PEAK_MIN_STEP (64u * 1024u)
#define CLOCK_EVERY   256        /* allocations between two looks at the clock */
#define HUGE_SIZE     UINT32_MAX /* a trace's size field for blocks of 4 GiB or more */

#define PAGE_SHIFT      11  /* the directory's pages: 2 KiB of address space */
#define PAGE_SLOTS      128 /* 16-byte offsets in a page */
#define MAX_STACKS      ((UINT32_C(1) << 24) - 2) /* ids fit beside a 7-bit offset and an nframe */
#define FILTER_BITS     12                        /* sampled mode's block filter: 2^12 counters */
#define SITE_CACHE_BITS 11                        /* the site cache has 2^11 slots */
#define SITE_CACHE      (1u << SITE_CACHE_BITS)

typedef struct trace_entry_s {
  uint32_t size;         /* HUGE_SIZE: the size is in huge[] */
  uint32_t stack_offset; /* stack id << 7 | the block's 16-byte offset in its page */
} trace_entry_t;

typedef struct page_record_s {
  uint16_t ntraces, capacity; /* ntraces <= capacity <= PAGE_SLOTS */
  uint8_t index[PAGE_SLOTS];  /* offset -> entry number + 1; 0: no trace at that offset */
  trace_entry_t entries[];    /* [0, ntraces) */
} page_record_t;

typedef struct page_slot_s {
  uintptr_t page; /* address >> PAGE_SHIFT; 0: empty slot */
  page_record_t *record;
} page_slot_t;

typedef struct stack_entry_s {
  uint64_t hash;
  uint32_t first;  /* its frames are frames[first .. first + nframe) */
  uint32_t nframe; /* 0: no Python frame (allocation outside any Python code) */
  uint64_t live_bytes, live_count;
  uint64_t peak_bytes, peak_count; /* when traced_bytes was recorded_bytes */
} stack_entry_t;

/* A slot of the stack index: what a lookup needs without reading the stack's entry. */
typedef struct stack_slot_s {
  uint64_t hash;
  uint32_t first;     /* the stack's frames are frames[first .. first + nframe) */
  uint32_t id_nframe; /* (id + 1) << 8 | nframe; 0: empty slot */
} stack_slot_t;

/* A slot of the site cache: the stack last interned under a key (frames.c's _obm_py_frames_top). */
typedef struct site_slot_s {
  uint32_t id_nframe; /* (id + 1) << 8 | nframe; 0: empty slot */
  uint32_t first;     /* the stack's frames are frames[first .. first + nframe) */
} site_slot_t;

typedef struct sample_s {
  double time; /* seconds since start() */
  uint64_t traced_bytes, obmem_bytes, rss_bytes;
} sample_t;

typedef struct gc_event_s {
  double time, duration; /* seconds: start since start(), and how long */
  int generation;
  Py_ssize_t collected, uncollectable;
} gc_event_t;

typedef struct huge_entry_s {
  uintptr_t ptr;
  size_t size;
} huge_entry_t;

static struct tracer_s {
  int tracing;
  int paused; /* a snapshot is being built: its own objects are not traced */
  int limit;  /* frames kept per stack, 1..MAX_NFRAME */

  uint64_t sample_bytes; /* sampled mode's mean (Poisson by bytes); 0: exact mode */
  uint64_t sample_rng;   /* xorshift64 state, never 0 */
  /* sampled mode: filter[filter_index(p)] >= the number of traces of blocks p mapping there
   * (255: saturated, never decremented); a free whose counter is 0 is no trace's */
  uint8_t filter[1u << FILTER_BITS];

  page_slot_t *pages;        /* the directory: capacity pages_mask + 1, a power of two */
  size_t pages_mask, npages; /* npages <= 1/2 of the capacity */
  size_t nempty_pages;       /* pages whose record has no trace (kept until a rebuild) */
  int pages_shift;           /* 64 - log2(capacity) */
  size_t ntraces, records_bytes;

  stack_entry_t *stacks;
  uint32_t nstacks, stacks_capacity;
  stack_slot_t *stack_index; /* nstacks <= 1/2 of its capacity */
  size_t stack_index_mask;
  int stack_index_shift; /* 64 - log2(capacity): the index uses the hash's high bits */
  obm_py_frame_t *frames;
  uintptr_t *instrs; /* instrs[i]: the address of frames[i]'s instruction; frames_capacity */
  size_t nframes, frames_capacity;
  site_slot_t *site_cache; /* SITE_CACHE slots, by the key of the innermost frames */

  huge_entry_t *huge; /* the sizes of traces of 4 GiB or more */
  size_t nhuge, huge_capacity;

  uint64_t traced_bytes, peak_bytes, recorded_bytes;
  uint64_t peak_next; /* peak_next_after(recorded_bytes) */
  uint64_t lost; /* traces not recorded: the tracer's memory ran out during a realloc */

  uint64_t start_ns, interval_ns, next_sample_ns;
  unsigned countdown;
  sample_t *samples;
  size_t nsamples, samples_capacity;
  gc_event_t *gc_events;
  size_t ngc_events, gc_events_capacity;
  uint64_t gc_start_ns;
  PyObject *gc_callback; /* in gc.callbacks while tracing */
} T;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Grows an array of libc memory to hold one more element; 0 or -1 (out of memory). */
static int reserve(void **array, size_t *capacity, size_t count, size_t element_size) {
  if (count < *capacity) return 0;
  size_t grown = *capacity ? *capacity * 2 : 64;
  void *moved = realloc(*array, grown * element_size);
  if (moved == NULL) return -1;
  *array = moved;
  *capacity = grown;
  return 0;
}

/* ---- the trace table --------------------------------------------------------------------- */

static inline size_t page_home(uintptr_t page) {
  return (size_t)((uint64_t)page * UINT64_C(0x9E3779B97F4A7C15) >> T.pages_shift);
}

static inline size_t filter_index(uintptr_t ptr) {
  return (size_t)((uint64_t)(ptr >> 4) * UINT64_C(0x9E3779B97F4A7C15) >> (64 - FILTER_BITS));
}

static int pages_alloc(size_t capacity) {
  page_slot_t *slots = calloc(capacity, sizeof *slots);
  if (slots == NULL) return -1;
  T.pages = slots;
  T.pages_mask = capacity - 1;
  T.pages_shift = 64 - __builtin_ctzll(capacity);
  return 0;
}

static size_t record_bytes(unsigned capacity) {
  return sizeof(page_record_t) + capacity * sizeof(trace_entry_t);
}

/* Rehashes the directory into `capacity` slots, freeing the records of empty pages. */
static int pages_rebuild(size_t capacity) {
  page_slot_t *old = T.pages;
  size_t old_capacity = T.pages_mask + 1;
  if (pages_alloc(capacity) < 0) return -1; /* T unchanged */
  for (size_t i = 0; i < old_capacity; i++) {
    if (old[i].page == 0) continue;
    page_record_t *r = old[i].record;
    if (r->ntraces == 0) {
      T.records_bytes -= record_bytes(r->capacity);
      free(r);
      T.npages--;
      continue;
    }
    size_t j = page_home(old[i].page);
    while (T.pages[j].page != 0)
      j = (j + 1) & T.pages_mask;
    T.pages[j] = old[i];
  }
  free(old);
  T.nempty_pages = 0;
  return 0;
}

/* The directory slot of `page`, or NULL. */
static inline page_slot_t *page_find(uintptr_t page) {
  for (size_t i = page_home(page);; i = (i + 1) & T.pages_mask) {
    if (T.pages[i].page == page) return &T.pages[i];
    if (T.pages[i].page == 0) return NULL;
  }
}

/* The directory slot of `page`, with a record (made empty when there was none); NULL when
 * out of memory. */
static page_slot_t *page_slot_for_add(uintptr_t page) {
  size_t i = page_home(page);
  for (; T.pages[i].page != 0; i = (i + 1) & T.pages_mask)
    if (T.pages[i].page == page) return &T.pages[i];
  if ((T.npages + 1) * 2 > T.pages_mask + 1) { /* rebuilt without the empty pages */
    size_t capacity = T.pages_mask + 1;
    if ((T.npages - T.nempty_pages + 1) * 4 > capacity) capacity *= 2;
    if (pages_rebuild(capacity) < 0) return NULL;
    return page_slot_for_add(page);
  }
  page_record_t *r = malloc(record_bytes(4));
  if (r == NULL) return NULL;
  r->ntraces = 0;
  r->capacity = 4;
  memset(r->index, 0, sizeof r->index);
  T.records_bytes += record_bytes(4);
  T.pages[i].page = page;
  T.pages[i].record = r;
  T.npages++;
  T.nempty_pages++;
  return &T.pages[i];
}

/* A new entry at `offset` of the record of `slot`; NULL when out of memory. */
static trace_entry_t *record_add(page_slot_t *slot, unsigned offset) {
  page_record_t *r = slot->record;
  if (r->ntraces == r->capacity) {
    unsigned capacity = r->capacity * 2u > PAGE_SLOTS ? PAGE_SLOTS : r->capacity * 2u;
    page_record_t *grown = realloc(r, record_bytes(capacity));
    if (grown == NULL) return NULL;
    T.records_bytes += record_bytes(capacity) - record_bytes(grown->capacity);
    grown->capacity = (uint16_t)capacity;
    slot->record = r = grown;
  }
  if (r->ntraces == 0) T.nempty_pages--;
  trace_entry_t *e = &r->entries[r->ntraces++];
  r->index[offset] = (uint8_t)r->ntraces;
  T.ntraces++;
  return e;
}

static size_t huge_take(uintptr_t ptr) {
  for (size_t i = 0; i < T.nhuge; i++) {
    if (T.huge[i].ptr != ptr) continue;
    size_t size = T.huge[i].size;
    T.huge[i] = T.huge[--T.nhuge];
    return size;
  }
  return 0;
}

static size_t huge_size(uintptr_t ptr) {
  for (size_t i = 0; i < T.nhuge; i++)
    if (T.huge[i].ptr == ptr) return T.huge[i].size;
  return 0;
}

static inline uintptr_t entry_ptr(uintptr_t page, const trace_entry_t *e) {
  return page << PAGE_SHIFT | (uintptr_t)(e->stack_offset & (PAGE_SLOTS - 1)) << 4;
}

static inline size_t entry_size(uintptr_t page, const trace_entry_t *e) {
  return e->size == HUGE_SIZE ? huge_size(entry_ptr(page, e)) : e->size;
}

/* The trace of ptr (and its page's slot in *slot), or NULL. */
static trace_entry_t *trace_find(uintptr_t ptr, page_slot_t **slot) {
  if (ptr & 15) return NULL;
  page_slot_t *s = page_find(ptr >> PAGE_SHIFT);
  if (s == NULL) return NULL;
  unsigned n = s->record->index[(ptr >> 4) & (PAGE_SLOTS - 1)];
  if (n == 0) return NULL;
  if (slot != NULL) *slot = s;
  return &s->record->entries[n - 1];
}

/* Takes the trace `e` of page slot `s` out (its accounting is the caller's). */
static void trace_delete(page_slot_t *s, trace_entry_t *e) {
  page_record_t *r = s->record;
  unsigned offset = e->stack_offset & (PAGE_SLOTS - 1);
  trace_entry_t *last = &r->entries[r->ntraces - 1];
  if (e != last) {
    *e = *last;
    r->index[last->stack_offset & (PAGE_SLOTS - 1)] = (uint8_t)(e - r->entries + 1);
  }
  r->index[offset] = 0;
  T.ntraces--;
  /* An empty record stays (a page often fills again soon: freeing and making it again cost
   * more than the rest of the hook); the directory drops empty pages when it is rebuilt. */
  if (--r->ntraces == 0) T.nempty_pages++;
}

/* ---- the stack table ---------------------------------------------------------------------- */

static uint64_t stack_hash(const obm_py_frame_t *frames, int n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ (uint64_t)n;
  for (int i = 0; i < n; i++) /* one multiply a frame: the chain is the walk's critical path */
    h = (h ^ (uint64_t)(uintptr_t)frames[i].code ^ (uint64_t)(uint32_t)frames[i].offset << 40) *
        UINT64_C(0x9E3779B97F4A7C15);
  return h ^ (h >> 29);
}

static inline int frames_equal(const obm_py_frame_t *a, const obm_py_frame_t *b, int n) {
  for (int i = 0; i < n; i++)
    if (a[i].code != b[i].code || a[i].offset != b[i].offset) return 0;
  return 1;
}

static int stack_index_grow(void) {
  size_t capacity = T.stack_index ? (T.stack_index_mask + 1) * 2 : 1024;
  stack_slot_t *index = calloc(capacity, sizeof *index);
  if (index == NULL) return -1;
  for (size_t k = 0; T.stack_index != NULL && k <= T.stack_index_mask; k++) {
    if (T.stack_index[k].id_nframe == 0) continue;
    size_t i = (size_t)(T.stack_index[k].hash >> (64 - __builtin_ctzll(capacity)));
    while (index[i].id_nframe != 0)
      i = (i + 1) & (capacity - 1);
    index[i] = T.stack_index[k];
  }
  free(T.stack_index);
  T.stack_index = index;
  T.stack_index_mask = capacity - 1;
  T.stack_index_shift = 64 - __builtin_ctzll(capacity);
  return 0;
}

/* The id of the stack `frames[0..n)`, added when new; UINT32_MAX when out of memory.  A hit
 * reads the index slot and the stack's frames, not its entry. */
static uint32_t stack_intern(const obm_py_frame_t *frames, int n) {
  uint64_t hash = stack_hash(frames, n);
  size_t i = (size_t)(hash >> T.stack_index_shift);
  for (; T.stack_index[i].id_nframe != 0; i = (i + 1) & T.stack_index_mask) {
    const stack_slot_t *slot = &T.stack_index[i];
    if (slot->hash == hash && (slot->id_nframe & 0xff) == (uint32_t)n &&
        frames_equal(&T.frames[slot->first], frames, n))
      return (slot->id_nframe >> 8) - 1;
  }
  size_t stacks_capacity = T.stacks_capacity;
  if (T.nstacks >= MAX_STACKS || (T.nstacks + 1) * 4 > (T.stack_index_mask + 1) * 3 ||
      reserve((void **)&T.stacks, &stacks_capacity, T.nstacks, sizeof *T.stacks) < 0)
    return UINT32_MAX;
  T.stacks_capacity = (uint32_t)stacks_capacity;
  while (T.nframes + (size_t)n > T.frames_capacity) {
    size_t capacity = T.frames_capacity ? T.frames_capacity * 2 : 64;
    uintptr_t *instrs = realloc(T.instrs, capacity * sizeof *instrs);
    if (instrs == NULL) return UINT32_MAX;
    T.instrs = instrs;
    if (reserve((void **)&T.frames, &T.frames_capacity, T.frames_capacity, sizeof *T.frames) < 0)
      return UINT32_MAX;
  }
  uint32_t id = T.nstacks++;
  stack_entry_t *s = &T.stacks[id];
  *s = (stack_entry_t){.hash = hash, .first = (uint32_t)T.nframes, .nframe = (uint32_t)n};
  for (int k = 0; k < n; k++) {
    T.instrs[T.nframes] = _obm_py_frames_instr(frames[k].code, frames[k].offset);
    obm_py_frame_t *f = &T.frames[T.nframes++];
    *f = frames[k];
    f->line = -2; /* resolved by the first snapshot that needs it */
    Py_INCREF(f->code);
  }
  T.stack_index[i] = (stack_slot_t){hash, s->first, (id + 1) << 8 | (uint32_t)n};
  if ((size_t)T.nstacks * 2 > T.stack_index_mask + 1)
    (void)stack_index_grow(); /* on failure it stays valid, fuller: new stacks stop at 3/4 */
  return id;
}

/* ---- peak and timeline -------------------------------------------------------------------- */

/* Where the next recording of the peak is due: step(b) = max(b / 100, 64 KiB) above b. */
static uint64_t peak_next_after(uint64_t recorded) {
  uint64_t step = recorded / 100;
  return recorded + (step < PEAK_MIN_STEP ? PEAK_MIN_STEP : step);
}

static void peak_record(void) {
  for (uint32_t id = 0; id < T.nstacks; id++) {
    T.stacks[id].peak_bytes = T.stacks[id].live_bytes;
    T.stacks[id].peak_count = T.stacks[id].live_count;
  }
  T.recorded_bytes = T.traced_bytes;
  T.peak_next = peak_next_after(T.recorded_bytes);
}

static void timeline_sample(uint64_t now) {
  static obm_stats_t stats; /* ~5 KiB; the GIL serializes the callers */
  if (reserve((void **)&T.samples, &T.samples_capacity, T.nsamples, sizeof *T.samples) < 0)
    return; /* a sample less */
  obm_stats_get(&stats);
  T.samples[T.nsamples++] = (sample_t){(double)(now - T.start_ns) / 1e9, T.traced_bytes,
                                       stats.bytes_in_use, obm_rss_bytes()};
  T.next_sample_ns = now + T.interval_ns;
}

static void timeline_tick(void) {
  T.countdown = CLOCK_EVERY;
  if (T.interval_ns == 0) return;
  uint64_t now = now_ns();
  if (now >= T.next_sample_ns) timeline_sample(now);
}

/* ---- the site cache ---------------------------------------------------------------------- */

static inline site_slot_t *site_slot(uintptr_t key) {
  return &T.site_cache[(key * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - SITE_CACHE_BITS)];
}

/* 1 when the thread's frames from top are the stack of `slot`. */
static inline int site_match(const site_slot_t *slot, const void *top) {
  return slot->id_nframe != 0 &&
         _obm_py_frames_match(top, &T.instrs[slot->first], (int)(slot->id_nframe & 0xff), T.limit);
}

/* ---- sampled mode -------------------------------------------------------------------------- */

/* Bytes until the next sampled allocation: exponential with mean sample_bytes, >= 1. */
static int64_t sample_draw(void) {
  T.sample_rng ^= T.sample_rng << 13;
  T.sample_rng ^= T.sample_rng >> 7;
  T.sample_rng ^= T.sample_rng << 17;
  double u = ((double)(T.sample_rng >> 11) + 0.5) * 0x1p-53; /* in (0, 1) */
  return (int64_t)(-log(u) * (double)T.sample_bytes) + 1;
}

/* What a sampled allocation of `size` bytes stands for: size / P(sampled), where an
 * allocation of s bytes is sampled with probability 1 - exp(-s / mean). */
static size_t sample_estimate(size_t size) {
  double p = -expm1(-(double)size / (double)T.sample_bytes);
  double estimate = p > 0 ? (double)size / p : (double)T.sample_bytes;
  return estimate >= 0x1p63 ? SIZE_MAX / 2 : (size_t)(estimate + 0.5);
}

/* ---- frees without the GIL (the RAW domain) ----------------------------------------------- */

/* A thread that does not hold the GIL and frees a RAW block can neither take its trace out
 * (the tables are the GIL's) nor take the GIL (CPython frees a thread state with
 * PyMem_RawFree after dropping the GIL: _PyThreadState_DeleteCurrent would deadlock; tracemalloc
 * keeps a lock of its own for this).  allocator.c queues the address here before the block is
 * freed, so no other thread can be handed the block and trace it before its removal is queued;
 * the queue is applied under the GIL before the next trace is recorded and before the totals
 * are read.  Libc memory under its own mutex (held for a push or an apply only). */
static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *pending;
static size_t npending, pending_capacity;
static _Atomic size_t pending_count;  /* npending, for a look without the lock */
static _Atomic uint64_t pending_lost; /* pushes that found no memory: traces left stale */

void _obm_py_trace_remove_later(void *p) {
  pthread_mutex_lock(&pending_lock);
  if (npending == pending_capacity) {
    size_t capacity = pending_capacity ? pending_capacity * 2 : 256;
    uintptr_t *grown = realloc(pending, capacity * sizeof *grown);
    if (grown == NULL) {
      atomic_fetch_add_explicit(&pending_lost, 1, memory_order_relaxed);
      pthread_mutex_unlock(&pending_lock);
      return;
    }
    pending = grown;
    pending_capacity = capacity;
  }
  pending[npending++] = (uintptr_t)p;
  atomic_store_explicit(&pending_count, npending, memory_order_relaxed);
  pthread_mutex_unlock(&pending_lock);
}

/* fork: the child must not inherit the lock held by another thread (its first record would
 * wait forever); registered at the first start() */
static void pending_lock_take(void) {
  pthread_mutex_lock(&pending_lock);
}
static void pending_lock_give(void) {
  pthread_mutex_unlock(&pending_lock);
}

static void remove_now(uintptr_t ptr);

/* Applies the queue (GIL held); with `discard`, drops it (a new session's tables never held
 * those traces). */
static __attribute__((noinline)) void pending_apply_slow(int discard) {
  pthread_mutex_lock(&pending_lock);
  for (size_t i = 0; i < npending && !discard && T.tracing; i++)
    remove_now(pending[i]);
  npending = 0;
  atomic_store_explicit(&pending_count, 0, memory_order_relaxed);
  uint64_t lost = atomic_exchange_explicit(&pending_lost, 0, memory_order_relaxed);
  if (!discard) T.lost += lost;
  pthread_mutex_unlock(&pending_lock);
}

/* The queue is seen here whenever its push happened before (a block freed after its push and
 * handed to this thread: the allocator orders the two), so a relaxed look suffices. */
static inline void pending_apply(void) {
  if (__builtin_expect(atomic_load_explicit(&pending_count, memory_order_relaxed) != 0, 0))
    pending_apply_slow(0);
}

/* ---- the hooks' side (GIL held) ------------------------------------------------------------ */

int _obm_py_trace_is_on(void) {
  return T.tracing;
}

/* Records the block p of `size` bytes (the hook's decision made). */
static __attribute__((noinline)) int trace_record(void *p, size_t size) {
  pending_apply(); /* a queued removal of p's address comes before p's trace */
  uintptr_t ptr = (uintptr_t)p, page = ptr >> PAGE_SHIFT;
  if (__builtin_expect(ptr & 15, 0)) { /* not from obmem nor malloc: cannot be indexed */
    T.lost++;
    return 0;
  }
  if (T.sample_bytes != 0 && T.filter[filter_index(ptr)] != 255) T.filter[filter_index(ptr)]++;
  /* the directory slot may not be cached: its load overlaps the frame walk */
  __builtin_prefetch(&T.pages[page_home(page)]);
  /* The stack: the one in the site cache under the innermost frame's instruction address, or
   * else under its and 3 callers' (the same line reached from several places), when the
   * thread's frames match it, compared by instruction address; else walked, hashed, interned
   * and cached under both keys. */
  uintptr_t key;
  const void *top = _obm_py_frames_top(&key);
  site_slot_t *first = site_slot(key), *second = NULL, *third = NULL;
  uint32_t id;
  if (site_match(first, top)) {
    id = (first->id_nframe >> 8) - 1;
  } else if (second = site_slot(_obm_py_frames_callers_key(top, T.limit)),
             site_match(second, top)) {
    id = (second->id_nframe >> 8) - 1;
  } else if (third = site_slot((key ^ (uintptr_t)top) * UINT64_C(0xff51afd7ed558ccd) ^ 2),
             site_match(third, top)) {
    id = (third->id_nframe >> 8) - 1;
  } else {
    obm_py_frame_t frames[MAX_NFRAME];
    int n = _obm_py_frames_walk(frames, T.limit);
    id = stack_intern(frames, n);
    if (id == UINT32_MAX) return -1;
    *first = *second = *third = (site_slot_t){(id + 1) << 8 | (uint32_t)n, T.stacks[id].first};
  }
  unsigned offset = (unsigned)(ptr >> 4) & (PAGE_SLOTS - 1);
  page_slot_t *slot = page_slot_for_add(page);
  if (slot == NULL) return -1;
  trace_entry_t *e;
  unsigned entry = slot->record->index[offset];
  if (entry != 0) { /* a stale trace of the same address (freed where it could not be seen) */
    e = &slot->record->entries[entry - 1];
    size_t old = e->size == HUGE_SIZE ? huge_take(ptr) : e->size;
    stack_entry_t *s = &T.stacks[e->stack_offset >> 7];
    s->live_bytes -= old;
    s->live_count--;
    T.traced_bytes -= old;
  } else if ((e = record_add(slot, offset)) == NULL) {
    return -1;
  }
  if (size >= HUGE_SIZE) {
    if (reserve((void **)&T.huge, &T.huge_capacity, T.nhuge, sizeof *T.huge) < 0) {
      e->size = 0; /* counted as empty rather than lost */
    } else {
      T.huge[T.nhuge++] = (huge_entry_t){ptr, size};
      e->size = HUGE_SIZE;
    }
  } else {
    e->size = (uint32_t)size;
  }
  e->stack_offset = id << 7 | offset;
  T.stacks[id].live_bytes += size;
  T.stacks[id].live_count++;
  T.traced_bytes += size;
  if (T.traced_bytes > T.peak_bytes) {
    T.peak_bytes = T.traced_bytes;
    if (T.traced_bytes >= T.peak_next) peak_record();
  }
  if (--T.countdown == 0) timeline_tick();
  return 0;
}

int64_t _obm_py_trace_sample_left; /* sampled mode: bytes until the next recorded allocation */

/* The hooks decide, trace_record and trace_forget do the work (not inlined: the calls that
 * record nothing, most of them in sampled mode, save no registers). */
int _obm_py_trace_add_sampled(void *p, size_t size) {
  _obm_py_trace_sample_left = sample_draw();
  if (!T.tracing || T.paused) return 0;
  return trace_record(p, sample_estimate(size)); /* every total is an estimate */
}

int _obm_py_trace_add(void *p, size_t size) {
  if (!T.tracing || T.paused) return 0; /* after stop(), or the snapshot's own objects */
  if (T.sample_bytes == 0) return trace_record(p, size);
  /* sampled mode (a realloc): one allocation per _obm_py_trace_sample_left bytes */
  if ((_obm_py_trace_sample_left -= (int64_t)size) > 0) return 0;
  return _obm_py_trace_add_sampled(p, size);
}

/* Takes the trace of p out, if it has one (inline in one function per mode: exact mode's
 * trace_forget tests no filter). */
static inline __attribute__((always_inline)) void forget_in(uintptr_t ptr, int sampled) {
  page_slot_t *slot;
  trace_entry_t *e = trace_find(ptr, &slot);
  if (e == NULL) return; /* allocated before start(): not ours to count */
  size_t size = e->size == HUGE_SIZE ? huge_take(ptr) : e->size;
  stack_entry_t *s = &T.stacks[e->stack_offset >> 7];
  s->live_bytes -= size;
  s->live_count--;
  T.traced_bytes -= size;
  trace_delete(slot, e);
  if (sampled && T.filter[filter_index(ptr)] != 255) T.filter[filter_index(ptr)]--;
}

static __attribute__((noinline)) void trace_forget(uintptr_t ptr) {
  forget_in(ptr, 0);
}

static __attribute__((noinline)) void trace_forget_sampled(uintptr_t ptr) {
  forget_in(ptr, 1);
}

/* p's trace out, if it has one (GIL held, tracing). */
static void remove_now(uintptr_t ptr) {
  if (T.sample_bytes == 0) {
    trace_forget(ptr);
  } else if (T.filter[filter_index(ptr)] != 0) { /* else no trace maps there: most frees */
    trace_forget_sampled(ptr);
  }
}

void _obm_py_trace_remove(void *p) {
  if (!T.tracing) return;
  /* sampled mode records seldom: its frees keep the queue of frees without the GIL short */
  if (T.sample_bytes != 0) pending_apply();
  remove_now((uintptr_t)p);
}

/* Exact mode's traced free in one call (allocator.c; GIL held, p not NULL): the load of p's
 * directory slot started, the block freed (obm_free_or: obmem's, else `other`'s, which runs no
 * Python code), then its trace taken out, inline; in sampled mode (or not tracing) the same
 * free, then _obm_py_trace_remove. */
void _obm_py_trace_free(void *p, void (*other)(void *ctx, void *p), void *ctx) {
  uintptr_t ptr = (uintptr_t)p;
  if (T.tracing && T.sample_bytes == 0) {
    __builtin_prefetch(&T.pages[page_home(ptr >> PAGE_SHIFT)]);
    obm_free_or(p, other, ctx);
    forget_in(ptr, 0);
    return;
  }
  obm_free_or(p, other, ctx);
  _obm_py_trace_remove(p);
}

void _obm_py_trace_lost(void) {
  T.lost++;
}

/* ---- start, stop, clear -------------------------------------------------------------------- */

/* Frees every table; returns the code objects the stacks referenced (a libc array of
 * *ncodes), for the caller to release once the hooks no longer see the old tables. */
static PyObject **tables_release(size_t *ncodes) {
  PyObject **codes = malloc((T.nframes ? T.nframes : 1) * sizeof *codes);
  *ncodes = 0;
  if (codes != NULL)
    for (size_t i = 0; i < T.nframes; i++)
      codes[(*ncodes)++] = T.frames[i].code;
  /* else: the references leak rather than being dropped while the hooks may run */
  for (size_t i = 0; T.pages != NULL && i <= T.pages_mask; i++)
    free(T.pages[i].record);
  free(T.pages);
  free(T.stacks);
  free(T.stack_index);
  free(T.frames);
  free(T.instrs);
  free(T.site_cache);
  free(T.huge);
  T.pages = NULL;
  T.stacks = NULL;
  T.stack_index = NULL;
  T.frames = NULL;
  T.instrs = NULL;
  T.site_cache = NULL;
  T.huge = NULL;
  T.npages = T.nempty_pages = T.records_bytes = T.ntraces = T.nframes = T.nhuge = T.huge_capacity =
      T.frames_capacity = 0;
  T.nstacks = T.stacks_capacity = 0;
  T.traced_bytes = T.peak_bytes = T.recorded_bytes = 0;
  T.peak_next = peak_next_after(0);
  T.lost = 0;
  memset(T.filter, 0, sizeof T.filter);
  return codes;
}

static void codes_drop(PyObject **codes, size_t ncodes) {
  for (size_t i = 0; i < ncodes; i++)
    Py_DECREF(codes[i]);
  free(codes);
}

static int tables_alloc(void) {
  T.site_cache = calloc(SITE_CACHE, sizeof *T.site_cache);
  if (T.site_cache == NULL || pages_alloc(1024) < 0 || stack_index_grow() < 0) return -1;
  return 0;
}

static void timeline_release(void) {
  free(T.samples);
  free(T.gc_events);
  T.samples = NULL;
  T.gc_events = NULL;
  T.nsamples = T.samples_capacity = T.ngc_events = T.gc_events_capacity = 0;
}

/* gc.callbacks entry: ("start" | "stop", {"generation", "collected", "uncollectable"}). */
static PyObject *gc_callback(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *phase, *info;
  if (!PyArg_ParseTuple(args, "UO!", &phase, &PyDict_Type, &info)) return NULL;
  if (!T.tracing) Py_RETURN_NONE;
  uint64_t now = now_ns();
  if (PyUnicode_CompareWithASCIIString(phase, "start") == 0) {
    T.gc_start_ns = now;
    Py_RETURN_NONE;
  }
  if (T.gc_start_ns == 0) Py_RETURN_NONE; /* a stop without its start (start() in between) */
  Py_ssize_t field[3] = {-1, -1, -1};
  static const char *const names[3] = {"generation", "collected", "uncollectable"};
  for (int i = 0; i < 3; i++) {
    PyObject *value = PyDict_GetItemString(info, names[i]); /* borrowed */
    if (value != NULL && PyLong_Check(value)) field[i] = PyLong_AsSsize_t(value);
    if (field[i] == -1 && PyErr_Occurred()) return NULL;
  }
  if (reserve((void **)&T.gc_events, &T.gc_events_capacity, T.ngc_events, sizeof *T.gc_events) == 0)
    T.gc_events[T.ngc_events++] =
        (gc_event_t){(double)(T.gc_start_ns - T.start_ns) / 1e9,
                     (double)(now - T.gc_start_ns) / 1e9, (int)field[0], field[1], field[2]};
  T.gc_start_ns = 0;
  Py_RETURN_NONE;
}

static PyMethodDef gc_callback_def = {"_obmem_gc_callback", gc_callback, METH_VARARGS,
                                      "obmem's timeline: records each collection"};

static int gc_callbacks_change(int add) {
  PyObject *gc = PyImport_ImportModule("gc");
  if (gc == NULL) return -1;
  PyObject *callbacks = PyObject_GetAttrString(gc, "callbacks");
  Py_DECREF(gc);
  if (callbacks == NULL) return -1;
  int result = 0;
  if (add) {
    if (T.gc_callback == NULL) T.gc_callback = PyCFunction_New(&gc_callback_def, NULL);
    result = T.gc_callback == NULL ? -1 : PyList_Append(callbacks, T.gc_callback);
  } else if (T.gc_callback != NULL) {
    Py_ssize_t i = PySequence_Index(callbacks, T.gc_callback);
    if (i >= 0)
      result = PySequence_DelItem(callbacks, i);
    else
      PyErr_Clear(); /* someone took it out already */
  }
  Py_DECREF(callbacks);
  return result;
}

PyObject *_obm_py_trace_start(PyObject *module, PyObject *args, PyObject *kwargs) {
  (void)module;
  static char *keywords[] = {"nframe", "sample", "seed", "timeline_interval_ms", NULL};
  int nframe = 1;
  long long sample = 0;
  unsigned long long seed = 0;
  double interval_ms = 10.0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|i$LKd:start", keywords, &nframe, &sample, &seed,
                                   &interval_ms))
    return NULL;
  if (sample < 0) {
    PyErr_SetString(PyExc_ValueError, "sample must be >= 0 (bytes; 0: exact tracing)");
    return NULL;
  }
  if (nframe < 1 || nframe > MAX_NFRAME) {
    PyErr_Format(PyExc_ValueError, "the number of frames must be in range [1; %d]", MAX_NFRAME);
    return NULL;
  }
  if (!(interval_ms >= 0)) {
    PyErr_SetString(PyExc_ValueError, "timeline_interval_ms must be >= 0 (0: no samples)");
    return NULL;
  }
  if (!_obm_py_frames_supported()) {
    PyErr_Format(PyExc_RuntimeError,
                 "obmem.start(): tracing reads CPython's internal frames, whose layout this "
                 "module knows for 3.11 and 3.12 only (this is %s)",
                 Py_GetVersion());
    return NULL;
  }
  if (T.tracing) { /* as tracemalloc: a second start() changes the limit, keeps the traces */
    if ((uint64_t)sample != T.sample_bytes) {
      PyErr_SetString(PyExc_ValueError, "obmem.start(): already tracing with another sample "
                                        "mean (stop() first: exact and sampled traces do not mix)");
      return NULL;
    }
    T.limit = nframe;
    Py_RETURN_NONE;
  }
  if (tables_alloc() < 0) {
    size_t ncodes;
    PyObject **codes = tables_release(&ncodes);
    codes_drop(codes, ncodes);
    return PyErr_NoMemory();
  }
  T.limit = nframe;
  T.start_ns = now_ns();
  T.sample_bytes = (uint64_t)sample;
  T.sample_rng = seed != 0 ? seed : T.start_ns | 1;
  if (T.sample_bytes != 0) _obm_py_trace_sample_left = sample_draw();
  T.interval_ns = (uint64_t)(interval_ms * 1e6);
  T.countdown = 1;
  T.gc_start_ns = 0;
  timeline_release();
  static int atfork_registered;
  if (!atfork_registered)
    atfork_registered =
        pthread_atfork(pending_lock_take, pending_lock_give, pending_lock_give) == 0;
  pending_apply_slow(1); /* frees queued in an earlier session */
  T.tracing = 1;
  if (T.interval_ns) timeline_sample(T.start_ns);
  if (_obm_py_allocator_set_traced(T.sample_bytes != 0 ? 2 : 1) < 0) goto fail;
  if (gc_callbacks_change(1) < 0) {
    (void)_obm_py_allocator_set_traced(0);
    goto fail;
  }
  Py_RETURN_NONE;
fail:
  T.tracing = 0;
  size_t ncodes;
  PyObject **codes = tables_release(&ncodes);
  codes_drop(codes, ncodes);
  return NULL;
}

int _obm_py_trace_stop(void) {
  if (!T.tracing) return 0;
  if (_obm_py_allocator_set_traced(0) < 0) return -1;
  T.tracing = 0;
  size_t ncodes;
  PyObject **codes = tables_release(&ncodes);
  codes_drop(codes, ncodes); /* may free code objects: the hooks are off now */
  if (gc_callbacks_change(0) < 0) return -1;
  return 0;
}

PyObject *_obm_py_trace_stop_py(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (_obm_py_trace_stop() < 0) return NULL;
  Py_RETURN_NONE;
}

PyObject *_obm_py_trace_clear(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (!T.tracing) Py_RETURN_NONE;
  T.tracing = 0; /* the hooks ignore everything while the tables change */
  size_t ncodes;
  PyObject **codes = tables_release(&ncodes);
  int failed = tables_alloc() < 0;
  T.tracing = !failed;
  codes_drop(codes, ncodes); /* frees seen by the new, empty tables: ignored */
  if (failed) {
    codes = tables_release(&ncodes);
    codes_drop(codes, ncodes);
    (void)_obm_py_trace_stop();
    return PyErr_NoMemory();
  }
  Py_RETURN_NONE;
}

PyObject *_obm_py_trace_is_tracing(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyBool_FromLong(T.tracing);
}

PyObject *_obm_py_trace_limit(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyLong_FromLong(T.tracing ? T.limit : 1);
}

PyObject *_obm_py_trace_sampling(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyLong_FromUnsignedLongLong(T.tracing ? T.sample_bytes : 0);
}

PyObject *_obm_py_trace_memory(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (!T.tracing) return Py_BuildValue("(ii)", 0, 0);
  pending_apply();
  return Py_BuildValue("(KK)", (unsigned long long)T.traced_bytes,
                       (unsigned long long)T.peak_bytes);
}

PyObject *_obm_py_trace_reset_peak(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (T.tracing) {
    pending_apply();
    T.peak_bytes = T.traced_bytes;
    peak_record();
  }
  Py_RETURN_NONE;
}

PyObject *_obm_py_trace_self_memory(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  size_t bytes = 0;
  if (T.tracing)
    bytes = (T.pages_mask + 1) * sizeof *T.pages + T.records_bytes +
            T.stacks_capacity * sizeof *T.stacks +
            (T.stack_index_mask + 1) * sizeof *T.stack_index +
            T.frames_capacity * (sizeof *T.frames + sizeof *T.instrs) +
            SITE_CACHE * sizeof *T.site_cache + T.samples_capacity * sizeof *T.samples +
            T.gc_events_capacity * sizeof *T.gc_events;
  return PyLong_FromSize_t(bytes);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

/* The frame tuple (filename, lineno) of frames[index]; the function name goes to names. */
static PyObject *frame_tuple(size_t index, PyObject *names) {
  obm_py_frame_t *f = &T.frames[index];
  if (f->line == -2) f->line = _obm_py_frames_line(f->code, f->offset);
  PyCodeObject *code = (PyCodeObject *)f->code;
  PyObject *frame = Py_BuildValue("(Oi)", code->co_filename, f->line < 0 ? 0 : f->line);
  if (frame == NULL) return NULL;
  if (PyDict_SetDefault(names, frame, code->co_name) == NULL) {
    Py_DECREF(frame);
    return NULL;
  }
  return frame;
}

/* The traceback tuple of stack `id`, most recent frame first, as _tracemalloc gives it. */
static PyObject *stack_tuple(uint32_t id, PyObject *names) {
  uint32_t n = T.stacks[id].nframe, first = T.stacks[id].first;
  if (n == 0) return Py_BuildValue("((si))", "<unknown>", 0);
  PyObject *tuple = PyTuple_New(n);
  if (tuple == NULL) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    PyObject *frame = frame_tuple(first + i, names); /* T.frames may move: index again */
    if (frame == NULL) {
      Py_DECREF(tuple);
      return NULL;
    }
    PyTuple_SET_ITEM(tuple, i, frame);
  }
  return tuple;
}

typedef struct snap_item_s {
  uint64_t size, count; /* count traces of size bytes in all (peak: divided evenly) */
  uint32_t stack;
} snap_item_t;

/* Appends count traces (0, size, traceback, nframe) summing to `bytes`, sharing two tuples. */
static int append_traces(PyObject *list, PyObject *traceback, uint32_t nframe, uint64_t bytes,
                         uint64_t count) {
  uint64_t q = bytes / count, r = bytes % count;
  for (int part = 0; part < 2; part++) {
    uint64_t k = part == 0 ? r : count - r;
    if (k == 0) continue;
    PyObject *trace = Py_BuildValue("(iKOI)", 0, (unsigned long long)(q + (part == 0)), traceback,
                                    (unsigned)nframe);
    if (trace == NULL) return -1;
    for (uint64_t j = 0; j < k; j++)
      if (PyList_Append(list, trace) < 0) {
        Py_DECREF(trace);
        return -1;
      }
    Py_DECREF(trace);
  }
  return 0;
}

/* _raw_snapshot(peak=False) -> (traces, names): traces as tracemalloc's _get_traces() gives
 * them, names {(filename, lineno): function name}.  peak: the stacks live at the recorded
 * peak, each stack's bytes divided evenly over its blocks (their own sizes are not kept). */
PyObject *_obm_py_trace_raw_snapshot(PyObject *module, PyObject *args) {
  (void)module;
  int peak = 0;
  if (!PyArg_ParseTuple(args, "|p:_raw_snapshot", &peak)) return NULL;
  PyObject *list = PyList_New(0), *names = PyDict_New();
  if (list == NULL || names == NULL) goto fail;
  if (!T.tracing) return Py_BuildValue("(NN)", list, names);
  pending_apply();
  if (peak && T.traced_bytes == T.peak_bytes && T.traced_bytes != T.recorded_bytes)
    peak_record(); /* at the peak now: exact */
  /* Copy first: building the Python objects allocates, which changes the tables. */
  size_t n = peak ? T.nstacks : T.ntraces, k = 0;
  snap_item_t *items = malloc((n ? n : 1) * sizeof *items);
  if (items == NULL) {
    PyErr_NoMemory();
    goto fail;
  }
  if (peak) {
    for (uint32_t id = 0; id < T.nstacks; id++)
      if (T.stacks[id].peak_count)
        items[k++] = (snap_item_t){T.stacks[id].peak_bytes, T.stacks[id].peak_count, id};
  } else {
    for (size_t i = 0; i <= T.pages_mask; i++) {
      const page_record_t *r = T.pages[i].record;
      for (unsigned j = 0; r != NULL && j < r->ntraces && k < n; j++)
        items[k++] = (snap_item_t){entry_size(T.pages[i].page, &r->entries[j]), 1,
                                   r->entries[j].stack_offset >> 7};
    }
  }
  uint32_t nstacks = T.nstacks;
  PyObject **tracebacks = calloc(nstacks ? nstacks : 1, sizeof *tracebacks);
  if (tracebacks == NULL) {
    free(items);
    PyErr_NoMemory();
    goto fail;
  }
  /* The snapshot's own objects are not traced (tracemalloc traces its snapshots: a snapshot
   * of a large heap would make the peak).  The collector stays off meanwhile, so that no
   * finalizer runs Python code whose allocations would be missed. */
  int failed = 0, gc_was_enabled = PyGC_Disable();
  T.paused = 1;
  for (size_t i = 0; i < k && !failed; i++) {
    uint32_t id = items[i].stack;
    if (tracebacks[id] == NULL) tracebacks[id] = stack_tuple(id, names);
    failed = tracebacks[id] == NULL || append_traces(list, tracebacks[id], T.stacks[id].nframe,
                                                     items[i].size, items[i].count) < 0;
  }
  T.paused = 0;
  if (gc_was_enabled) PyGC_Enable();
  for (uint32_t id = 0; id < nstacks; id++)
    Py_XDECREF(tracebacks[id]);
  free(tracebacks);
  free(items);
  if (failed) goto fail;
  return Py_BuildValue("(NN)", list, names);
fail:
  Py_XDECREF(list);
  Py_XDECREF(names);
  return NULL;
}

/* _raw_object_traceback(obj) -> (traceback, names) or None. */
PyObject *_obm_py_trace_raw_object(PyObject *module, PyObject *obj) {
  (void)module;
  if (!T.tracing) Py_RETURN_NONE;
  uintptr_t ptr = (uintptr_t)obj - _obm_py_pre_header_size(Py_TYPE(obj));
  trace_entry_t *e = trace_find(ptr, NULL);
  if (e == NULL) Py_RETURN_NONE;
  uint32_t id = e->stack_offset >> 7;
  PyObject *names = PyDict_New();
  if (names == NULL) return NULL;
  PyObject *traceback = stack_tuple(id, names);
  if (traceback == NULL) {
    Py_DECREF(names);
    return NULL;
  }
  return Py_BuildValue("(NN)", traceback, names);
}

/* _raw_timeline() -> (interval_ms, samples, gc_events) as lists of tuples. */
PyObject *_obm_py_trace_raw_timeline(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  size_t nsamples = T.nsamples, nevents = T.ngc_events;
  PyObject *samples = PyList_New((Py_ssize_t)nsamples), *events = PyList_New((Py_ssize_t)nevents);
  if (samples == NULL || events == NULL) goto fail;
  /* T.samples may grow while the tuples are made: index it again each time */
  for (size_t i = 0; i < nsamples; i++) {
    sample_t s = T.samples[i];
    PyObject *t = Py_BuildValue("(dKKK)", s.time, (unsigned long long)s.traced_bytes,
                                (unsigned long long)s.obmem_bytes, (unsigned long long)s.rss_bytes);
    if (t == NULL) goto fail;
    PyList_SET_ITEM(samples, (Py_ssize_t)i, t);
  }
  for (size_t i = 0; i < nevents; i++) {
    gc_event_t g = T.gc_events[i];
    PyObject *t =
        Py_BuildValue("(dinnd)", g.time, g.generation, g.collected, g.uncollectable, g.duration);
    if (t == NULL) goto fail;
    PyList_SET_ITEM(events, (Py_ssize_t)i, t);
  }
  return Py_BuildValue("(dNN)", (double)T.interval_ns / 1e6, samples, events);
fail:
  Py_XDECREF(samples);
  Py_XDECREF(events);
  return NULL;
}
