/* stacks.c — native stacks for the tracer: the walk, and interning into frame and stack ids.
 *
 * Walk: frame pointers from the hook's caller's frame (each frame is [saved rbp, return address]);
 * every frame address is checked to lie in the thread's stack mapping, 8-aligned and above the
 * previous one, so a broken chain (code built without frame pointers) ends the walk instead of
 * reading wild memory.  In AUTO mode a chain that breaks (a non-null, invalid link) is
 * continued by the learned walk below, else walked again with libunwind's unw_backtrace, found
 * with dlopen at start (libunwind.so.8: no link dependency for programs that do not trace),
 * and trimmed to start at the same first frame.
 *
 * Learned walk (code without frame pointers): at a call site, a function's canonical frame
 * address (CFA: the caller's stack pointer after the return; the return address is at CFA - 8)
 * is the stack pointer plus a constant, unless the function allocates on the stack
 * dynamically.  A return address the table does not know gets its constant (or its mark as
 * the outermost frame) from its object's call frame information (cfi.c, learn_from_cfi),
 * trusted at once; where the CFI has none (a CFA from rbp, an expression), each libunwind walk
 * teaches that constant for each return address on it (the
 * slot of the next return address, found by scanning up from the frame's stack pointer), and
 * which return address is the outermost; a return address seen twice with the same constant
 * (and never with another) is trusted, and a broken chain whose frames are all trusted is
 * continued from the table, each step checked (inside the stack, above the last, a return
 * address in code), without libunwind.  A frame that allocates dynamically shows a constant
 * that varies and is never trusted; one that did the same twice and then differs gives wrong
 * outer frames where the checks do not catch it (the price of not calling libunwind per event).
 *
 * Interning: a stack is a node of a trie, (parent stack id, frame id) -> stack id, so a stack
 * record in the file is two small numbers; frames are interned return address -> frame id.
 * Both tables are open-addressing hash tables in raw mappings, filled with CAS and never
 * shrunk: a slot's key is claimed first, then the id is assigned, the definition filled and
 * marked ready, and the id published; a reader that finds its key waits for the id.
 * A per-thread direct-mapped cache keyed by a 64-bit hash of the whole return-address list
 * (computed during the walk: one multiply per frame, one mix at the end) answers repeated
 * stacks without touching the trie (a hash collision between two different
 * stacks of the same depth would merge them: 2^-64 per pair, accepted).
 * A stack the cache does not know is interned from its outermost frame; the frames it shares
 * at the outer end with the thread's previous interned stack (kept with the id of each of
 * its suffixes) take their ids from there, so only the new inner part touches the tables
 * (a recursive program makes a new stack per call path but shares most of it with the last).
 * A stack id's first NCHILDREN children are kept with it (frame id << 32 | child id, one word
 * each, filled once by CAS), only the others in the big table: a lookup or a creation of
 * (parent, frame) reads the parent's words, next to those of the ids made around the
 * parent's, and most never touch the table (a random miss).  Two threads creating the same
 * child at once make two ids; the loser's stays defined and unused.
 *
 * A deep stack (a recursive program: a new call path per allocation, each sharing most of its
 * frames with the one before) is not walked to its end: a thread keeps its latest interned
 * stack with, for each frame, the stack slot its return address was read from (and the frame
 * link below it, for a frame-pointer frame).  A walk that reads the same return address from
 * the same slot, with the same link, as one of that stack's frames, and finds the words of
 * the frames outside it unchanged (one load and compare each), would read the same frames from
 * there out (the walk is a function of the words it reads): it stops there and interns only
 * its new inner frames on top of that frame's id (from a per-thread cache when the same inner
 * frames were seen on top of it before).  Shallow stacks (fewer than MATCH_DEPTH frames) are
 * walked whole and answered by the cache: cheaper than the search.  A thread keeps its recent
 * shallow walks with their ids, by start frame (walk_memo_t): a walk from the same frame
 * whose words are unchanged (one load and compare each, an invalid link only checked still
 * invalid) would find the same frames, so it takes the kept id without walking, hashing or
 * probing the cache (a program that allocates from a few sites pays that instead of a
 * table lookup and the checks per learned frame).  A thread whose walks seldom repeat pauses
 * the memo for a while.
 *
 * Invariants: ids are dense, 1 <= id < n*_ids; def[id].ready => def fields final;
 *             stack def: a (parent) < id, 1 <= b (frame) < nframe_ids.
 */
#define _GNU_SOURCE
#include "trace/trace_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FRAME_IDS     (1u << 18)
#define FRAME_SLOTS   (2u * FRAME_IDS)
#define STACK_IDS     (1u << 22) /* a deep recursive program makes a node per call path */
#define STACK_SLOTS   (2u * STACK_IDS)
#define CACHE_ENTRIES 512u /* per thread slot */
#define ID_LOST       UINT32_MAX
#define NCHILDREN     4u
#define FRAME_CACHE   64u  /* per thread slot: frame ids by return address */
#define INNER_CACHE   1024u /* per thread slot: (stack id, inner frames) -> stack ids */
#define INNER_FRAMES  6u
#define MATCH_DEPTH                                                                                \
  10u /* the latest stack is searched when it has this many frames */ /* a recursive function's    \
                                                                         frame: its own call and   \
                                                                         two recursive ones */

typedef struct slot_s {
  _Atomic uint64_t key; /* 0 = empty; frames: address; stacks: parent << 32 | frame */
  _Atomic uint32_t id;  /* 0 while being created; ID_LOST when the id space was full */
  uint32_t pad;
} slot_t;

/* The learned walk's table: return address -> (CFA - stack pointer) << 9 | outermost << 8 |
 * times seen (1..255), or VARIES (count 0); open addressing, filled with CAS, never emptied in a
 * session. */
#define LEARN_SLOTS  (1u << 16)         /* every return address walked through code without FP */
#define LEARN_VARIES ((uint64_t)1 << 9) /* count 0: fails the trust test like "unknown" */
#define LEARN_TRUST  2                  /* times seen with the same constant before it is used */
/* count 0: the call frame information has no usable rule for it (libunwind's walks teach it) */
#define LEARN_NOCFI ((uint64_t)2 << 9)
#define LEARN_EXACT 0xffu /* the count of a rule read from the CFI: trusted */
typedef struct learn_slot_s {
  _Atomic uint64_t pc;
  _Atomic uint64_t info;
} learn_slot_t;

/* A thread's recent shallow walks and their stack ids, by where they started: the walk from
 * `frame` (whose return address is `first`) read words[i].word at words[i].addr (a frame-pointer
 * frame's valid link and return address, a learned frame's return address, and the words of
 * the frame where a valid chain ended), found the link at `broken` (0: none) invalid (zero when
 * broken_zero) and its stack's id was `id`.  A walk is a function of its start, the words it
 * reads (an invalid link only by being invalid, and zero or not), the stack's top, the
 * session's options, the code map and the trusted entries of the learned table (which only
 * ever turn VARIES; an untrusted one fails the walk, which is then not kept): a walk from the
 * same frame with those unchanged (compared: hi, and memo_gen, which counts both the code map's
 * refreshes and the trusted entries turned VARIES)
 * and each word still at its address (one load and compare each; the invalid link still
 * invalid) would find the same frames, so its id is the one kept here (the program's code
 * without frame pointers keeps anything in rbp, so the link that breaks the chain varies).
 * Invariant: frame == 0 (empty) or words[0..nwords).addr and broken (when not 0) lie in
 * [frame, hi) of the thread's stack. */
