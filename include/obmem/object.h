/* obmem/object.h — objects on obmem: reference counting, immortal objects, weak references,
 * deferred deallocation and CPython's generational cycle collector, as a C library.
 *
 * The model is CPython's (docs/object.md maps every mechanism to its CPython source):
 *
 *   every object    [refcnt | flags | type]                       16 bytes, obm_object_t
 *   a GC object     [gc head: next | prev][refcnt | flags | type]  16 + 16 bytes
 *
 * An object is freed the moment its count drops to zero; objects whose type has OBM_TYPE_GC
 * are also linked into the generations of their runtime, and the collector finds the cycles
 * that counting cannot free.  The GC head is CPython's PyGC_Head: two words, the list links;
 * the collector's flags and per-object scratch count live in the header's flags word during
 * a collection, so a collection needs O(1) memory beyond the objects.
 *
 * The runtime.  obm_runtime_t holds all the state of one object world (generations,
 * thresholds, statistics, the garbage list, the deferred-deallocation list); there are no
 * globals.  A runtime is used by one thread at a time (like an interpreter holding its lock);
 * several runtimes coexist, each on its own thread or taking turns on one.  An object belongs
 * to the runtime that created it; only immortal non-GC objects (statically allocated
 * constants) may be shared between runtimes, since nothing ever writes to them.
 *
 * How decref reaches the runtime: explicitly, obm_decref(rt, op), as Lua passes its
 * lua_State to every call, rather than through a per-thread "current runtime" as CPython
 * finds its thread state.  Reasons: (1) the fast path (count > 1) never touches rt, so the
 * argument costs nothing there, while a thread-local lookup would cost a TLS access on every
 * count-to-zero; (2) nothing hidden: a thread can drive two runtimes in turn without
 * "enter/leave" calls, and a runtime can move between threads without re-registration;
 * (3) every callback a type provides (clear, finalize, dealloc, weakref callbacks) receives
 * the rt it must pass on, so user code never needs to find it.  The price: rt must be passed
 * down through the code that drops references, and passing the wrong runtime is a bug the
 * library cannot always detect.  obm_incref needs no runtime.
 *
 * Counts.  refcnt is 32 bits; counts >= OBM_IMMORTAL_MIN mean immortal (CPython 3.12's
 * scheme): obm_incref saturates into that range and never writes an immortal object,
 * obm_decref ignores it, so an immortal object is never freed (nor written, so static
 * immortal objects may be shared by threads).  obm_decref of an object whose count is
 * already 0 is reported in every build as OBM_ERR_REFCOUNT through the error handler
 * (obm_set_error_handler); so is a collection that finds more references to a tracked object
 * from other tracked objects than its count admits ("refcount too small").
 *
 * Deallocation (count reaches 0), in this order:
 *   1. finalize (PEP 442): once per object's lifetime (flag OBM_OBJECT_FINALIZED); the object
 *      is temporarily alive (count 1) and may resurrect itself by storing a reference;
 *   2. legacy_finalize, same protocol, but run at every deallocation (CPython's tp_del);
 *   3. weak references to the object are cleared, then their callbacks run (newest first);
 *   4. the object is untracked, its type's dealloc (or else clear) drops what it owns;
 *   5. the runtime frees the memory (obm_free).
 * Deep chains: deallocation nesting is counted per runtime; past OBM_TRASH_DEPTH nested
 * deallocations a GC object is put on the runtime's deferred list (linked through its GC
 * head, O(1) memory) and released when the outermost deallocation returns, so a million
 * nested containers never overflow the C stack (CPython's trashcan).  Types whose objects
 * hold references should be GC types, as every CPython container is: a non-GC object is
 * always released at once, so a deep chain of non-GC holders recurses.
 *
 * Collection (obm_gc_collect and the automatic trigger at object creation) follows CPython
 * 3.12: generations 0..2 with thresholds 700/10/10; a full collection waits until the objects
 * pending promotion to the oldest generation reach 25 % of it; unreachable objects are found
 * by subtracting internal references from the counts; legacy finalizers make their cycle
 * uncollectable (to obm_gc_garbage); weak references to the garbage are cleared first and
 * only callbacks of weak references that are themselves reachable run; finalizers run once;
 * objects they resurrect, and everything reachable from those, survive; the rest is cleared.
 * User code (finalizers, callbacks, clear) may allocate, decref and call the collector; a
 * collection never starts inside another.  traverse must not change any count.
 */
