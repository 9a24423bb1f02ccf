/* stacks.c — native stacks for the tracer: the walk, and interning into frame and stack ids.
 *
 * Walk: frame pointers from the hook's own frame (each frame is [saved rbp, return address]);
 * every frame address is checked to lie in the thread's stack mapping, 8-aligned and above the
 * previous one, so a broken chain (code built without frame pointers) ends the walk instead of
 * reading wild memory.  In AUTO mode a chain that breaks (a non-null, invalid link) is walked
 * again with libunwind's unw_backtrace, found with dlopen at start (libunwind.so.8: no link
 * dependency for programs that do not trace), and trimmed to start at the same first frame;
 * a chain of AUTO_TRUST frames or more is unwound once per thread and prefix (see below).
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
 * Each stack id also keeps its NHINTS latest children as hints ((frame id << 32 | child id),
 * one word each, written whole): a lookup of (parent, frame) reads the parent's hints, which
 * sit with the ids made around the parent's, before it probes the big table (a random miss).
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
#define NHINTS        4u /* a recursive function's frame: its own call and two recursive ones */

typedef struct slot_s {
  _Atomic uint64_t key; /* 0 = empty; frames: address; stacks: parent << 32 | frame */
  _Atomic uint32_t id;  /* 0 while being created; ID_LOST when the id space was full */
  uint32_t pad;
} slot_t;

typedef struct cache_entry_s {
  uint64_t hash;
  uint32_t depth;
  uint32_t id;
} cache_entry_t;

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

/* A thread's two latest code ranges found (most frames are in the program and the C library),
 * valid for the code map of generation gen. */
typedef struct code_cache_s {
  uint64_t gen;
  uintptr_t lo[2], hi[2];
} code_cache_t;

/* A thread's previous interned stack: ids[i] is the id of the stack pcs[i..n) (the node of
 * frame i), so a new stack ending in the same k frames continues from ids[n - k]. */
typedef struct last_stack_s {
  code_cache_t code; /* not part of the stack: the walk's code ranges, kept per thread */
  uint32_t n;
  uint32_t ids[OBM_TRACE_MAX_FRAMES];
  uintptr_t pcs[OBM_TRACE_MAX_FRAMES];
} last_stack_t;