#define WALK_MEMOS  8u
#define WALK_WORDS  (2u * MATCH_DEPTH) /* a shallow stack's (< MATCH_DEPTH frames) */
#define WALK_MISSES 64u                /* walks in a row not answered by the memo: it pauses */
#define WALK_PAUSE  1024u              /* for this many walks */
typedef struct walk_memo_s {
  uintptr_t frame, first, hi, broken; /* frame 0: empty */
  uint64_t gen;                       /* st.memo_gen before the walk */
  uint32_t id, nwords, broken_zero;
  struct {
    uintptr_t addr, word;
  } words[WALK_WORDS];
} walk_memo_t;

typedef int unw_backtrace_fn(void **buffer, int size);

/* Under ThreadSanitizer libunwind's thread-exit destructor runs after TSan has torn the thread
 * down and crashes in its mutex interceptor: a TSan build walks frame pointers only. */
#if defined(__SANITIZE_THREAD__)
#define OBM_TRACE_TSAN 1
#else
#define OBM_TRACE_TSAN 0
#endif

/* The executable segments of the loaded objects: a frame-pointer walk stops at a return
 * address outside them (a frame without a frame pointer left a value that is not a link).
 * Two copies: the writer fills the one not in use and publishes it (_obm_trace_code_refresh);
 * a walk that reads a copy being refilled at worst ends early. */
#define CODE_RANGES 256
typedef struct code_map_s {
  uint32_t n;
  uint64_t gen;                               /* refreshes so far when this copy was filled */
  uintptr_t lo[CODE_RANGES], hi[CODE_RANGES]; /* sorted by lo */
} code_map_t;

/* A thread's latest code ranges found, most recent first (frames are mostly in obmem, the
 * program and the C library), valid for the code map of generation gen. */
#define CODE_CACHED 4
typedef struct code_cache_s {
  uint64_t gen;
  uintptr_t lo[CODE_CACHED], hi[CODE_CACHED];
} code_cache_t;

/* A thread's latest interned stack, outermost frame first: pcs[j] is its frame j (0 = the
 * outermost), ids[j] the id of the stack of frames 0..j, so a new stack that shares the
 * outer k frames continues from ids[k - 1].  When `matchable`, slots[j] is the address the
 * walk read pcs[j] from, and links[j] the frame link it read just below it (| 1) for a
 * frame-pointer frame, 0 for a learned one: a later walk that reads the same return address
 * at the same slot, with the same link, from a stack whose slots 0..j-1 still hold the same
 * words, would find the same frames from there out (the walk is a function of the words it
 * reads), so it stops there (see _obm_trace_stack_id).  lo, hi: the stack the slots are in;
 * code_gen: the code map they were checked against. */
typedef struct last_stack_s {
  code_cache_t code; /* not part of the stack: the walk's code ranges, kept per thread */
  walk_memo_t walks[WALK_MEMOS]; /* not part of it either: recent shallow walks, by frame */
  uint32_t walk_misses;          /* walks since the latest one answered by `walks` */
  uint32_t walk_pause;           /* walks left that do not use `walks` */
  uint32_t n;        /* frames with pcs and ids; 0 when none */
  int matchable;     /* slots and links valid, the walk ended at the outermost frame */
  uintptr_t lo, hi;
  uint64_t code_gen;
  struct {
    uintptr_t pc;
    uint32_t id;
  } frame_ids[FRAME_CACHE]; /* the thread's recent frames' ids, direct-mapped by address */
  struct {
    uint64_t hash;              /* of the inner frames and the id of the stack they were called
                                   from (0: empty) */
    uint32_t ids[INNER_FRAMES]; /* ids of the stacks ending in each, outermost first */
  } inner[INNER_CACHE];         /* up to INNER_FRAMES frames on top of a matched stack */
  uint32_t ids[OBM_TRACE_MAX_FRAMES];
  uintptr_t pcs[OBM_TRACE_MAX_FRAMES];
  uintptr_t slots[OBM_TRACE_MAX_FRAMES];
  uintptr_t links[OBM_TRACE_MAX_FRAMES];
} last_stack_t;

/* A walk's search for the latest stack's frames (innermost first, so candidates go from the
 * latest stack's last frame toward its first): j is the next candidate index, -1 when none
 * is left; frames 0..ok-1 of the latest stack hold the same words, frame bad does not
 * (bad = n when none was found changed).  found: the walk's frame `at` is the latest
 * stack's frame `j`. */
typedef struct match_s {
  const last_stack_t *last;
  int j, ok, bad, found;
  size_t at, max;
} match_t;

/* Whether the walk's frame i (return address pc read at slot, link as in last_stack_t) is a
 * frame of the latest stack whose outer frames are unchanged: then m->found. */
static inline int match_frame(match_t *m, size_t i, uintptr_t slot, uintptr_t pc, uintptr_t link) {
  const last_stack_t *l = m->last;
  int j = m->j;
  while (j >= 0 && l->slots[j] < slot)
    j--;
  m->j = j;
  if (obm_likely(j < 0 || l->slots[j] != slot || l->pcs[j] != pc || l->links[j] != link)) return 0;
  if (i + 1 + (size_t)j > m->max || j > m->bad) return 0;
  int k = m->ok; /* the outer frames' words, once each per walk */
  for (; k < j; k++) {
    const uintptr_t *w = (const uintptr_t *)l->slots[k];
    if (w[0] != l->pcs[k]) break;
    if (obm_unlikely(l->links[k] != 0) && w[-1] != (l->links[k] ^ 1)) break;
  }
  m->ok = k;
  if (k < j) {
    m->bad = k;
    return 0;
  }
  m->found = 1;
  m->at = i;
  return 1;
}

static struct {
  code_map_t maps[2];
  _Atomic(code_map_t *) current;
  slot_t *frame_slots, *stack_slots;
  obm_trace_def_t *frame_defs, *stack_defs;
  obm_trace_cache_entry_t *cache;          /* OBM_TRACE_MAX_THREADS * CACHE_ENTRIES */
  last_stack_t *last;                      /* OBM_TRACE_MAX_THREADS */
  learn_slot_t *learned;                   /* LEARN_SLOTS */
  _Atomic uint64_t (*children)[NCHILDREN]; /* per stack id: its first children, frame << 32 | id */
  _Atomic uint32_t nframe_ids, nstack_ids;
  _Atomic uint64_t lost;
  _Atomic uint64_t memo_gen; /* trusted entries of `learned` that turned VARIES and the code
                                map's refreshes, each counted after the change is published:
                                walk_memo_t */
  uint32_t max_frames;
  obm_trace_stacks_t mode;
  unw_backtrace_fn *unw_backtrace;
} st;