#ifndef OBMEM_OBJECT_H
#define OBMEM_OBJECT_H

#include "../obmem.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define OBM_OBJECT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define OBM_OBJECT_UNLIKELY(x) (x)
#endif

typedef struct obm_runtime_s obm_runtime_t;
typedef struct obm_type_s obm_type_t;
typedef struct obm_weakref_s obm_weakref_t;

/* ---- the object header ------------------------------------------------------------------- */

/* Every object begins with this header (GC objects have their GC head before it).
 * Invariants: refcnt == number of strong references, or >= OBM_IMMORTAL_MIN (immortal);
 *             a live mortal object has refcnt >= 1; refcnt == 0 only while it is deallocated. */
typedef struct obm_object_s {
  uint32_t refcnt;        /* strong references; >= OBM_IMMORTAL_MIN: immortal */
  uint32_t flags;         /* OBM_OBJECT_* bits, kept by the runtime */
  const obm_type_t *type; /* never NULL */
} obm_object_t;

/* A variable-size object (created with obm_object_new_var): the item count follows the header. */
typedef struct obm_var_object_s {
  obm_object_t base;
  size_t size; /* items allocated after the basic part (set at creation) */
} obm_var_object_t;

#define OBM_IMMORTAL_MIN    0x80000000u /* counts from here up mean immortal */
#define OBM_IMMORTAL_REFCNT 0xC0000000u /* the count obm_set_immortal gives */

#define OBM_OBJECT_FINALIZED 0x1u /* finalize has run (PEP 442: never again) */

/* A statically allocated immortal object of `type` (never freed, shareable by runtimes). */
#define OBM_OBJECT_STATIC_INIT(type_ptr)                                                           \
  { OBM_IMMORTAL_REFCNT, 0, (type_ptr) }

/* ---- types ------------------------------------------------------------------------------- */

/* Visit one referenced object; a non-zero return stops the traversal and is returned. */
typedef int obm_visit_t(obm_object_t *child, void *arg);
/* Calls visit on every object op holds a strong reference to (OBM_VISIT skips NULL).
 * Must not change any count, allocate or free. */
typedef int obm_traverse_t(obm_object_t *op, obm_visit_t *visit, void *arg);
/* clear: drop the references op holds (setting the fields to NULL first, then decref), so
 *        that cycles through op break; op stays a valid object.
 * finalize / legacy_finalize: see "Deallocation" above; op is alive during the call.
 * dealloc: drop everything op owns (references and buffers); the runtime frees op itself. */
typedef void obm_clear_t(obm_runtime_t *rt, obm_object_t *op);
typedef void obm_finalize_t(obm_runtime_t *rt, obm_object_t *op);
typedef void obm_dealloc_t(obm_runtime_t *rt, obm_object_t *op);
/* The optional protocols (NULL: the default), CPython's tp_hash, tp_richcompare (==) and
 * __sizeof__:
 * hash / equal: a dict key's hash, and equality with another object of the same type (equal
 *   is only called when both have this type); the default is identity.  Objects equal must
 *   hash equal.  Both run inside dict lookups: they must not change any count or container,
 *   allocate or free (a dict does not guard against being changed under its lookup).
 * sizeof_owned: the bytes of the blocks op owns beyond its own block (obm_usable_size of each
 *   buffer it allocated), for obm_sizeof; the default is 0. */
typedef uint64_t obm_hash_t;
typedef obm_hash_t obm_hash_fn_t(obm_object_t *op);
typedef int obm_equal_fn_t(obm_object_t *a, obm_object_t *b);
typedef size_t obm_sizeof_fn_t(const obm_object_t *op);

#define OBM_TYPE_GC 0x1u /* objects carry a GC head and are tracked from creation */

/* A type.  Usually a static const object; it must outlive all its objects.
 * Invariants: basic_size >= sizeof(obm_object_t) (>= sizeof(obm_var_object_t) when
 *   item_size > 0); OBM_TYPE_GC => traverse != NULL; weaklist_offset == 0 (no weak
 *   references) or the offset of an obm_weakref_t * field inside the basic part.
 * Fields added later (e.g. a footprint function) will have NULL/0 defaults, so types written
 * with designated initializers keep compiling. */
