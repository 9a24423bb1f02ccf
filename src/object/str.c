/* str.c — the str type: immutable bytes with a cached hash (CPython's compact ASCII
 * PyUnicodeObject: header, length, hash, state, then the characters and a NUL in the same
 * block), the static empty str, and interning.
 *
 * Layout: [refcnt|flags][type][size = length][hash][state] data[length] '\0' — 36 bytes plus
 * the text plus one, so a 5-byte str takes a 48-byte block (CPython: 40 + 6 -> 48).
 *
 * Hash: FNV-1a over the bytes, then a 64-bit finalizer (murmur3's fmix64) so that the low
 * bits a dict's index uses depend on every byte.  Computed on first use and cached; 0 means
 * "not yet", so a computed 0 is stored as 1.  Not randomized per process (CPython's SipHash
 * is, against collision attacks); obm_object_hash's users are programs, not network input.
 *
 * Interning (CPython <= 3.11's mortal interned strings): each runtime has a table of its
 * interned strings, an open-addressing set (linear probing, deletion by backward shift) of
 * borrowed pointers.  A str in the table has OBM_STR_INTERNED; its deallocation removes it.
 * CPython 3.12 makes interned strings immortal instead; mortal ones keep "every object freed
 * at the end" checkable and free what a program no longer uses.
 * The table hangs from its runtime (rt->interned; a runtime is used by one thread at a time,
 * so no lock); it exists only while it holds strings and is freed with its last one, or by
 * obm_runtime_free when strings leaked.
 */
#include "object/types_internal.h"

#include <errno.h>
#include <string.h>

/* ---- the type ---------------------------------------------------------------------------- */

static void str_dealloc(obm_runtime_t *rt, obm_object_t *op);

const obm_type_t obm_str_type = {
    .name = "str",
    .basic_size = offsetof(obm_str_t, data) + 1, /* the NUL */
    .item_size = 1,
    .dealloc = str_dealloc,
};

/* The empty str: static, immortal, shared by all runtimes (CPython's empty-string singleton).
 * Its hash is set on first obm_object_hash without a write (computed as a constant here). */
static struct {
  obm_str_t str;
  char nul[8];
} empty_str = {
    .str = {.base = {.base = OBM_OBJECT_STATIC_INIT(&obm_str_type), .size = 0},
            .hash = 0,
            .state = OBM_STR_INTERNED | OBM_STR_STATIC},
};

int obm_str_check(const obm_object_t *op) {
  return op != NULL && op->type == &obm_str_type;
}

static obm_hash_t hash_finish(uint64_t h) {
  h = _obm_mix64(h);
  return h != 0 ? h : 1;
}

/* The hash every str of these bytes has (the dict's obm_dict_get_cstr uses it too). */
obm_hash_t _obm_str_hash_bytes(const char *bytes, size_t length) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < length; i++) {
    h ^= (unsigned char)bytes[i];
    h *= 0x100000001b3ull;
  }
  return hash_finish(h ^ length);
}

/* op's hash, computed once (the static empty str is never written: its hash is recomputed,
 * which is one multiply chain). */
obm_hash_t _obm_str_hash(obm_object_t *op) {
  obm_str_t *s = (obm_str_t *)op;
  if (s->hash != 0) return s->hash;
  obm_hash_t h = _obm_str_hash_bytes(s->data, s->base.size);
  if (!(s->state & OBM_STR_STATIC)) s->hash = h;
  return h;
}

/* An uninitialized str of `length` bytes (NUL placed), or NULL + ENOMEM. */
static obm_str_t *str_alloc(obm_runtime_t *rt, size_t length) {
  obm_str_t *s = (obm_str_t *)obm_object_new_var(rt, &obm_str_type, length);
  if (s != NULL) s->data[length] = '\0';
  return s;
}

obm_object_t *obm_str_new(obm_runtime_t *rt, const char *bytes, size_t length) {
  if (length == 0) return &empty_str.str.base.base;
  if (bytes == NULL) {
    errno = EINVAL;
    return NULL;
  }
  obm_str_t *s = str_alloc(rt, length);
  if (s == NULL) return NULL;
  memcpy(s->data, bytes, length);
  return &s->base.base;
}

obm_object_t *obm_str_from_cstr(obm_runtime_t *rt, const char *cstr) {
  if (cstr == NULL) {
    errno = EINVAL;
    return NULL;
  }
  return obm_str_new(rt, cstr, strlen(cstr));
}

obm_object_t *obm_str_concat(obm_runtime_t *rt, obm_object_t *a, obm_object_t *b) {
  if (!obm_str_check(a) || !obm_str_check(b)) {
    errno = EINVAL;
    return NULL;
  }
  size_t na = obm_str_length(a), nb = obm_str_length(b);
  if (nb == 0 || na == 0) {
    obm_object_t *whole = nb == 0 ? a : b;
    obm_incref(whole);
    return whole;
  }
  if (na > SIZE_MAX / 2 - nb) {
    errno = ENOMEM;
    return NULL;
  }
  obm_str_t *s = str_alloc(rt, na + nb);
  if (s == NULL) return NULL;
  memcpy(s->data, obm_str_data(a), na);
  memcpy(s->data + na, obm_str_data(b), nb);
  return &s->base.base;
}

const char *obm_str_data(const obm_object_t *op) {
  return obm_str_check(op) ? ((const obm_str_t *)op)->data : "";
}

size_t obm_str_length(const obm_object_t *op) {
  return obm_str_check(op) ? ((const obm_str_t *)op)->base.size : 0;
}

int obm_str_is_interned(const obm_object_t *op) {
  return obm_str_check(op) && (((const obm_str_t *)op)->state & OBM_STR_INTERNED) != 0;
}