static size_t frame_slots_bytes(void) {
  return FRAME_SLOTS * sizeof(slot_t);
}
static size_t stack_slots_bytes(void) {
  return STACK_SLOTS * sizeof(slot_t);
}
static size_t frame_defs_bytes(void) {
  return (FRAME_IDS + OBM_TRACE_MAX_THREADS) * sizeof(obm_trace_def_t);
}
static size_t stack_defs_bytes(void) {
  return (STACK_IDS + OBM_TRACE_MAX_THREADS) * sizeof(obm_trace_def_t);
}
static size_t cache_bytes(void) {
  return (size_t)OBM_TRACE_MAX_THREADS * CACHE_ENTRIES * sizeof(obm_trace_cache_entry_t);
}
static size_t last_bytes(void) {
  return (size_t)OBM_TRACE_MAX_THREADS * sizeof(last_stack_t);
}
static size_t learned_bytes(void) {
  return LEARN_SLOTS * sizeof(learn_slot_t);
}
static size_t children_bytes(void) {
  return (STACK_IDS + OBM_TRACE_MAX_THREADS) * NCHILDREN * sizeof(uint64_t);
}

int _obm_trace_stacks_init(uint32_t max_frames, obm_trace_stacks_t mode) {
  st.max_frames = max_frames;
  st.mode = mode;
  if (!st.frame_slots) {
    st.frame_slots = _obm_os_map(frame_slots_bytes(), 0);
    st.stack_slots = _obm_os_map(stack_slots_bytes(), 0);
    st.frame_defs = _obm_os_map(frame_defs_bytes(), 0);
    st.stack_defs = _obm_os_map(stack_defs_bytes(), 0);
    st.cache = _obm_os_map(cache_bytes(), 0);
    st.last = _obm_os_map(last_bytes(), 0);
    st.children = _obm_os_map(children_bytes(), 0);
    st.learned = _obm_os_map(learned_bytes(), 0);
    if (!st.frame_slots || !st.stack_slots || !st.frame_defs || !st.stack_defs || !st.cache ||
        !st.last || !st.children || !st.learned) {
      if (st.frame_slots) _obm_os_unmap(st.frame_slots, frame_slots_bytes());
      if (st.stack_slots) _obm_os_unmap(st.stack_slots, stack_slots_bytes());
      if (st.frame_defs) _obm_os_unmap(st.frame_defs, frame_defs_bytes());
      if (st.stack_defs) _obm_os_unmap(st.stack_defs, stack_defs_bytes());
      if (st.cache) _obm_os_unmap(st.cache, cache_bytes());
      if (st.last) _obm_os_unmap(st.last, last_bytes());
      if (st.children) _obm_os_unmap(st.children, children_bytes());
      if (st.learned) _obm_os_unmap(st.learned, learned_bytes());
      st.frame_slots = st.stack_slots = NULL;
      st.frame_defs = st.stack_defs = NULL;
      st.cache = NULL;
      st.last = NULL;
      st.children = NULL;
      st.learned = NULL;
      return ENOMEM;
    }
  } else {
    _obm_trace_stacks_reset();
  }
  atomic_store(&st.nframe_ids, 1);
  atomic_store(&st.nstack_ids, 1);
  atomic_store(&st.lost, 0);
  if ((mode == OBM_TRACE_STACKS_AUTO || mode == OBM_TRACE_STACKS_UNWIND) && !st.unw_backtrace &&
      !OBM_TRACE_TSAN) {
    /* at start, outside any hook: dlopen may allocate */
    void *lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (lib) st.unw_backtrace = (unw_backtrace_fn *)dlsym(lib, "unw_backtrace");
  }
  _obm_trace_code_refresh();
  if (mode == OBM_TRACE_STACKS_UNWIND && !st.unw_backtrace) return ENOENT;
  return 0;
}

/* Zeroes the tables (the next session starts from id 1); called while no hook records. */
void _obm_trace_stacks_reset(void) {
  _obm_os_decommit(st.frame_slots, frame_slots_bytes());
  _obm_os_decommit(st.stack_slots, stack_slots_bytes());
  _obm_os_decommit(st.frame_defs, frame_defs_bytes());
  _obm_os_decommit(st.stack_defs, stack_defs_bytes());
  _obm_os_decommit(st.cache, cache_bytes());
  _obm_os_decommit(st.last, last_bytes());
  _obm_os_decommit(st.children, children_bytes());
  _obm_os_decommit(st.learned, learned_bytes());
}

uint32_t _obm_trace_nstacks(void) {
  uint32_t n = atomic_load_explicit(&st.nstack_ids, memory_order_acquire);
  return n > STACK_IDS ? STACK_IDS : n;
}
uint32_t _obm_trace_nframes(void) {
  uint32_t n = atomic_load_explicit(&st.nframe_ids, memory_order_acquire);
  return n > FRAME_IDS ? FRAME_IDS : n;
}
const obm_trace_def_t *_obm_trace_stack_def(uint32_t id) {
  return &st.stack_defs[id];
}
const obm_trace_def_t *_obm_trace_frame_def(uint32_t id) {
  return &st.frame_defs[id];
}
uint64_t _obm_trace_stacks_lost(void) {
  return atomic_load_explicit(&st.lost, memory_order_relaxed);
}

/* A new id defined as (a, b); ID_LOST when the id space is full. */
static uint32_t new_id(_Atomic uint32_t *next_id, uint32_t max_ids, obm_trace_def_t *defs,
                       uint32_t a, uint64_t b) {
  if (atomic_load_explicit(next_id, memory_order_relaxed) >= max_ids) return ID_LOST;
  uint32_t id = atomic_fetch_add(next_id, 1);
  if (id >= max_ids + OBM_TRACE_MAX_THREADS - 1) return ID_LOST; /* never: headroom */
  defs[id].a = a;
  defs[id].b = b;
  atomic_store_explicit(&defs[id].ready, 1, memory_order_release);
  return id;
}

/* Finds key's id in a table, or creates it when `create`; ID_LOST when the id space is full,
 * 0 when not found and not created. */
OBM_INLINE uint32_t probe_table(slot_t *slots, uint32_t nslots, _Atomic uint32_t *next_id,
                                uint32_t max_ids, obm_trace_def_t *defs, uint64_t key, uint32_t a,
                                uint64_t b, int create) {
  uint32_t mask = nslots - 1, i = (uint32_t)_obm_mix64(key) & mask;
  for (uint32_t probe = 0; probe < nslots; probe++, i = (i + 1) & mask) {
    slot_t *s = &slots[i];
    uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
    if (k == 0) {
      if (!create) return 0;
      if (atomic_load_explicit(next_id, memory_order_relaxed) >= max_ids) return ID_LOST;
      if (!atomic_compare_exchange_strong(&s->key, &k, key)) {
        if (k != key) continue; /* someone else's key took the slot: keep probing */
      } else {
        uint32_t id = new_id(next_id, max_ids, defs, a, b);
        atomic_store_explicit(&s->id, id, memory_order_release);
        return id;
      }
    }
    if (k == key) {
      uint32_t id;
      while ((id = atomic_load_explicit(&s->id, memory_order_acquire)) == 0)
        __builtin_ia32_pause();
      return id;
    }
  }
  return create ? ID_LOST : 0;
}

static uint32_t intern(slot_t *slots, uint32_t nslots, _Atomic uint32_t *next_id, uint32_t max_ids,
                       obm_trace_def_t *defs, uint64_t key, uint32_t a, uint64_t b) {
  return probe_table(slots, nslots, next_id, max_ids, defs, key, a, b, 1);
}