struct obm_type_s {
  const char *name;
  size_t basic_size;               /* bytes of the object, header included */
  size_t item_size;                /* bytes per item of a variable-size object, else 0 */
  uint32_t flags;                  /* OBM_TYPE_* */
  size_t weaklist_offset;          /* 0 or offsetof(the object's weak-reference list head) */
  obm_traverse_t *traverse;        /* required for GC types */
  obm_clear_t *clear;              /* breaks cycles; NULL: the collector cannot clear op */
  obm_finalize_t *finalize;        /* PEP 442 finalizer, run once; may resurrect */
  obm_dealloc_t *dealloc;          /* drops what op owns; NULL: clear is used */
  obm_finalize_t *legacy_finalize; /* pre-PEP 442 finalizer: an object that has one makes
                                      its unreachable cycle uncollectable (to garbage) */
  obm_hash_fn_t *hash;             /* dict keys' hash; NULL: identity */
  obm_equal_fn_t *equal;           /* dict keys' equality (same type); NULL: identity */
  obm_sizeof_fn_t *sizeof_owned;   /* bytes of owned blocks for obm_sizeof; NULL: none */
};

#define OBM_VISIT(child)                                                                           \
  do {                                                                                             \
    obm_object_t *obm_visit_child_ = (obm_object_t *)(child);                                      \
    if (obm_visit_child_ != NULL) {                                                                \
      int obm_visit_ret_ = visit(obm_visit_child_, arg);                                           \
      if (obm_visit_ret_ != 0) return obm_visit_ret_;                                              \
    }                                                                                              \
  } while (0)

/* ---- reference counting ------------------------------------------------------------------ */

/* The out-of-line half of obm_decref: the count was 1 (deallocate), 0 (report underflow) or
 * immortal (nothing).  Not for direct use. */
OBM_API void obm_decref_slow(obm_runtime_t *rt, obm_object_t *op);

static inline void obm_incref(obm_object_t *op) {
  uint32_t rc = op->refcnt;
  if (rc < OBM_IMMORTAL_MIN) op->refcnt = rc + 1; /* saturates into the immortal range */
}

static inline void obm_decref(obm_runtime_t *rt, obm_object_t *op) {
  uint32_t rc = op->refcnt;
  /* one compare: 2 <= rc < OBM_IMMORTAL_MIN is the common case */
  if (OBM_OBJECT_UNLIKELY(rc - 2u >= OBM_IMMORTAL_MIN - 2u))
    obm_decref_slow(rt, op);
  else
    op->refcnt = rc - 1;
}

static inline void obm_xincref(obm_object_t *op) {
  if (op != NULL) obm_incref(op);
}
static inline void obm_xdecref(obm_runtime_t *rt, obm_object_t *op) {
  if (op != NULL) obm_decref(rt, op);
}
static inline uint32_t obm_refcnt(const obm_object_t *op) {
  return op->refcnt;
}
static inline int obm_is_immortal(const obm_object_t *op) {
  return op->refcnt >= OBM_IMMORTAL_MIN;
}
/* Makes op immortal: never freed (its memory is leaked on purpose), never written by
 * incref/decref.  A GC object stays tracked and acts as a root. */
static inline void obm_set_immortal(obm_object_t *op) {
  op->refcnt = OBM_IMMORTAL_REFCNT;
}

/* ---- the runtime ------------------------------------------------------------------------- */

#define OBM_GC_NGENERATIONS 3
#define OBM_TRASH_DEPTH     50 /* nested deallocations before GC objects are deferred */

/* A new runtime (collector enabled, thresholds 700/10/10), or NULL with errno ENOMEM. */
OBM_API obm_runtime_t *obm_runtime_new(void);
/* Collects everything collectable, releases the garbage list, untracks the objects still
 * alive (they are leaked: they must not be released through rt afterwards) and frees rt.
 * Returns how many objects created through rt were still alive. */
OBM_API size_t obm_runtime_free(obm_runtime_t *rt);
/* Objects created through rt and not yet freed (GC and non-GC). */
OBM_API size_t obm_runtime_live_objects(const obm_runtime_t *rt);