static struct {
  code_map_t maps[2];
  _Atomic(code_map_t *) current;
  slot_t *frame_slots, *stack_slots;
  obm_trace_def_t *frame_defs, *stack_defs;
  cache_entry_t *cache;              /* OBM_TRACE_MAX_THREADS * CACHE_ENTRIES */
  last_stack_t *last;                /* OBM_TRACE_MAX_THREADS */
  _Atomic uint64_t (*hints)[NHINTS]; /* per stack id: its latest children, frame << 32 | id */
  _Atomic uint32_t nframe_ids, nstack_ids;
  _Atomic uint64_t lost;
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
  return (size_t)OBM_TRACE_MAX_THREADS * CACHE_ENTRIES * sizeof(cache_entry_t);
}
static size_t last_bytes(void) {
  return (size_t)OBM_TRACE_MAX_THREADS * sizeof(last_stack_t);
}
static size_t hints_bytes(void) {
  return (STACK_IDS + OBM_TRACE_MAX_THREADS) * NHINTS * sizeof(uint64_t);
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
    st.hints = _obm_os_map(hints_bytes(), 0);
    if (!st.frame_slots || !st.stack_slots || !st.frame_defs || !st.stack_defs || !st.cache ||
        !st.last || !st.hints) {
      if (st.frame_slots) _obm_os_unmap(st.frame_slots, frame_slots_bytes());
      if (st.stack_slots) _obm_os_unmap(st.stack_slots, stack_slots_bytes());
      if (st.frame_defs) _obm_os_unmap(st.frame_defs, frame_defs_bytes());
      if (st.stack_defs) _obm_os_unmap(st.stack_defs, stack_defs_bytes());
      if (st.cache) _obm_os_unmap(st.cache, cache_bytes());
      if (st.last) _obm_os_unmap(st.last, last_bytes());
      if (st.hints) _obm_os_unmap(st.hints, hints_bytes());
      st.frame_slots = st.stack_slots = NULL;
      st.frame_defs = st.stack_defs = NULL;
      st.cache = NULL;
      st.last = NULL;
      st.hints = NULL;
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
  _obm_os_decommit(st.hints, hints_bytes());
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

static inline uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* Finds or creates key's id in a table; ID_LOST when the id space is full. */
static uint32_t intern(slot_t *slots, uint32_t nslots, _Atomic uint32_t *next_id, uint32_t max_ids,
                       obm_trace_def_t *defs, uint64_t key, uint32_t a, uint64_t b) {
  uint32_t mask = nslots - 1, i = (uint32_t)mix(key) & mask;
  for (uint32_t probe = 0; probe < nslots; probe++, i = (i + 1) & mask) {
    slot_t *s = &slots[i];
    uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
    if (k == 0) {
      if (atomic_load_explicit(next_id, memory_order_relaxed) >= max_ids) return ID_LOST;
      if (!atomic_compare_exchange_strong(&s->key, &k, key)) {
        if (k != key) continue; /* someone else's key took the slot: keep probing */
      } else {
        uint32_t id = atomic_fetch_add(next_id, 1);
        if (id >= max_ids + OBM_TRACE_MAX_THREADS - 1) id = ID_LOST; /* never: headroom */
        if (id != ID_LOST) {
          defs[id].a = a;
          defs[id].b = b;
          atomic_store_explicit(&defs[id].ready, 1, memory_order_release);
        }
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
  return ID_LOST;
}

/* The stack (parent, frame): from the parent's hints, else interned (and made a hint). */
static uint32_t intern_stack(uint32_t parent, uint32_t frame) {
  _Atomic uint64_t *hint = st.hints[parent];
  for (uint32_t k = 0; k < NHINTS; k++) {
    uint64_t h = atomic_load_explicit(&hint[k], memory_order_relaxed);
    if (h >> 32 == frame) return (uint32_t)h;
  }
  uint32_t s = intern(st.stack_slots, STACK_SLOTS, &st.nstack_ids, STACK_IDS, st.stack_defs,
                      (uint64_t)parent << 32 | frame, parent, frame);
  if (s != ID_LOST) { /* the oldest hint makes room (a race loses a hint, never a stack) */
    for (uint32_t k = NHINTS - 1; k > 0; k--)
      atomic_store_explicit(&hint[k], atomic_load_explicit(&hint[k - 1], memory_order_relaxed),
                            memory_order_relaxed);
    atomic_store_explicit(&hint[0], (uint64_t)frame << 32 | s, memory_order_relaxed);
  }
  return s;
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
  c->lo[1] = c->lo[0];
  c->hi[1] = c->hi[0];
  c->lo[0] = m->lo[lo - 1];
  c->hi[0] = m->hi[lo - 1];
  return 1;
}

/* One step of the stack hash (a multiply per frame; mixed once at the end by stack_hash_end). */
static inline uint64_t hash_step(uint64_t h, uintptr_t pc) {
  return (h ^ pc) * 0x9e3779b97f4a7c15ull + (h >> 29);
}

/* Frame-pointer walk; *hash = the hash of the frames found (hashed as they are read, so the
 * per-thread cache is probed without a second pass).  Each frame [next, ret] must lie in the
 * stack [lo, hi), 8-aligned, above the previous one by 16 bytes or more, and ret in code (the
 * thread's two latest code ranges, kept in registers, answer almost every frame). */
static inline size_t walk_fp(void *frame, uintptr_t lo, uintptr_t hi, uintptr_t *pcs, size_t max,
                             int *broken, uint64_t *hash, code_cache_t *cc) {
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
    if (obm_unlikely(ret - lo0 >= size0) && ret - lo1 >= size1) {
      if (ret == 0) break;
      if (code) {
        if (!is_code_slow(code, ret, cc)) {
          *broken = n > 0;
          break;
        }
        lo0 = cc->lo[0], size0 = cc->hi[0] - lo0, lo1 = cc->lo[1], size1 = cc->hi[1] - lo1;
      }
    }
    pcs[n++] = ret;
    h = hash_step(h, ret);
    if (obm_unlikely(next - (fp + 16) > top - (fp + 16) || (next & 7))) {
      /* 0: the outermost frame (the clone/start code zeroes rbp); else a broken chain */
      *broken = next != 0;
      break;
    }
    fp = next;
  }
  *hash = h;
  return n;
}

/* libunwind's walk, trimmed to start at first (the hook's return address). */
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
    h = hash_step(h, pcs[i]);
  return h;
}

/* AUTO: a chain of at least AUTO_TRUST frames that then breaks (typically at the C library,
 * built without frame pointers) is unwound with libunwind once per thread and cached under
 * the frame-pointer prefix, so later stacks with the same prefix cost a frame-pointer walk;
 * a shorter chain (code without frame pointers) is unwound every time. */
#define AUTO_TRUST 3

uint32_t _obm_trace_stack_id(uint32_t slot, void *frame, uintptr_t lo, uintptr_t hi) {
  if (st.mode == OBM_TRACE_STACKS_NONE) return 0;
  uintptr_t pcs[OBM_TRACE_MAX_FRAMES];
  int broken;
  uint64_t h;
  last_stack_t *last = &st.last[slot];
  size_t n = walk_fp(frame, lo, hi, pcs, st.max_frames, &broken, &h, &last->code);
  if (n == 0) return 0;
  int unwind = st.unw_backtrace &&
               (st.mode == OBM_TRACE_STACKS_UNWIND || (broken && st.mode == OBM_TRACE_STACKS_AUTO));
  if (unwind && (st.mode == OBM_TRACE_STACKS_UNWIND || n < AUTO_TRUST)) {
    size_t m = walk_unwind(pcs[0], pcs, st.max_frames);
    if (m > 0) n = m;
    unwind = 0; /* done: cache under the unwound stack itself */
    h = hash_pcs(pcs, n);
  }
  h = mix(h + n);
  cache_entry_t *c = &st.cache[(size_t)slot * CACHE_ENTRIES + (h & (CACHE_ENTRIES - 1))];
  if (c->hash == h && c->depth == n && c->id != 0) return c->id;
  uint32_t key_depth = (uint32_t)n;
  if (unwind) {
    size_t m = walk_unwind(pcs[0], pcs, st.max_frames);
    if (m > 0) n = m;
  }
  /* the outer frames shared with the previous stack keep their ids (moved to their place in
   * this stack); last is invalid (n = 0) until the new inner part is interned */
  size_t shared = 0;
  while (shared < n && shared < last->n && pcs[n - 1 - shared] == last->pcs[last->n - 1 - shared])
    shared++;
  if (shared && last->n != n)
    memmove(last->ids + (n - shared), last->ids + (last->n - shared), shared * sizeof *last->ids);
  last->n = 0;
  uint32_t parent = shared ? last->ids[n - shared] : 0;
  for (size_t i = n - shared; i-- > 0;) {
    uint32_t f = intern(st.frame_slots, FRAME_SLOTS, &st.nframe_ids, FRAME_IDS, st.frame_defs,
                        pcs[i], 0, pcs[i]);
    if (f == ID_LOST) goto lost;
    uint32_t s = intern_stack(parent, f);
    if (s == ID_LOST) goto lost;
    last->ids[i] = parent = s;
  }
  memcpy(last->pcs, pcs, n * sizeof *pcs);
  last->n = (uint32_t)n;
  *c = (cache_entry_t){h, key_depth, parent};
  return parent;
lost:
  atomic_fetch_add_explicit(&st.lost, 1, memory_order_relaxed);
  return parent; /* the outer part of the stack that fitted */
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