/* The stack (parent, frame): among the parent's first children, else in the table. */
static uint32_t intern_stack(uint32_t parent, uint32_t frame) {
  _Atomic uint64_t *child = st.children[parent];
  uint32_t made = 0; /* an id made for a word another thread filled first */
  for (uint32_t k = 0; k < NCHILDREN; k++) {
    uint64_t c = atomic_load_explicit(&child[k], memory_order_acquire);
    if (c == 0) {
      if (!made) made = new_id(&st.nstack_ids, STACK_IDS, st.stack_defs, parent, frame);
      if (made == ID_LOST) return ID_LOST;
      if (atomic_compare_exchange_strong(&child[k], &c, (uint64_t)frame << 32 | made)) return made;
    }
    if (c >> 32 == frame) return (uint32_t)c;
  }
  return intern(st.stack_slots, STACK_SLOTS, &st.nstack_ids, STACK_IDS, st.stack_defs,
                (uint64_t)parent << 32 | frame, parent, frame);
}

static int add_code(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  code_map_t *m = arg;
  for (int i = 0; i < info->dlpi_phnum && m->n < CODE_RANGES; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
    uint32_t k = m->n++;
    while (k > 0 && m->lo[k - 1] > lo) { /* insertion: few objects */
      m->lo[k] = m->lo[k - 1];
      m->hi[k] = m->hi[k - 1];
      k--;
    }
    m->lo[k] = lo;
    m->hi[k] = hi;
  }
  return 0;
}

void _obm_trace_code_refresh(void) {
  code_map_t *cur = atomic_load(&st.current),
             *next = cur == &st.maps[0] ? &st.maps[1] : &st.maps[0];
  next->n = 0;
  next->gen = (cur ? cur->gen : 0) + 1;
  dl_iterate_phdr(add_code, next);
  atomic_store_explicit(&st.current, next, memory_order_release);
  atomic_fetch_add_explicit(&st.memo_gen, 1, memory_order_release);
}

/* 1 when pc is in one of c's ranges from the first-th on. */
static inline int in_cached(const code_cache_t *c, uintptr_t pc, int first) {
  for (int i = first; i < CODE_CACHED; i++)
    if (pc - c->lo[i] < c->hi[i] - c->lo[i]) return 1;
  return 0;
}

/* 1 when pc is in a code range (a binary search; the walk tries its cached ranges first), and
 * then c's latest range is pc's. */
static OBM_NOINLINE int is_code_slow(const code_map_t *m, uintptr_t pc, code_cache_t *c) {
  uint32_t lo = 0, hi = m->n;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (m->lo[mid] <= pc)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0 || pc >= m->hi[lo - 1]) return 0;
  memmove(c->lo + 1, c->lo, (CODE_CACHED - 1) * sizeof *c->lo);
  memmove(c->hi + 1, c->hi, (CODE_CACHED - 1) * sizeof *c->hi);
  c->lo[0] = m->lo[lo - 1];
  c->hi[0] = m->hi[lo - 1];
  return 1;
}

/* Whether next, the link read at frame fp, is a frame the walk goes on to: inside the stack
 * (below hi), above fp by 16 bytes or more, 8-aligned. */
static inline int link_valid(uintptr_t fp, uintptr_t next, uintptr_t hi) {
  uintptr_t top = hi - 16;
  return next - (fp + 16) <= top - (fp + 16) && !(next & 7);
}

/* Frame-pointer walk; *hash = the hash of the frames found (hashed as they are read, so the
 * per-thread cache is probed without a second pass); slots[i], links[i] as in last_stack_t.
 * Each frame [next, ret] must lie in the stack [lo, hi), 8-aligned, above the previous one by
 * 16 bytes or more, and ret in code (the thread's latest code ranges, the first two kept in
 * registers, answer almost every frame).  Stops early at a frame of the latest stack that
 * m finds (m->found). */
static inline __attribute__((always_inline)) size_t walk_fp(void *frame, uintptr_t lo, uintptr_t hi,
                                                            uintptr_t *pcs, size_t max, int *broken,
                                                            uint64_t *hash, code_cache_t *cc,
                                                            uintptr_t *last_fp, uintptr_t *slots,
                                                            uintptr_t *links, match_t *m, int rec) {
  const code_map_t *code = atomic_load_explicit(&st.current, memory_order_acquire);
  if (obm_unlikely(!code || !code->n))
    code = NULL; /* no map: every address counts as code */
  else if (obm_unlikely(cc->gen != code->gen))
    *cc = (code_cache_t){.gen = code->gen};
  uintptr_t fp = (uintptr_t)frame, top = hi - 16;
  uintptr_t lo0 = cc->lo[0], size0 = cc->hi[0] - lo0, lo1 = cc->lo[1], size1 = cc->hi[1] - lo1;
  size_t n = 0;
  uint64_t h = 0x9e3779b97f4a7c15ull;
  *broken = 0;
  if (fp < lo || fp > top || (fp & 7)) {
    *broken = 1;
    max = 0;
  }
  while (n < max) {
    const uintptr_t *f = (const uintptr_t *)fp;
    uintptr_t next = f[0], ret = f[1];
    if (obm_unlikely(ret - lo0 >= size0) && ret - lo1 >= size1 && !in_cached(cc, ret, 2)) {
      if (ret == 0) break;
      if (code) {
        if (!is_code_slow(code, ret, cc)) {
          *broken = n > 0;
          break;
        }
        lo0 = cc->lo[0], size0 = cc->hi[0] - lo0, lo1 = cc->lo[1], size1 = cc->hi[1] - lo1;
      }
    }
    pcs[n] = ret;
    slots[n] = fp + 8;
    links[n] = next | 1;
    h = _obm_trace_hash_step(h, ret);
    *last_fp = fp;
    if (rec && m->j >= 0 && match_frame(m, n, fp + 8, ret, next | 1)) return n + 1;
    n++;
    if (obm_unlikely(!link_valid(fp, next, hi))) {
      /* 0: the outermost frame (the clone/start code zeroes rbp), or code without frame
       * pointers that happened to hold 0 in rbp (2: the caller decides); else broken (1) */
      *broken = next != 0 ? 1 : 2;
      break;
    }
    fp = next;
  }
  *hash = h;
  return n;
}

/* libunwind's walk, trimmed to start at first (the first frame of the frame-pointer walk). */
static size_t walk_unwind(uintptr_t first, uintptr_t *pcs, size_t max) {
  void *raw[OBM_TRACE_MAX_FRAMES + 16];
  int n = st.unw_backtrace(
      raw, (int)(max + 16 < OBM_TRACE_MAX_FRAMES + 16 ? max + 16 : OBM_TRACE_MAX_FRAMES + 16));
  int start = -1;
  for (int i = 0; i < n && i < 16; i++)
    if ((uintptr_t)raw[i] == first) {
      start = i;
      break;
    }
  if (start < 0) return 0;
  size_t k = 0;
  for (int i = start; i < n && k < max; i++)
    pcs[k++] = (uintptr_t)raw[i];
  return k;
}

static uint64_t hash_pcs(const uintptr_t *pcs, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n; i++)
    h = _obm_trace_hash_step(h, pcs[i]);
  return h;
}