/* ---- objects ----------------------------------------------------------------------------- */

/* A new object of `type` with count 1, every byte after the header zero, tracked when the
 * type is a GC type.  A GC type's creation may first run an automatic collection.
 * NULL with errno ENOMEM, or EINVAL for an inconsistent type. */
OBM_API obm_object_t *obm_object_new(obm_runtime_t *rt, const obm_type_t *type);
/* The same for a variable-size type: basic_size + nitems * item_size bytes; ->size = nitems. */
OBM_API obm_object_t *obm_object_new_var(obm_runtime_t *rt, const obm_type_t *type, size_t nitems);
OBM_API int obm_is_finalized(const obm_object_t *op);
/* Total bytes of op's memory block as requested (GC head included). */
OBM_API size_t obm_object_size(const obm_object_t *op);

/* ---- the cycle collector ----------------------------------------------------------------- */

/* Debug flags (gc.set_debug): */
#define OBM_GC_DEBUG_STATS         0x01u /* a line per collection on the debug output */
#define OBM_GC_DEBUG_COLLECTABLE   0x02u /* each collectable object found */
#define OBM_GC_DEBUG_UNCOLLECTABLE 0x04u /* each uncollectable object found */
#define OBM_GC_DEBUG_SAVEALL       0x20u /* garbage goes to obm_gc_garbage, not freed */
/* "Hard GC" test mode (Lua's): every GC object creation first runs a collection (the oldest
 * generation, or a step in incremental mode), unless collection is disabled; slow, for tests. */
#define OBM_GC_DEBUG_HARD 0x100u
#define OBM_GC_DEBUG_LEAK                                                                          \
  (OBM_GC_DEBUG_COLLECTABLE | OBM_GC_DEBUG_UNCOLLECTABLE | OBM_GC_DEBUG_SAVEALL)

typedef enum obm_gc_phase_e { OBM_GC_START = 0, OBM_GC_STOP = 1 } obm_gc_phase_t;

/* What a collection did (the start callback sees zeros). */
typedef struct obm_gc_info_s {
  int generation;
  size_t collected;     /* unreachable objects freed (resurrected ones excluded) */
  size_t uncollectable; /* unreachable but kept: legacy finalizers and what they reach */
  size_t candidates;    /* objects examined */
  uint64_t duration_ns; /* 0 at start */
} obm_gc_info_t;

/* Cumulative, per generation (gc.get_stats). */
typedef struct obm_gc_stats_s {
  uint64_t collections;
  uint64_t collected;
  uint64_t uncollectable;
  uint64_t duration_ns;
} obm_gc_stats_t;

typedef void obm_gc_callback_t(obm_runtime_t *rt, obm_gc_phase_t phase, const obm_gc_info_t *info,
                               void *arg);

/* Collects generation 0..2 (and every younger one); returns the number of unreachable objects
 * found (collected + uncollectable), 0 if a collection is already running, or -1 with errno
 * EINVAL for another generation. */
OBM_API ptrdiff_t obm_gc_collect(obm_runtime_t *rt, int generation);
OBM_API void obm_gc_enable(obm_runtime_t *rt);
OBM_API void obm_gc_disable(obm_runtime_t *rt);
OBM_API int obm_gc_is_enabled(const obm_runtime_t *rt);
/* threshold0 == 0 disables automatic collection. */
OBM_API void obm_gc_set_threshold(obm_runtime_t *rt, size_t threshold0, size_t threshold1,
                                  size_t threshold2);
OBM_API void obm_gc_get_threshold(const obm_runtime_t *rt, size_t out[OBM_GC_NGENERATIONS]);
/* Generation 0: GC objects created minus freed since its last collection; generation n > 0:
 * collections of generation n - 1 since its own last collection. */