/* ---- interning --------------------------------------------------------------------------- */

/* One runtime's interned strings.  Invariants: capacity is a power of two >= 8;
 * count < capacity * 3/4; every slot is NULL or an interned str of rt (state has
 * OBM_STR_INTERNED), no two equal; each str sits in the probe run starting at
 * hash & (capacity - 1) with no NULL slot between. */
typedef struct intern_table_s {
  obm_runtime_t *rt;
  size_t capacity;
  size_t count;
  obm_str_t **slots;
} intern_table_t;

static intern_table_t *table_find(obm_runtime_t *rt) {
  return rt->interned;
}

static intern_table_t *table_create(obm_runtime_t *rt) {
  intern_table_t *t = obm_malloc(sizeof *t);
  obm_str_t **slots = obm_calloc(8, sizeof *slots);
  if (t == NULL || slots == NULL) {
    obm_free(t);
    obm_free(slots);
    return NULL;
  }
  *t = (intern_table_t){.rt = rt, .capacity = 8, .slots = slots};
  rt->interned = t;
  return t;
}

static void table_destroy(intern_table_t *t) {
  t->rt->interned = NULL;
  obm_free(t->slots);
  obm_free(t);
}

void _obm_str_interned_release(obm_runtime_t *rt) {
  intern_table_t *t = rt->interned;
  if (t == NULL) return;
  for (size_t i = 0; i < t->capacity; i++)
    if (t->slots[i] != NULL) t->slots[i]->state &= ~(uint32_t)OBM_STR_INTERNED;
  table_destroy(t);
}

static bool str_equal_bytes(const obm_str_t *s, const char *bytes, size_t length) {
  return s->base.size == length && memcmp(s->data, bytes, length) == 0;
}

/* The slot holding a str equal to s, or the NULL slot ending its probe run. */
static size_t table_probe(const intern_table_t *t, obm_str_t *s) {
  size_t mask = t->capacity - 1;
  obm_hash_t hash = _obm_str_hash(&s->base.base);
  size_t i = (size_t)hash & mask;
  while (t->slots[i] != NULL) {
    obm_str_t *other = t->slots[i];
    if (other == s || (other->hash == hash && str_equal_bytes(other, s->data, s->base.size))) break;
    i = (i + 1) & mask;
  }
  return i;
}

static int table_grow(intern_table_t *t) {
  size_t capacity = t->capacity * 2;
  obm_str_t **old = t->slots;
  size_t old_capacity = t->capacity;
  obm_str_t **slots = obm_calloc(capacity, sizeof *slots);
  if (slots == NULL) return ENOMEM;
  t->slots = slots;
  t->capacity = capacity;
  for (size_t i = 0; i < old_capacity; i++)
    if (old[i] != NULL) t->slots[table_probe(t, old[i])] = old[i];
  obm_free(old);
  return 0;
}

/* Removes s (present) and closes the gap by moving later members of the run back. */
static void table_remove(intern_table_t *t, obm_str_t *s) {
  size_t mask = t->capacity - 1;
  size_t hole = table_probe(t, s);
  obm_assert(t->slots[hole] == s);
  t->slots[hole] = NULL;
  t->count--;
  for (size_t i = (hole + 1) & mask; t->slots[i] != NULL; i = (i + 1) & mask) {
    size_t home = (size_t)t->slots[i]->hash & mask;
    /* the member at i may fill the hole when its home is not in (hole, i] (cyclically) */
    bool home_after_hole = ((i - home) & mask) < ((i - hole) & mask);
    if (!home_after_hole) {
      t->slots[hole] = t->slots[i];
      t->slots[i] = NULL;
      hole = i;
    }
  }
}

obm_object_t *obm_str_intern(obm_runtime_t *rt, obm_object_t *op) {
  if (!obm_str_check(op)) {
    errno = EINVAL;
    return NULL;
  }
  obm_str_t *s = (obm_str_t *)op;
  if (s->state & OBM_STR_INTERNED) {
    obm_incref(op);
    return op;
  }
  intern_table_t *t = table_find(rt);
  if (t == NULL && (t = table_create(rt)) == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  size_t i = table_probe(t, s);
  if (t->slots[i] == NULL) {
    if ((t->count + 1) * 4 >= t->capacity * 3) {
      if (table_grow(t) != 0) {
        if (t->count == 0) table_destroy(t);
        errno = ENOMEM;
        return NULL;
      }
      i = table_probe(t, s);
    }
    t->slots[i] = s;
    t->count++;
    s->state |= OBM_STR_INTERNED;
  }
  obm_incref(&t->slots[i]->base.base);
  return &t->slots[i]->base.base;
}

obm_object_t *obm_str_intern_cstr(obm_runtime_t *rt, const char *cstr) {
  obm_object_t *s = obm_str_from_cstr(rt, cstr);
  if (s == NULL) return NULL;
  obm_object_t *interned = obm_str_intern(rt, s);
  obm_decref(rt, s);
  return interned;
}

size_t obm_str_interned_count(obm_runtime_t *rt) {
  intern_table_t *t = table_find(rt);
  return t != NULL ? t->count : 0;
}

static void str_dealloc(obm_runtime_t *rt, obm_object_t *op) {
  obm_str_t *s = (obm_str_t *)op;
  if (!(s->state & OBM_STR_INTERNED)) return;
  intern_table_t *t = table_find(rt);
  if (t == NULL) {
    _obm_error(OBM_ERR_CORRUPTION, op,
               "an interned str is released through a runtime that has no interned strings "
               "(released through another runtime than the one that created it?)");
    return;
  }
  table_remove(t, s);
  if (t->count == 0) table_destroy(t);
}