static inline uint32_t learn_index(uintptr_t pc) {
  return (uint32_t)((pc * 0x9e3779b97f4a7c15ull) >> 40) & (LEARN_SLOTS - 1);
}

/* pc's learned info, or 0 (not learned). */
static inline uint64_t learn_get(uintptr_t pc) {
  uint32_t i = learn_index(pc);
  for (uint32_t probe = 0; probe < 16; probe++, i = (i + 1) & (LEARN_SLOTS - 1)) {
    uint64_t k = atomic_load_explicit(&st.learned[i].pc, memory_order_acquire);
    if (k == pc) return atomic_load_explicit(&st.learned[i].info, memory_order_relaxed);
    if (k == 0) return 0;
  }
  return 0;
}

/* One observation: at return address pc, CFA = stack pointer + offset (outermost: libunwind's
 * walk ended at pc).  Racing observers may lose a count (a slot's claimer and a racing
 * observer each count one: the entry stays a count short), never make a wrong entry trusted
 * without two observations of its constant, and never turn VARIES back (each change is a
 * compare-and-swap from the value it was computed from). */
/* pc's slot in the table, claimed when it had none (*claimed: by this call); NULL when the
 * 16 slots from its place hold other addresses. */
static learn_slot_t *learn_slot(uintptr_t pc, int *claimed) {
  uint32_t i = learn_index(pc);
  for (uint32_t probe = 0; probe < 16; probe++, i = (i + 1) & (LEARN_SLOTS - 1)) {
    learn_slot_t *e = &st.learned[i];
    uint64_t k = atomic_load_explicit(&e->pc, memory_order_acquire);
    *claimed = k == 0 && atomic_compare_exchange_strong(&e->pc, &k, pc);
    if (*claimed || k == pc) return e;
  }
  return NULL;
}

static void learn_put(uintptr_t pc, uint64_t offset, int outermost) {
  uint64_t fresh = offset << 9 | (uint64_t)outermost << 8 | 1;
  int claimed;
  learn_slot_t *e = learn_slot(pc, &claimed);
  if (!e) return;
  uint64_t info = atomic_load_explicit(&e->info, memory_order_relaxed), next;
  do {
    if (info == LEARN_VARIES) return;
    if (info == 0) /* a fresh slot: its claimer counts one, another observer none */
      next = claimed ? fresh : fresh - 1;
    else if (info == LEARN_NOCFI) /* no CFI rule: this is the first observation */
      next = fresh;
    else if (info >> 8 != fresh >> 8)
      next = LEARN_VARIES;
    else if ((info & 0xff) < 0xff)
      next = info + 1;
    else
      return;
  } while (!atomic_compare_exchange_weak_explicit(&e->info, &info, next, memory_order_relaxed,
                                                  memory_order_relaxed));
  /* after the change: a memo kept from a walk that trusted the entry goes stale (a walk that
   * reads the new memo_gen reads the entry VARIES) */
  if (next == LEARN_VARIES && (info & 0xff) >= LEARN_TRUST)
    atomic_fetch_add_explicit(&st.memo_gen, 1, memory_order_release);
}

/* Keeps info as pc's entry unless another thread's came first; the entry. */
static uint64_t learn_keep(uintptr_t pc, uint64_t info) {
  int claimed;
  learn_slot_t *e = learn_slot(pc, &claimed);
  if (!e) return info; /* no room near its place: used, not kept */
  uint64_t cur = 0;
  if (atomic_compare_exchange_strong_explicit(&e->info, &cur, info, memory_order_relaxed,
                                              memory_order_relaxed))
    return info;
  return cur; /* another thread's entry came first */
}

#if defined(DLFO_STRUCT_HAS_EH_DBASE)
/* pc's rule as a table entry (LEARN_NOCFI: none): glibc 2.35's _dl_find_object finds pc's
 * object without a lock (a return address on this thread's stack keeps its object loaded, as
 * libgcc's unwinder assumes too), and its program headers, read from its ELF header at the
 * start of its mapping, the segment that holds .eh_frame_hdr.  dl_iterate_phdr's lock would
 * deadlock: a thread in dlclose holds it while it frees (the free's hook waits for a flush,
 * the flush for this thread's hook). */
static uint64_t cfi_search(uintptr_t pc) {
  struct dl_find_object fo;
  if (_dl_find_object((void *)pc, &fo) != 0 || !fo.dlfo_eh_frame || !fo.dlfo_link_map)
    return LEARN_NOCFI;
  uintptr_t start = (uintptr_t)fo.dlfo_map_start, hdr = (uintptr_t)fo.dlfo_eh_frame;
  const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)start;
  /* the headers within the mapping's first page (the ELF header's, readable) */
  if ((uintptr_t)fo.dlfo_map_end - start < 4096 || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
      eh->e_phentsize != sizeof(ElfW(Phdr)) || eh->e_phoff > 4096 ||
      eh->e_phnum > (4096 - eh->e_phoff) / sizeof(ElfW(Phdr)))
    return LEARN_NOCFI;
  const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(start + eh->e_phoff);
  uintptr_t bias = fo.dlfo_link_map->l_addr;
  for (int i = 0; i < eh->e_phnum; i++) {
    uintptr_t lo = bias + ph[i].p_vaddr;
    uint64_t offset;
    int outermost;
    if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_R) && hdr - lo < ph[i].p_filesz &&
        _obm_cfi_frame(pc, hdr, lo, lo + ph[i].p_filesz, &offset, &outermost))
      return offset << 9 | (uint64_t)outermost << 8 | LEARN_EXACT;
  }
  return LEARN_NOCFI;
}
#else
/* Before glibc 2.35 only dl_iterate_phdr finds an object, under the loader's lock, which
 * deadlocks inside a hook (above): no rules from the CFI there; libunwind teaches them. */
static uint64_t cfi_search(uintptr_t pc) {
  (void)pc;
  return LEARN_NOCFI;
}
#endif

/* The entry of a return address the table does not know, from its object's call frame
 * information (cfi.c), kept in the table: trusted at once (the compiler's rule, not a guess
 * from two observations), or LEARN_NOCFI (libunwind's walks teach it as before); once per
 * return address. */
static OBM_NOINLINE OBM_COLD uint64_t learn_from_cfi(uintptr_t pc) {
  return learn_keep(pc, cfi_search(pc));
}

/* pc's entry for a walk: the table's (its home slot first, inline), else the CFI's, kept. */
static inline uint64_t learn_entry(uintptr_t pc) {
  const learn_slot_t *e = &st.learned[learn_index(pc)];
  uint64_t info = atomic_load_explicit(&e->pc, memory_order_acquire) == pc
                      ? atomic_load_explicit(&e->info, memory_order_relaxed)
                      : learn_get(pc);
  return obm_likely(info != 0) ? info : learn_from_cfi(pc);
}

int _obm_trace_cfi_rule(uintptr_t pc, uint64_t *cfa_offset, int *outermost) {
  uint64_t info = cfi_search(pc);
  if (info == LEARN_NOCFI) return 0;
  *cfa_offset = info >> 9;
  *outermost = (int)(info >> 8) & 1;
  return 1;
}