OBM_API void obm_gc_get_count(const obm_runtime_t *rt, size_t out[OBM_GC_NGENERATIONS]);
OBM_API void obm_gc_get_stats(const obm_runtime_t *rt, obm_gc_stats_t out[OBM_GC_NGENERATIONS]);
/* Moves every tracked object to the permanent generation, which collections ignore. */
OBM_API void obm_gc_freeze(obm_runtime_t *rt);
/* Moves the permanent generation back into the oldest generation. */
OBM_API void obm_gc_unfreeze(obm_runtime_t *rt);
OBM_API size_t obm_gc_get_freeze_count(const obm_runtime_t *rt);
OBM_API void obm_gc_set_debug(obm_runtime_t *rt, unsigned flags);
OBM_API unsigned obm_gc_get_debug(const obm_runtime_t *rt);
/* Where the debug flags print (NULL = stderr). */
OBM_API void obm_gc_set_debug_output(obm_runtime_t *rt, FILE *out);
/* Registers fn(rt, phase, info, arg) to run at the start and stop of every collection
 * (0, or ENOMEM); remove returns 0, or ENOENT when that pair was not registered. */
OBM_API int obm_gc_callback_add(obm_runtime_t *rt, obm_gc_callback_t *fn, void *arg);
OBM_API int obm_gc_callback_remove(obm_runtime_t *rt, obm_gc_callback_t *fn, void *arg);
/* The list of uncollectable objects (and everything, with SAVEALL) — borrowed; the program
 * may empty it (obm_list_clear) to let its objects go. */
OBM_API obm_object_t *obm_gc_garbage(obm_runtime_t *rt);
OBM_API int obm_gc_is_tracked(const obm_object_t *op);
/* Links op into generation 0 / unlinks it (no-ops when already so; op must be of a GC type).
 * Objects are tracked at creation; an object that can never be part of a cycle may be
 * untracked to save collection time. */
OBM_API void obm_gc_track(obm_runtime_t *rt, obm_object_t *op);
OBM_API void obm_gc_untrack(obm_object_t *op);
/* New lists (NULL + ENOMEM): the tracked objects that refer to any of objs[0..n) (outside
 * the permanent generation), the objects any of objs refers to, the objects tracked in
 * `generation` (-1: all generations, the permanent one excluded). */
OBM_API obm_object_t *obm_gc_get_referrers(obm_runtime_t *rt, obm_object_t *const *objs, size_t n);
OBM_API obm_object_t *obm_gc_get_referents(obm_runtime_t *rt, obm_object_t *const *objs, size_t n);
OBM_API obm_object_t *obm_gc_get_objects(obm_runtime_t *rt, int generation);

/* Incremental mode (beyond CPython 3.12; docs/object.md): the automatic full collections are
 * replaced by steps, one at each young collection while a sweep of the oldest generation is
 * due, each examining about `budget` objects of it — more when a step must be extended so
 * that no reference cycle is split between two steps (a step takes the objects reachable
 * from its first ones inside the unvisited part of the oldest generation).  Same semantics
 * as a full collection (finalizers, resurrection, weak references, legacy finalizers).
 * obm_gc_collect(rt, 2) still makes a whole collection.  budget 0 turns the mode off.
 * Returns 0. */
OBM_API int obm_gc_set_incremental(obm_runtime_t *rt, size_t budget);
/* The budget (objects per step), 0 when the mode is off. */
OBM_API size_t obm_gc_get_incremental(const obm_runtime_t *rt);
/* One step now (a young collection plus one increment of the oldest generation, starting a
 * sweep if none runs), whether the mode is on or not (budget 0: OBM_GC_DEFAULT_STEP).
 * Returns the unreachable objects found, or 0 if a collection is already running. */
OBM_API ptrdiff_t obm_gc_collect_step(obm_runtime_t *rt);
#define OBM_GC_DEFAULT_STEP 1000 /* objects per step: a pause of 0.6-0.7 ms on a 10^7-object heap */

/* ---- weak references --------------------------------------------------------------------- */

/* Called after the referent's weak references were cleared: wr is alive (its referent is
 * gone), data is the object given at creation (may be NULL). */
typedef void obm_weakref_callback_t(obm_runtime_t *rt, obm_weakref_t *wr, obm_object_t *data);

/* A weak reference (a GC object).  Invariants: referent == NULL (cleared) or wr is in
 * referent's list; prev/next link that list, newest first. */
