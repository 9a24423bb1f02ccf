/* interp.c — an interpreter's frames in the tracer's stacks (obm_trace_set_interpreter).
 *
 * A language runtime (the CPython module) registers two callbacks: `frames` reads the calling
 * thread's interpreted frames as (code object, instruction offset) pairs, innermost first,
 * without allocating or formatting anything; `names` gives a frame's function, file and line,
 * and is called once per new (code, offset) of a session.  Each pair is interned as a frame of
 * the same frame-id space as return addresses (stacks.c's table, keyed by
 * 1 << 63 | offset << 43 | code >> 4: never a user-space return address), its names copied
 * into an arena of this file and written by the writer as a PYFRAME record; stacks are nodes
 * of the same trie, so STACK records and every reader work unchanged.
 *
 * An allocation's stack (trace.h gives the contract): the interpreter's frames alone, or,
 * with native stacks, merged: the native stack is walked and interned as usual
 * (_obm_trace_stack_id, with its caches), then split at the interpreter loop's frames (return
 * addresses in [eval_lo, eval_hi)): the inner native frames (the C code that allocated) go
 * innermost, the interpreted frames replace the loop's, the outer native frames (main, ...)
 * stay outermost.  A per-thread direct-mapped cache keyed by a hash of the native stack id
 * and the (code, offset) pairs answers a repeated stack without touching the trie (a hash
 * collision between two stacks of the same depth would merge them: 2^-64 per pair, accepted).
 *
 * Invariants: arena_used <= ARENA_BYTES; every frame def with a == OBM_TRACE_FRAME_INTERP has
 * b = the address of a complete obm_trace_pyname_t in the arena, written before the def was
 * made ready.
 */
#define _GNU_SOURCE
#include "trace/trace_internal.h"

#include <errno.h>
#include <string.h>

#define ARENA_BYTES   ((size_t)64 << 20) /* names of a session's Python frames */
#define CACHE_ENTRIES 256u               /* per thread slot */
#define OFFSET_MAX    0xfffffu           /* 20 bits of instruction offset in a frame key */

int _obm_trace_interp_on;

static struct {
  obm_trace_interp_t interp; /* valid when set */
  int set;
  uint32_t max_frames;
  obm_trace_stacks_t mode;
  uint8_t *arena;
  _Atomic size_t arena_used;
  obm_trace_cache_entry_t *cache; /* OBM_TRACE_MAX_THREADS * CACHE_ENTRIES */
} in;

static size_t cache_bytes(void) {
  return (size_t)OBM_TRACE_MAX_THREADS * CACHE_ENTRIES * sizeof(obm_trace_cache_entry_t);
}

int obm_trace_set_interpreter(const obm_trace_interp_t *interp) {
  if (obm_trace_active()) return EBUSY;
  if (interp && (!interp->frames || !interp->names)) return EINVAL;
  if (interp) in.interp = *interp;
  in.set = interp != NULL;
  return 0;
}

int _obm_trace_interp_start(uint32_t max_frames, obm_trace_stacks_t mode) {
  _obm_trace_interp_on = 0;
  if (!in.set) return 0;
  if (!in.arena) {
    in.arena = _obm_os_map(ARENA_BYTES, 0);
    in.cache = _obm_os_map(cache_bytes(), 0);
    if (!in.arena || !in.cache) {
      if (in.arena) _obm_os_unmap(in.arena, ARENA_BYTES);
      if (in.cache) _obm_os_unmap(in.cache, cache_bytes());
      in.arena = NULL;
      in.cache = NULL;
      return 0; /* native stacks only */
    }
  } else {
    _obm_os_decommit(in.arena, ARENA_BYTES);
    _obm_os_decommit(in.cache, cache_bytes());
  }
  atomic_store(&in.arena_used, 0);
  in.max_frames = max_frames;
  in.mode = mode;
  _obm_trace_interp_on = 1;
  return 1;
}

void _obm_trace_interp_stop(void) {
  _obm_trace_interp_on = 0;
}