/* Continues a broken chain from the table: pcs[n - 1] is the return address into a frame
 * whose stack pointer is sp.  The new length (the outermost frame reached, or max), or 0 when
 * a frame is not trusted or a check fails (then libunwind walks).  Slots and links as
 * walk_fp's (links 0); stops early at a frame of the latest stack that m finds. */
static inline __attribute__((always_inline)) size_t
walk_learned(uintptr_t *pcs, size_t n, uintptr_t sp, uintptr_t hi, size_t max, uint64_t *hash,
             code_cache_t *cc, uintptr_t *slots, uintptr_t *links, match_t *m, int rec) {
  const code_map_t *code = atomic_load_explicit(&st.current, memory_order_acquire);
  uintptr_t lo0 = cc->lo[0], size0 = cc->hi[0] - lo0, lo1 = cc->lo[1], size1 = cc->hi[1] - lo1;
  uint64_t h = *hash;
  uintptr_t pc = pcs[n - 1];
  while (n < max) {
    uint64_t info = learn_entry(pc);
    if (obm_unlikely((info & 0xff) < LEARN_TRUST)) return 0; /* no rule, new or varying */
    if (info & 0x100) break;                                 /* the outermost frame */
    uintptr_t cfa = sp + (info >> 9);                        /* >= sp + 8: learned so */
    if (obm_unlikely(cfa > hi || (cfa & 7))) return 0;
    uintptr_t ret = ((const uintptr_t *)cfa)[-1];
    if (obm_unlikely(ret - lo0 >= size0) && ret - lo1 >= size1 && !in_cached(cc, ret, 2)) {
      if (!code || !code->n || !is_code_slow(code, ret, cc)) return 0;
      lo0 = cc->lo[0], size0 = cc->hi[0] - lo0, lo1 = cc->lo[1], size1 = cc->hi[1] - lo1;
    }
    pcs[n] = pc = ret;
    slots[n] = cfa - 8;
    links[n] = 0;
    if (rec && m->j >= 0 && match_frame(m, n, cfa - 8, ret, 0)) return n + 1;
    n++;
    h = _obm_trace_hash_step(h, ret);
    sp = cfa;
  }
  *hash = h;
  return n;
}

/* Learns from a libunwind walk pcs[0..m) whose frame-pointer prefix pcs[0..nfp) ends in the
 * frame at last_fp (so pcs[nfp - 1]'s stack pointer is last_fp + 16).  A frame already
 * learned is checked at its constant (a word compare) before the stack is scanned (up to its
 * top: frames of any size); learning stops at a frame whose constant varies (the walk from
 * the table cannot pass it). */
/* learn_walk scans a frame's words (its locals, and under AddressSanitizer the redzones
 * between them) for the next return address: left out of AddressSanitizer's checks. */
#if defined(__SANITIZE_ADDRESS__)
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

static NO_ASAN void learn_walk(const uintptr_t *pcs, size_t m, size_t nfp, uintptr_t last_fp,
                               uintptr_t hi, size_t max) {
  uintptr_t sp = last_fp + 16;
  const uintptr_t *end = (const uintptr_t *)(hi - 8);
  for (size_t i = nfp - 1; i + 1 < m; i++) {
    uint64_t info = learn_get(pcs[i]);
    if (info == LEARN_VARIES) return;
    const uintptr_t *slot = (const uintptr_t *)sp;
    size_t k = 0, known = info >> 9;
    if (info != 0 && !(info & 0x100) && known >= 8 && slot + known / 8 - 1 < end &&
        slot[known / 8 - 1] == pcs[i + 1])
      k = known / 8 - 1;
    else
      while (slot + k < end && slot[k] != pcs[i + 1])
        k++;
    if (slot + k >= end) return;
    learn_put(pcs[i], (k + 1) * 8, 0);
    sp += (k + 1) * 8;
  }
  if (m < max) learn_put(pcs[m - 1], 0, 1);
}

/* Interns frames pcs[k - 1] .. pcs[0] (innermost last) on top of parent into last (at
 * positions base + (k - 1 - i)), and returns the id of the whole stack; ID_LOST's stack: the
 * outer part that fitted (last is then emptied). */
static uint32_t intern_inner(last_stack_t *last, uint32_t parent, const uintptr_t *pcs, size_t k,
                             size_t base) {
  for (size_t i = k; i-- > 0;) {
    uintptr_t pc = pcs[i];
    size_t e = (pc ^ (pc >> 6)) & (FRAME_CACHE - 1);
    uint32_t f = last->frame_ids[e].id;
    if (last->frame_ids[e].pc != pc || f == 0) {
      f = intern(st.frame_slots, FRAME_SLOTS, &st.nframe_ids, FRAME_IDS, st.frame_defs, pc, 0, pc);
      if (f == ID_LOST) goto lost;
      last->frame_ids[e].pc = pc;
      last->frame_ids[e].id = f;
    }
    uint32_t s = intern_stack(parent, f);
    if (s == ID_LOST) goto lost;
    size_t j = base + (k - 1 - i);
    last->ids[j] = parent = s;
    last->pcs[j] = pcs[i];
  }
  return parent;
lost:
  last->n = 0;
  last->matchable = 0;
  atomic_fetch_add_explicit(&st.lost, 1, memory_order_relaxed);
  return parent; /* the outer part of the stack that fitted */
}

/* The frame-pointer walk's first wrong step, if any: the link read at frame i is the rbp of the
 * function pcs[i] returns into, a frame pointer only if that function keeps one; a function
 * the table knows to compute its CFA from rsp (it keeps none: rbp is an outer function's
 * frame, or anything) makes the step skip the frames between (glibc's xrealloc called from a
 * cc1 function that keeps rbp: the walk went from xrealloc to that function's caller).  The
 * number of frames to keep (frame i is kept, its link is not followed), or n. */
static size_t fp_cut(const uintptr_t *pcs, size_t n) {
  for (size_t i = 0; i + 1 < n; i++) {
    uint64_t info = learn_entry(pcs[i]);
    if ((info & 0xff) >= LEARN_TRUST && !(info & 0x100)) return i + 1;
  }
  return n;
}

/* The whole walk: frame pointers, continued by the learned walk or libunwind (AUTO); pcs[0..n),
 * slots, links and *hash; with rec, it stops at a frame of the latest stack that m finds.
 * *matchable = 0 when libunwind walked (no slots) or the learned walk failed without it. */