struct obm_weakref_s {
  obm_object_t base;
  obm_object_t *referent;           /* borrowed; NULL once cleared */
  obm_weakref_callback_t *callback; /* NULL: none, or already called */
  obm_object_t *callback_data;      /* strong reference, may be NULL */
  obm_weakref_t *prev, *next;       /* the referent's list */
};

OBM_API extern const obm_type_t obm_weakref_type;

/* A weak reference to referent (whose type has a weaklist_offset), with an optional callback
 * and data (held strongly; reachable through the weak reference).  NULL with errno ENOMEM,
 * or EINVAL when referent's type does not support weak references. */
OBM_API obm_weakref_t *obm_weakref_new(obm_runtime_t *rt, obm_object_t *referent,
                                       obm_weakref_callback_t *callback, obm_object_t *data);
/* The referent (borrowed), or NULL once cleared or while it is being deallocated. */
OBM_API obm_object_t *obm_weakref_get(const obm_weakref_t *wr);
/* Weak references to op not yet cleared. */
OBM_API size_t obm_weakref_count(const obm_object_t *op);

/* ---- list: a growable array of strong references ----------------------------------------- */

/* Invariants: size <= capacity; items[0..size) are non-NULL strong references;
 * items == NULL iff capacity == 0. */
typedef struct obm_list_s {
  obm_object_t base;
  size_t size;
  size_t capacity;
  obm_object_t **items;
  obm_weakref_t *weaklist;
} obm_list_t;

OBM_API extern const obm_type_t obm_list_type;

/* NULL + ENOMEM.  capacity is a hint. */
OBM_API obm_object_t *obm_list_new(obm_runtime_t *rt, size_t capacity);
/* Appends a new reference to item (non-NULL): 0, ENOMEM, or EINVAL (not a list, NULL). */
OBM_API int obm_list_append(obm_runtime_t *rt, obm_object_t *list, obm_object_t *item);
OBM_API size_t obm_list_size(const obm_object_t *list);
/* Borrowed; NULL when index >= size. */
OBM_API obm_object_t *obm_list_get(const obm_object_t *list, size_t index);
/* Replaces items[index] by a new reference to item, then drops the old one: 0 or EINVAL. */
OBM_API int obm_list_set(obm_runtime_t *rt, obm_object_t *list, size_t index, obm_object_t *item);
/* Removes items[index] (later items move down), dropping its reference: 0 or EINVAL. */
OBM_API int obm_list_delete(obm_runtime_t *rt, obm_object_t *list, size_t index);
/* Removes and returns the last item (the caller owns the reference); NULL when empty. */
OBM_API obm_object_t *obm_list_pop(obm_runtime_t *rt, obm_object_t *list);
/* Removes every item. */
OBM_API void obm_list_clear(obm_runtime_t *rt, obm_object_t *list);
OBM_API int obm_list_check(const obm_object_t *op);

/* ---- record: a fixed number of slots, chosen at creation (like __slots__) ------------------- */

/* Invariants: base.size == number of slots; each slot is NULL or a strong reference. */
typedef struct obm_record_s {
  obm_var_object_t base;
  obm_weakref_t *weaklist;
  obm_object_t *slots[];
} obm_record_t;

OBM_API extern const obm_type_t obm_record_type;
OBM_API int obm_record_traverse(obm_object_t *op, obm_visit_t *visit, void *arg);
OBM_API void obm_record_clear(obm_runtime_t *rt, obm_object_t *op);

/* The fields every record type shares; a program derives a type with its own name and
 * finalizers:  static const obm_type_t node = {OBM_RECORD_TYPE_FIELDS("node"),
 *                                               .finalize = node_finalize};  */
#define OBM_RECORD_TYPE_FIELDS(type_name)                                                          \
  .name = (type_name), .basic_size = sizeof(obm_record_t), .item_size = sizeof(obm_object_t *),    \
  .flags = OBM_TYPE_GC, .weaklist_offset = offsetof(obm_record_t, weaklist),                       \
  .traverse = obm_record_traverse, .clear = obm_record_clear

/* A record of `type` (obm_record_type or one declared with OBM_RECORD_TYPE_FIELDS) with
 * nslots NULL slots.  NULL with errno ENOMEM, or EINVAL for another layout. */