/* The frame id of (code, offset): found, or named and interned; 0 when a table is full. */
static OBM_NOINLINE uint32_t new_frame(uint64_t key, const obm_trace_interp_frame_t *f) {
  obm_trace_interp_names_t names = {0};
  if (in.interp.names(f->code, f->offset, &names) != 0 || !names.function) {
    names = (obm_trace_interp_names_t){.function = "?", .function_len = 1, .file = ""};
  }
  if (!names.file) names.file_len = 0;
  size_t fl = names.function_len < OBM_CAP_PYNAME_MAX ? names.function_len : OBM_CAP_PYNAME_MAX;
  size_t pl = names.file_len < OBM_CAP_NAME_MAX ? names.file_len : OBM_CAP_NAME_MAX;
  size_t need = (sizeof(obm_trace_pyname_t) + fl + pl + 7) & ~(size_t)7;
  size_t at = atomic_fetch_add(&in.arena_used, need);
  if (at + need > ARENA_BYTES) return 0;
  obm_trace_pyname_t *n = (obm_trace_pyname_t *)(in.arena + at);
  n->line = names.line;
  n->function_len = (uint32_t)fl;
  n->file_len = (uint32_t)pl;
  memcpy(n->bytes, names.function, fl);
  if (pl) memcpy(n->bytes + fl, names.file, pl);
  return _obm_trace_frame_intern(key, OBM_TRACE_FRAME_INTERP, (uint64_t)(uintptr_t)n);
}

static inline uint64_t frame_key(const obm_trace_interp_frame_t *f) {
  uint64_t offset = f->offset < OFFSET_MAX ? f->offset : OFFSET_MAX;
  return (uint64_t)1 << 63 | offset << 43 | (((uintptr_t)f->code >> 4) & (((uint64_t)1 << 43) - 1));
}

/* The stack made of the interpreted frames py[0..n) over the native stack `native`, split at
 * the interpreter loop's frames (see the file comment); 0 and counted lost when a table is
 * full. */
static OBM_NOINLINE uint32_t merge(uint32_t native, const obm_trace_interp_frame_t *py, int n) {
  uint32_t ids[OBM_TRACE_MAX_FRAMES];
  for (int i = 0; i < n; i++) {
    uint64_t key = frame_key(&py[i]);
    uint32_t id = _obm_trace_frame_find(key);
    if (!id) id = new_frame(key, &py[i]);
    if (!id) goto lost;
    ids[i] = id;
  }
  /* the native stack, innermost first, and its loop frames */
  uint32_t chain[OBM_TRACE_MAX_FRAMES];
  int nchain = 0, first = -1, last = -1;
  uintptr_t lo = in.interp.eval_lo, size = in.interp.eval_hi - in.interp.eval_lo;
  for (uint32_t id = native; id != 0 && nchain < OBM_TRACE_MAX_FRAMES;) {
    const obm_trace_def_t *s = _obm_trace_stack_def(id);
    chain[nchain] = id;
    if (size) {
      const obm_trace_def_t *f = _obm_trace_frame_def((uint32_t)s->b);
      if (f->a != OBM_TRACE_FRAME_INTERP && f->b - lo < size) {
        if (first < 0) first = nchain;
        last = nchain;
      }
    }
    nchain++;
    id = s->a;
  }
  uint32_t stack = first < 0 ? native : _obm_trace_stack_def(chain[last])->a;
  for (int i = n; i-- > 0;)
    if (!(stack = _obm_trace_stack_intern(stack, ids[i]))) goto lost;
  for (int i = first; i-- > 0;)
    if (!(stack = _obm_trace_stack_intern(stack, (uint32_t)_obm_trace_stack_def(chain[i])->b)))
      goto lost;
  return stack;
lost:
  _obm_trace_count_lost();
  return native;
}

uint32_t _obm_trace_interp_stack_id(uint32_t slot, void *frame, uintptr_t stack_lo,
                                    uintptr_t stack_hi) {
  obm_trace_interp_frame_t py[OBM_TRACE_MAX_FRAMES];
  int n = in.interp.frames(py, (int)in.max_frames);
  uint32_t native =
      in.mode == OBM_TRACE_STACKS_NONE ? 0 : _obm_trace_stack_id(slot, frame, stack_lo, stack_hi);
  if (n <= 0) return native;
  if ((uint32_t)n > in.max_frames) n = (int)in.max_frames;
  uint64_t h = 0x9e3779b97f4a7c15ull ^ native;
  for (int i = 0; i < n; i++)
    h = _obm_trace_hash_step(h, (uint64_t)(uintptr_t)py[i].code ^ (uint64_t)py[i].offset << 48);
  h = _obm_mix64(h + (uint64_t)n);
  obm_trace_cache_entry_t *c = &in.cache[(size_t)slot * CACHE_ENTRIES + (h & (CACHE_ENTRIES - 1))];
  if (c->hash == h && c->depth == (uint32_t)n && c->id != 0) return c->id;
  uint32_t id = merge(native, py, n);
  if (id) *c = (obm_trace_cache_entry_t){h, (uint32_t)n, id};
  return id;
}