static inline __attribute__((always_inline)) size_t walk_all(void *frame, uintptr_t lo,
                                                             uintptr_t hi, uintptr_t *pcs,
                                                             uintptr_t *slots, uintptr_t *links,
                                                             match_t *m, int rec, uint64_t *hash,
                                                             int *matchable, last_stack_t *last) {
  uintptr_t last_fp = 0;
  int broken;
  uint64_t h;
  *matchable = 1;
  match_t m0 = *m;
  size_t n = walk_fp(frame, lo, hi, pcs, st.max_frames, &broken, &h, &last->code, &last_fp, slots,
                     links, m, rec);
  /* with libunwind to finish what the learned walk cannot (a frame whose CFA is from rbp);
   * without it the frame-pointer walk stands, skips and all */
  if (n >= 2 && st.mode == OBM_TRACE_STACKS_AUTO && st.unw_backtrace) {
    size_t cut = fp_cut(pcs, n);
    if (cut < n) { /* go on from the frame whose link was not a frame pointer */
      n = cut;
      last_fp = slots[n - 1] - 8;
      h = hash_pcs(pcs, n);
      broken = 1;
      *m = m0; /* a match found past the cut is not one */
    }
  }
  if (n == 0 || m->found) return n;
  if (broken == 2) { /* a zero link ends the stack where libunwind said so */
    uint64_t info = st.mode == OBM_TRACE_STACKS_AUTO ? learn_get(pcs[n - 1]) : 0;
    broken = !((info & 0x100) && (info & 0xff) >= LEARN_TRUST);
    if (st.mode != OBM_TRACE_STACKS_AUTO) broken = 0;
  }
  /* the table (from the CFI, or taught by libunwind) serves without libunwind too */
  if ((st.unw_backtrace && st.mode == OBM_TRACE_STACKS_UNWIND) ||
      (broken && st.mode == OBM_TRACE_STACKS_AUTO)) {
    size_t k = 0;
    if (st.mode == OBM_TRACE_STACKS_AUTO)
      k = walk_learned(pcs, n, last_fp + 16, hi, st.max_frames, &h, &last->code, slots, links, m,
                       rec);
    if (k == 0 && st.unw_backtrace) {
      /* learn only where libunwind agrees with the frame-pointer prefix (a stale link that
       * passed the checks would put last_fp elsewhere) */
      uintptr_t prefix[8];
      size_t nfp = n;
      memcpy(prefix, pcs, (nfp < 8 ? nfp : 8) * sizeof *pcs);
      *matchable = 0;
      k = walk_unwind(pcs[0], pcs, st.max_frames);
      if (k > 0) {
        n = k;
        h = hash_pcs(pcs, n);
        if (st.mode == OBM_TRACE_STACKS_AUTO && nfp <= 8 && k > nfp &&
            memcmp(prefix, pcs, nfp * sizeof *pcs) == 0)
          learn_walk(pcs, k, nfp, last_fp, hi, st.max_frames);
      }
    } else if (k > 0) {
      n = k;
    } else {
      /* the stack ends where the learned walk failed (no libunwind): on words it read that
       * neither the slots nor a memo of walks record, so it is not kept for reuse */
      *matchable = 0;
    }
  }
  *hash = h;
  return n;
}

/* Keeps the shallow walk pcs[0..n) (slots and links as walk_fp's: frame-pointer frames, then
 * learned ones) from frame, whose stack's id is id, in wm (see walk_memo_t): the words it read,
 * found again from its records (but the first return address, the memo's key).  The last
 * frame-pointer frame's link is either invalid (the chain broke there) or valid, and then the walk
 * read the next frame's two words and stopped there (a zero or non-code return address; learned
 * frames may follow): those are kept too. */
static void walk_memo_put(walk_memo_t *wm, uintptr_t frame, const uintptr_t *pcs,
                          const uintptr_t *slots, const uintptr_t *links, size_t n, uintptr_t hi,
                          uint64_t gen, uint32_t id) {
  uint32_t k = 0;
  size_t nfp = 0;
  while (nfp < n && links[nfp] != 0)
    nfp++;
  wm->frame = 0;
  wm->broken = 0;
  if (nfp == 0 || n + nfp + 2 > WALK_WORDS) return;
  for (size_t i = 0; i < nfp; i++) {
    uintptr_t fp = slots[i] - 8, next = links[i] ^ 1;
    if (link_valid(fp, next, hi)) {
      wm->words[k].addr = fp;
      wm->words[k++].word = next;
    } else { /* the chain broke here (i == nfp - 1) */
      wm->broken = fp;
      wm->broken_zero = next == 0;
    }
    if (i > 0) {
      wm->words[k].addr = slots[i];
      wm->words[k++].word = pcs[i];
    }
  }
  if (!wm->broken) {
    uintptr_t next = links[nfp - 1] ^ 1;
    wm->words[k].addr = next;
    wm->words[k++].word = ((const uintptr_t *)next)[0];
    wm->words[k].addr = next + 8;
    wm->words[k++].word = ((const uintptr_t *)next)[1];
  }
  for (size_t i = nfp; i < n; i++) {
    wm->words[k].addr = slots[i];
    wm->words[k++].word = pcs[i];
  }
  wm->frame = frame;
  wm->first = pcs[0];
  wm->hi = hi;
  wm->gen = gen;
  wm->id = id;
  wm->nwords = k;
}

/* _obm_trace_stack_id when the thread's memo of walks did not answer: the walk, the search,
 * the cache, interning; wm: the memo entry for this walk (NULL: none). */