OBM_API obm_object_t *obm_record_new(obm_runtime_t *rt, const obm_type_t *type, size_t nslots);
OBM_API size_t obm_record_size(const obm_object_t *rec);
/* Borrowed; NULL when empty or index >= size. */
OBM_API obm_object_t *obm_record_get(const obm_object_t *rec, size_t index);
/* Stores a new reference to value (may be NULL), then drops the old one: 0 or EINVAL. */
OBM_API int obm_record_set(obm_runtime_t *rt, obm_object_t *rec, size_t index, obm_object_t *value);
/* 1 when op's type has the record layout. */
OBM_API int obm_record_check(const obm_object_t *op);

/* ---- built-in types: int, str, tuple, dict; footprints ------------------------------------ */
/* CPython's longobject.c, unicodeobject.c, tupleobject.c and dictobject.c, reduced to what
 * programs and tests need, with CPython's layout choices where they decide the footprint
 * (docs/object.md, "Built-in types").  Constants shared by every runtime are static immortal
 * objects: the small ints -5..256, the empty str and the empty tuple. */

/* Hash and equality of dict keys (CPython's tp_hash / tp_richcompare for the built-in types):
 * int and str by value, tuple by its items, another type through its hash and equal hooks,
 * and by identity without them (the default object.__hash__ / __eq__).  Never fail. */
OBM_API obm_hash_t obm_object_hash(obm_object_t *op);
OBM_API int obm_object_equal(obm_object_t *a, obm_object_t *b);

/* int: a 64-bit value.  Values OBM_INT_SMALL_MIN..OBM_INT_SMALL_MAX are static immortal
 * objects shared by all runtimes (CPython's small-int cache), so obm_int_new of such a value
 * returns the same object every time and allocates nothing. */
typedef struct obm_int_s {
  obm_object_t base;
  int64_t value;
} obm_int_t;

#define OBM_INT_SMALL_MIN (-5)
#define OBM_INT_SMALL_MAX 256

OBM_API extern const obm_type_t obm_int_type;
/* A new reference; NULL with errno ENOMEM. */
OBM_API obm_object_t *obm_int_new(obm_runtime_t *rt, int64_t value);
/* 0 when op is not an int. */
OBM_API int64_t obm_int_value(const obm_object_t *op);
OBM_API int obm_int_check(const obm_object_t *op);

/* str: immutable bytes (UTF-8 text by convention, not validated), NUL-terminated, with a
 * cached hash.  Invariants: base.size == length in bytes; data[base.size] == '\0';
 * hash == 0 (not computed yet) or the hash of data (never 0 once computed).
 * Interning (obm_str_intern): one table per runtime holds each interned str without owning
 * it (CPython <= 3.11's mortal interning), so an interned str is freed like any other and
 * leaves the table when it goes. */
typedef struct obm_str_s {
  obm_var_object_t base;
  obm_hash_t hash;
  uint32_t state; /* OBM_STR_INTERNED, OBM_STR_STATIC */
  char data[];
} obm_str_t;

#define OBM_STR_INTERNED 0x1u
#define OBM_STR_STATIC   0x2u /* the static empty str */

OBM_API extern const obm_type_t obm_str_type;
/* New references; NULL with errno ENOMEM (or EINVAL for a NULL bytes with length > 0). */
OBM_API obm_object_t *obm_str_new(obm_runtime_t *rt, const char *bytes, size_t length);
OBM_API obm_object_t *obm_str_from_cstr(obm_runtime_t *rt, const char *cstr);
OBM_API obm_object_t *obm_str_concat(obm_runtime_t *rt, obm_object_t *a, obm_object_t *b);
/* The bytes ("" when op is not a str) and their count. */
OBM_API const char *obm_str_data(const obm_object_t *op);
OBM_API size_t obm_str_length(const obm_object_t *op);
OBM_API int obm_str_check(const obm_object_t *op);
/* A new reference to rt's interned str equal to str (str itself when it becomes the interned
 * one; str is not consumed); NULL with errno ENOMEM or EINVAL (not a str). */
OBM_API obm_object_t *obm_str_intern(obm_runtime_t *rt, obm_object_t *str);
OBM_API obm_object_t *obm_str_intern_cstr(obm_runtime_t *rt, const char *cstr);
OBM_API int obm_str_is_interned(const obm_object_t *op);
/* Strings in rt's interning table. */
OBM_API size_t obm_str_interned_count(obm_runtime_t *rt);