static OBM_NOINLINE uint32_t walk_and_intern(uint32_t slot, void *frame, uintptr_t lo, uintptr_t hi,
                                             walk_memo_t *wm) {
  uintptr_t pcs[OBM_TRACE_MAX_FRAMES], slots[OBM_TRACE_MAX_FRAMES], links[OBM_TRACE_MAX_FRAMES];
  uint64_t h = 0;
  last_stack_t *last = &st.last[slot];
  /* before the walk: a code map or learned entry that changes during it makes the memo entry
   * stale */
  uint64_t memo_gen = atomic_load_explicit(&st.memo_gen, memory_order_acquire);
  const code_map_t *code = atomic_load_explicit(&st.current, memory_order_acquire);
  uint64_t code_gen = code ? code->gen : 0;
  uintptr_t fp = (uintptr_t)frame;
  match_t m = {.last = last, .j = -1, .bad = (int)last->n, .max = st.max_frames};
  /* the search only for a deep latest stack: for shallow ones the whole walk and the cache
   * cost less */
  int rec = last->matchable && last->n >= MATCH_DEPTH && last->lo == lo && last->hi == hi &&
            last->code_gen == code_gen && st.mode != OBM_TRACE_STACKS_UNWIND;
  if (rec) m.j = (int)last->n - 1;
  int matchable;
  size_t n = rec ? walk_all(frame, lo, hi, pcs, slots, links, &m, 1, &h, &matchable, last)
                 : walk_all(frame, lo, hi, pcs, slots, links, &m, 0, &h, &matchable, last);
  if (n == 0) return 0;
  if (m.found) {
    /* frames 0..at of this stack are new (at: the latest stack's frame j); the rest is the
     * latest stack's frames j - 1 .. 0, their words unchanged */
    size_t at = m.at, j = (size_t)m.j, total = at + 1 + j;
    if (at == 0) return last->ids[j];
    /* a few inner frames seen recently on top of the same stack (another call site in the
     * same caller): their ids from the cache (a collision of the 64-bit hashes would merge
     * two stacks) */
    uint64_t ih = 0;
    size_t e = 0;
    uint32_t id;
    if (at <= INNER_FRAMES) {
      ih = (uint64_t)last->ids[j] * 0x9e3779b97f4a7c15ull + at;
      for (size_t i = 0; i < at; i++)
        ih = _obm_trace_hash_step(ih, pcs[i]);
      ih = _obm_mix64(ih) | 1;
      e = ih & (INNER_CACHE - 1);
    }
    if (ih && last->inner[e].hash == ih) {
      for (size_t i = 0; i < at; i++) {
        last->ids[j + 1 + i] = last->inner[e].ids[i];
        last->pcs[j + 1 + i] = pcs[at - 1 - i];
      }
      id = last->ids[total - 1];
    } else {
      last->n = 0; /* until the new part is interned */
      id = intern_inner(last, last->ids[j], pcs, at, j + 1);
      if (ih && last->matchable) {
        last->inner[e].hash = ih;
        for (size_t i = 0; i < INNER_FRAMES; i++) /* at <= INNER_FRAMES: stores, no memcpy */
          if (i < at) last->inner[e].ids[i] = last->ids[j + 1 + i];
      }
    }
    if (last->matchable) { /* not lost */
      for (size_t i = 0; i < at; i++) {
        last->slots[total - 1 - i] = slots[i];
        last->links[total - 1 - i] = links[i];
      }
      last->n = (uint32_t)total;
    }
    return id;
  }
  /* a deep stack while the latest stack cannot be searched: this one, interned with its
   * slots, takes its place */
  int renew = !rec && n >= MATCH_DEPTH && n < st.max_frames && matchable &&
              st.mode != OBM_TRACE_STACKS_UNWIND;
  /* a shallow stack walked without libunwind is kept for the next walk from this frame */
  int keep = wm && n < MATCH_DEPTH && n < st.max_frames && matchable;
  h = _obm_mix64(h + n);
  obm_trace_cache_entry_t *c = &st.cache[(size_t)slot * CACHE_ENTRIES + (h & (CACHE_ENTRIES - 1))];
  if (c->hash == h && c->depth == n && c->id != 0 && !renew) {
    if (keep) walk_memo_put(wm, fp, pcs, slots, links, n, hi, memo_gen, c->id);
    return c->id;
  }
  /* the outer frames shared with the latest stack keep their ids */
  size_t shared = 0;
  while (shared < n && shared < last->n && pcs[n - 1 - shared] == last->pcs[shared])
    shared++;
  last->n = 0;
  last->matchable = 1;
  uint32_t parent = intern_inner(last, shared ? last->ids[shared - 1] : 0, pcs, n - shared, shared);
  if (!last->matchable) return parent; /* lost */
  last->n = (uint32_t)n;
  last->matchable = matchable && n < st.max_frames && (rec || renew);
  if (last->matchable) {
    for (size_t i = 0; i < n; i++) {
      last->slots[n - 1 - i] = slots[i];
      last->links[n - 1 - i] = links[i];
    }
    last->lo = lo;
    last->hi = hi;
    last->code_gen = code_gen;
  }
  *c = (obm_trace_cache_entry_t){h, (uint32_t)n, parent};
  if (keep) walk_memo_put(wm, fp, pcs, slots, links, n, hi, memo_gen, parent);
  return parent;
}

/* The memo of walks first: a shallow walk seen before from this frame, its words unchanged,
 * gives its id; else (or while the memo pauses) walk_and_intern.  The early exits come
 * before the memo's registers are saved. */
uint32_t _obm_trace_stack_id(uint32_t slot, void *frame, uintptr_t lo, uintptr_t hi) {
  if (st.mode == OBM_TRACE_STACKS_NONE) return 0;
  last_stack_t *last = &st.last[slot];
  if (obm_unlikely(last->walk_pause)) {
    last->walk_pause--;
    return walk_and_intern(slot, frame, lo, hi, NULL);
  }
  uintptr_t fp = (uintptr_t)frame;
  if (obm_unlikely(fp < lo || fp > hi - 16 || (fp & 7)))
    return walk_and_intern(slot, frame, lo, hi, NULL);
  uintptr_t first = ((const uintptr_t *)fp)[1];
  walk_memo_t *wm = &last->walks[(fp >> 4 ^ first) & (WALK_MEMOS - 1)];
  if (wm->frame == fp && wm->first == first && wm->hi == hi &&
      wm->gen == atomic_load_explicit(&st.memo_gen, memory_order_acquire)) {
    uint32_t k = 0, n = wm->nwords;
    while (k < n && *(const uintptr_t *)wm->words[k].addr == wm->words[k].word)
      k++;
    uintptr_t link = wm->broken ? *(const uintptr_t *)wm->broken : 0;
    if (k == n &&
        (!wm->broken ||
         (wm->broken_zero ? link == 0 : link != 0 && !link_valid(wm->broken, link, hi)))) {
      last->walk_misses = 0;
      return wm->id;
    }
  }
  /* a thread whose walks rarely repeat (a recursive program: a new call path each time)
   * does without the memo for a while rather than fill it in vain */
  if (obm_unlikely(++last->walk_misses >= WALK_MISSES)) {
    last->walk_misses = 0;
    last->walk_pause = WALK_PAUSE;
  }
  return walk_and_intern(slot, frame, lo, hi, wm);
}

/* ---- for interp.c: interpreter frames in the same tables ------------------------------------ */

uint32_t _obm_trace_frame_find(uint64_t key) {
  uint32_t id = probe_table(st.frame_slots, FRAME_SLOTS, &st.nframe_ids, FRAME_IDS, st.frame_defs,
                            key, 0, 0, 0);
  return id == ID_LOST ? 0 : id;
}

uint32_t _obm_trace_frame_intern(uint64_t key, uint32_t a, uint64_t b) {
  uint32_t id =
      intern(st.frame_slots, FRAME_SLOTS, &st.nframe_ids, FRAME_IDS, st.frame_defs, key, a, b);
  return id == ID_LOST ? 0 : id;
}

uint32_t _obm_trace_stack_intern(uint32_t parent, uint32_t frame) {
  uint32_t id = intern_stack(parent, frame);
  return id == ID_LOST ? 0 : id;
}

void _obm_trace_count_lost(void) {
  atomic_fetch_add_explicit(&st.lost, 1, memory_order_relaxed);
}

/* Parses /proc/self/maps with raw reads into a stack buffer (no malloc, no stdio). */
void _obm_trace_stack_bounds(uintptr_t *lo, uintptr_t *hi) {
  uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
  *lo = sp;
  *hi = sp + 4096 - (sp & 4095); /* fallback: this page only */
  int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[4096];
  size_t have = 0;
  for (;;) {
    ssize_t r = read(fd, buf + have, sizeof buf - have);
    if (r <= 0) break;
    have += (size_t)r;
    size_t line = 0;
    for (size_t i = 0; i < have; i++) {
      if (buf[i] != '\n') continue;
      uintptr_t a = 0, b = 0;
      size_t j = line;
      for (; j < i && buf[j] != '-'; j++)
        a = a * 16 + (uintptr_t)(buf[j] <= '9' ? buf[j] - '0' : (buf[j] | 0x20) - 'a' + 10);
      for (j++; j < i && buf[j] != ' '; j++)
        b = b * 16 + (uintptr_t)(buf[j] <= '9' ? buf[j] - '0' : (buf[j] | 0x20) - 'a' + 10);
      if (a <= sp && sp < b) {
        *lo = a;
        *hi = b;
        close(fd);
        return;
      }
      line = i + 1;
    }
    if (line == 0 && have == sizeof buf) have = 0; /* a line longer than the buffer */
    memmove(buf, buf + line, have - line);
    have -= line;
  }
  close(fd);
}