/* tuple: immutable, items inline after the header (CPython's PyTupleObject).  The empty
 * tuple is one static immortal object.  Invariants: base.size items, each a strong reference,
 * non-NULL once the constructor returns. */
typedef struct obm_tuple_s {
  obm_var_object_t base;
  obm_object_t *items[];
} obm_tuple_t;

OBM_API extern const obm_type_t obm_tuple_type;
/* New references to a tuple holding new references to items[0..n) (all non-NULL);
 * NULL with errno ENOMEM or EINVAL. */
OBM_API obm_object_t *obm_tuple_from_array(obm_runtime_t *rt, obm_object_t *const *items, size_t n);
OBM_API obm_object_t *obm_tuple_pack(obm_runtime_t *rt, size_t n, ...);
OBM_API size_t obm_tuple_size(const obm_object_t *op);
/* Borrowed; NULL when index >= size. */
OBM_API obm_object_t *obm_tuple_get(const obm_object_t *op, size_t index);
OBM_API int obm_tuple_check(const obm_object_t *op);

/* dict: insertion-ordered hash table (CPython 3.6+'s compact dict): an index table of
 * 2^k slots (1, 2, 4 or 8 bytes each, by size) over a dense array of (hash, key, value)
 * entries in insertion order, both in one block (keys).  Invariants: keys == NULL iff the
 * dict never held anything or was cleared; used == live entries <= entries appended <=
 * usable fraction (2/3) of the slots. */
typedef struct obm_dict_keys_s obm_dict_keys_t;
typedef struct obm_dict_s {
  obm_object_t base;
  size_t used;
  obm_dict_keys_t *keys; /* NULL: empty, no table */
} obm_dict_t;

OBM_API extern const obm_type_t obm_dict_type;
OBM_API obm_object_t *obm_dict_new(obm_runtime_t *rt);
/* Maps key to a new reference to value (both non-NULL); an existing key keeps its place and
 * its key object.  0, ENOMEM, or EINVAL (not a dict, NULL key or value). */
OBM_API int obm_dict_set(obm_runtime_t *rt, obm_object_t *dict, obm_object_t *key,
                         obm_object_t *value);
/* Borrowed value, or NULL when absent. */
OBM_API obm_object_t *obm_dict_get(const obm_object_t *dict, obm_object_t *key);
/* The value of the str key equal to cstr (no object created), or NULL. */
OBM_API obm_object_t *obm_dict_get_cstr(const obm_object_t *dict, const char *cstr);
/* Removes key: 0, ENOENT, or EINVAL. */
OBM_API int obm_dict_delete(obm_runtime_t *rt, obm_object_t *dict, obm_object_t *key);
OBM_API size_t obm_dict_size(const obm_object_t *dict);
/* Iteration in insertion order: *pos = 0 first; 1 with borrowed *key and *value (either
 * pointer may be NULL), 0 at the end.  The dict must not change during an iteration. */
OBM_API int obm_dict_next(const obm_object_t *dict, size_t *pos, obm_object_t **key,
                          obm_object_t **value);
OBM_API void obm_dict_clear(obm_runtime_t *rt, obm_object_t *dict);
/* Slots of the index table (0 without a table): shows growth and shrinking. */
OBM_API size_t obm_dict_table_size(const obm_object_t *dict);
OBM_API int obm_dict_check(const obm_object_t *op);

/* Footprints.  obm_sizeof: the bytes op really occupies — obm_usable_size of its block (GC
 * head and the allocator's rounding included) plus the blocks it owns (a list's item array,
 * a dict's table); a static object counts its struct.  Objects of other types count their
 * block only.  obm_sizeof_deep: the sum of obm_sizeof over every object reachable from op
 * through traverse, each counted once; 0 with errno ENOMEM if its work set cannot be
 * allocated.  No count changes, no user code runs; any chain depth. */
OBM_API size_t obm_sizeof(const obm_object_t *op);
OBM_API size_t obm_sizeof_deep(obm_runtime_t *rt, obm_object_t *op);

#ifdef __cplusplus
}
#endif
#endif /* OBMEM_OBJECT_H */
