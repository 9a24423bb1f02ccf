/* test_types.c — the built-in types int, str, tuple, dict and the footprints obm_sizeof /
 * obm_sizeof_deep (include/obmem/object.h, src/object/{int,str,tuple,dict,sizeof}.c).
 *
 * Each test runs on a fresh runtime and ends with no live object in it (tt_end).  The dict is
 * checked against a shadow model (arrays indexed by key number, and the insertion order) over
 * random insert/delete/lookup sequences with a fixed seed (OBMEM_TEST_SEED or argv[1]
 * replays); footprints against obm_usable_size of the very blocks; cycles through dicts and
 * tuples against obm_gc_collect's count and a counting record type (deallocated exactly once).
 *
 * Usage: test_types [SEED|-] [DICT_OPS]
 */
#include "obmem/object.h"

#include "object_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

static uint64_t tt_rng; /* from the seed; the main thread only */

static uint64_t tt_rand(void) {
  return check_rand(&tt_rng);
}

static obm_runtime_t *tt_begin(void) {
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  ot_reset_calls();
  return rt;
}

/* The leak check every test ends with. */
static void tt_end(obm_runtime_t *rt) {
  CHECKF(obm_runtime_live_objects(rt) == 0, "%zu objects alive at the end",
         obm_runtime_live_objects(rt));
  CHECK(obm_str_interned_count(rt) == 0);
  CHECK(obm_runtime_free(rt) == 0);
}

static obm_object_t *tt_int(obm_runtime_t *rt, int64_t v) {
  obm_object_t *op = obm_int_new(rt, v);
  CHECK(op != NULL);
  return op;
}

static obm_object_t *tt_str(obm_runtime_t *rt, const char *s) {
  obm_object_t *op = obm_str_from_cstr(rt, s);
  CHECK(op != NULL);
  return op;
}

/* The allocator block of a GC object. */
static size_t gc_block(const obm_object_t *op) {
  return obm_usable_size((const char *)op - 16);
}

/* ---- int ------------------------------------------------------------------------------- */

static void test_int(void) {
  obm_runtime_t *rt = tt_begin();
  for (int64_t v = OBM_INT_SMALL_MIN; v <= OBM_INT_SMALL_MAX; v++) {
    obm_object_t *a = tt_int(rt, v), *b = tt_int(rt, v);
    CHECKF(a == b, "small int %" PRId64 " not cached", v);
    CHECK(obm_is_immortal(a));
    CHECK(obm_int_value(a) == v);
    uint32_t rc = obm_refcnt(a);
    obm_incref(a);
    obm_decref(rt, a);
    obm_decref(rt, b); /* immortal: no count change, no underflow report */
    CHECK(obm_refcnt(a) == rc);
  }
  CHECK(obm_runtime_live_objects(rt) == 0); /* the cache allocates nothing */
  CHECK(obm_int_check(tt_int(rt, 0)) && !obm_int_check(NULL));

  int64_t bigs[] = {OBM_INT_SMALL_MIN - 1, OBM_INT_SMALL_MAX + 1, INT64_MIN, INT64_MAX, 1 << 20};
  for (size_t i = 0; i < sizeof bigs / sizeof bigs[0]; i++) {
    obm_object_t *a = tt_int(rt, bigs[i]), *b = tt_int(rt, bigs[i]);
    CHECK(a != b && !obm_is_immortal(a) && obm_refcnt(a) == 1);
    CHECK(obm_int_value(a) == bigs[i]);
    CHECK(obm_object_equal(a, b) && obm_object_hash(a) == obm_object_hash(b));
    CHECK(obm_runtime_live_objects(rt) == 2);
    obm_decref(rt, a);
    obm_decref(rt, b);
  }
  obm_object_t *s = tt_str(rt, "1");
  CHECK(obm_int_value(s) == 0 && !obm_object_equal(s, tt_int(rt, 1)));
  obm_decref(rt, s);

  /* another runtime sees the very same small ints */
  obm_runtime_t *rt2 = obm_runtime_new();
  CHECK(rt2 != NULL && obm_int_new(rt2, 7) == obm_int_new(rt, 7));
  CHECK(obm_runtime_free(rt2) == 0);
  tt_end(rt);
}

/* ---- str ------------------------------------------------------------------------------- */

static void test_str(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *a = tt_str(rt, "hello");
  CHECK(obm_str_check(a) && obm_str_length(a) == 5 && strcmp(obm_str_data(a), "hello") == 0);
  CHECK(obm_str_data(a)[5] == '\0' && !obm_str_is_interned(a));
  obm_object_t *b = obm_str_new(rt, "hello world", 5);
  CHECK(b != NULL && b != a && obm_object_equal(a, b));
  CHECK(obm_object_hash(a) == obm_object_hash(b));
  obm_object_t *c = tt_str(rt, "hellp");
  CHECK(!obm_object_equal(a, c));
  /* bytes, not C strings: an embedded NUL is part of the value */
  obm_object_t *z1 = obm_str_new(rt, "a\0b", 3), *z2 = obm_str_new(rt, "a\0c", 3);
  CHECK(z1 != NULL && z2 != NULL && obm_str_length(z1) == 3 && !obm_object_equal(z1, z2));

  /* the empty str is one static immortal object */
  obm_object_t *e1 = obm_str_new(rt, NULL, 0), *e2 = tt_str(rt, "");
  CHECK(e1 == e2 && obm_is_immortal(e1) && obm_str_length(e1) == 0 && obm_str_is_interned(e1));
  CHECK(obm_str_new(rt, NULL, 3) == NULL && errno == EINVAL);

  obm_object_t *ab = obm_str_concat(rt, a, c);
  CHECK(ab != NULL && strcmp(obm_str_data(ab), "hellohellp") == 0 && obm_str_length(ab) == 10);
  obm_object_t *same = obm_str_concat(rt, a, e1);
  CHECK(same == a && obm_refcnt(a) == 2);
  obm_decref(rt, same);
  CHECK(obm_str_concat(rt, a, tt_int(rt, 3)) == NULL && errno == EINVAL);
  CHECK(strcmp(obm_str_data(tt_int(rt, 3)), "") == 0 && obm_str_length(NULL) == 0);

  obm_object_t *all[] = {a, b, c, z1, z2, ab};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    obm_decref(rt, all[i]);
  tt_end(rt);
}

static void test_intern(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *a = tt_str(rt, "name"), *b = tt_str(rt, "name");
  obm_object_t *ia = obm_str_intern(rt, a);
  CHECK(ia == a && obm_str_is_interned(a) && obm_refcnt(a) == 2); /* a became the interned one */
  obm_object_t *ib = obm_str_intern(rt, b);
  CHECK(ib == a && obm_refcnt(a) == 3 && obm_refcnt(b) == 1 && !obm_str_is_interned(b));
  obm_object_t *ic = obm_str_intern_cstr(rt, "name");
  CHECK(ic == a && obm_str_interned_count(rt) == 1);
  CHECK(obm_str_intern(rt, tt_int(rt, 1)) == NULL && errno == EINVAL);
  obm_decref(rt, b);
  obm_decref(rt, ib);
  obm_decref(rt, ic);
  obm_decref(rt, ia);
  CHECK(obm_refcnt(a) == 1 && obm_str_interned_count(rt) == 1);
  obm_decref(rt, a); /* mortal: the table forgets it */
  CHECK(obm_str_interned_count(rt) == 0);
  obm_object_t *again = obm_str_intern_cstr(rt, "name");
  CHECK(again != NULL && obm_str_interned_count(rt) == 1);
  obm_decref(rt, again);

  /* many strings, released in random order: every removal keeps the others findable
   * (the table's backward-shift deletion) */
  enum { N = 3000 };
  static obm_object_t *strs[N];
  char text[32];
  for (int i = 0; i < N; i++) {
    snprintf(text, sizeof text, "s%d", i * 7919);
    strs[i] = obm_str_intern_cstr(rt, text);
    CHECK(strs[i] != NULL);
  }
  CHECK(obm_str_interned_count(rt) == N);
  for (int i = N - 1; i > 0; i--) { /* shuffle */
    int j = (int)(tt_rand() % (uint64_t)(i + 1));
    obm_object_t *t = strs[i];
    strs[i] = strs[j];
    strs[j] = t;
  }
  for (int i = 0; i < N; i++) {
    obm_decref(rt, strs[i]);
    if (i % 97 == 0 || i > N - 20) {
      for (int j = i + 1; j < N; j++) {
        obm_object_t *found = obm_str_intern_cstr(rt, obm_str_data(strs[j]));
        CHECKF(found == strs[j], "interned str %s lost after %d removals", obm_str_data(strs[j]),
               i + 1);
        obm_decref(rt, found);
      }
    }
    CHECK(obm_str_interned_count(rt) == (size_t)(N - 1 - i));
  }

  /* tables are per runtime */
  obm_runtime_t *rt2 = obm_runtime_new();
  CHECK(rt2 != NULL);
  obm_object_t *x1 = obm_str_intern_cstr(rt, "shared text");
  obm_object_t *x2 = obm_str_intern_cstr(rt2, "shared text");
  CHECK(x1 != x2 && obm_str_interned_count(rt) == 1 && obm_str_interned_count(rt2) == 1);
  obm_decref(rt2, x2);
  CHECK(obm_str_interned_count(rt2) == 0 && obm_runtime_free(rt2) == 0);
  obm_decref(rt, x1);

  /* a runtime freed while an interned str is still alive (leaked) frees its table; the str
   * stays, no longer interned, and a new runtime starts with an empty table */
  obm_runtime_t *rt3 = obm_runtime_new();
  CHECK(rt3 != NULL);
  obm_object_t *leaked = obm_str_intern_cstr(rt3, "leaked");
  CHECK(leaked != NULL && obm_str_is_interned(leaked));
  CHECK(obm_runtime_free(rt3) == 1);
  CHECK(!obm_str_is_interned(leaked));
  obm_runtime_t *rt4 = obm_runtime_new();
  CHECK(rt4 != NULL && obm_str_interned_count(rt4) == 0);
  CHECK(obm_runtime_free(rt4) == 0);
  obm_free(leaked); /* str is not a GC type: its block starts at its header */
  tt_end(rt);
}

/* ---- a user type with the optional protocols --------------------------------------------- */

/* A point (x, y) owning a label buffer: equal points hash equal and are one dict key; its
 * footprint counts the buffer. */
typedef struct point_s {
  obm_object_t base;
  int64_t x, y;
  char *label; /* obm_malloc'ed */
} point_t;

static obm_hash_t point_hash(obm_object_t *op) {
  const point_t *p = (const point_t *)op;
  return (obm_hash_t)p->x * 1000003u ^ (obm_hash_t)p->y;
}
static int point_equal(obm_object_t *a, obm_object_t *b) {
  const point_t *p = (const point_t *)a, *q = (const point_t *)b;
  return p->x == q->x && p->y == q->y;
}
static size_t point_sizeof_owned(const obm_object_t *op) {
  return obm_usable_size(((const point_t *)op)->label);
}
static void point_dealloc(obm_runtime_t *rt, obm_object_t *op) {
  (void)rt;
  obm_free(((point_t *)op)->label);
}
static const obm_type_t point_type = {.name = "point",
                                      .basic_size = sizeof(point_t),
                                      .dealloc = point_dealloc,
                                      .hash = point_hash,
                                      .equal = point_equal,
                                      .sizeof_owned = point_sizeof_owned};
static const obm_type_t plain_point_type = {
    .name = "plain point", .basic_size = sizeof(point_t), .dealloc = point_dealloc};

static obm_object_t *point_new(obm_runtime_t *rt, const obm_type_t *type, int64_t x, int64_t y) {
  point_t *p = (point_t *)obm_object_new(rt, type);
  CHECK(p != NULL);
  p->x = x;
  p->y = y;
  p->label = obm_malloc(1000);
  CHECK(p->label != NULL);
  return &p->base;
}

static void test_type_hooks(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *d = obm_dict_new(rt);
  obm_object_t *a = point_new(rt, &point_type, 3, 4), *b = point_new(rt, &point_type, 3, 4);
  obm_object_t *c = point_new(rt, &point_type, 4, 3), *v = tt_int(rt, 7);
  CHECK(obm_object_hash(a) == obm_object_hash(b) && obm_object_equal(a, b));
  CHECK(!obm_object_equal(a, c));
  CHECK(obm_dict_set(rt, d, a, v) == 0);
  CHECK(obm_dict_get(d, b) == v); /* an equal key finds the entry */
  CHECK(obm_dict_get(d, c) == NULL);
  CHECK(obm_dict_set(rt, d, b, c) == 0 && obm_dict_size(d) == 1); /* same key: replaced */
  /* without the hooks: identity */
  obm_object_t *p = point_new(rt, &plain_point_type, 3, 4),
               *q = point_new(rt, &plain_point_type, 3, 4);
  CHECK(!obm_object_equal(p, q));
  CHECK(obm_dict_set(rt, d, p, v) == 0 && obm_dict_get(d, q) == NULL && obm_dict_size(d) == 2);
  /* footprints: the object's block plus, with the hook, the label */
  CHECK(obm_sizeof(a) == obm_usable_size(a) + obm_usable_size(((point_t *)a)->label));
  CHECK(obm_sizeof(p) == obm_usable_size(p));
  obm_decref(rt, d);
  obm_decref(rt, a);
  obm_decref(rt, b);
  obm_decref(rt, c);
  obm_decref(rt, v);
  obm_decref(rt, p);
  obm_decref(rt, q);
  tt_end(rt);
}

/* ---- tuple ----------------------------------------------------------------------------- */

static void test_tuple(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *x = tt_str(rt, "x"), *n = tt_int(rt, 1000);
  obm_object_t *t = obm_tuple_pack(rt, 3, x, n, x);
  CHECK(t != NULL && obm_tuple_check(t) && obm_tuple_size(t) == 3);
  CHECK(obm_tuple_get(t, 0) == x && obm_tuple_get(t, 1) == n && obm_tuple_get(t, 3) == NULL);
  CHECK(obm_refcnt(x) == 3 && obm_refcnt(n) == 2 && obm_gc_is_tracked(t));
  obm_object_t *items[] = {x, n, x};
  obm_object_t *u = obm_tuple_from_array(rt, items, 3);
  CHECK(u != NULL && u != t && obm_object_equal(t, u) && obm_object_hash(t) == obm_object_hash(u));
  obm_object_t *v = obm_tuple_pack(rt, 3, x, x, n);
  CHECK(!obm_object_equal(t, v)); /* order matters */
  obm_object_t *nested = obm_tuple_pack(rt, 2, t, v), *nested2 = obm_tuple_pack(rt, 2, u, v);
  CHECK(obm_object_equal(nested, nested2) && obm_object_hash(nested) == obm_object_hash(nested2));

  /* the empty tuple is one static immortal untracked object */
  obm_object_t *e1 = obm_tuple_pack(rt, 0), *e2 = obm_tuple_from_array(rt, NULL, 0);
  CHECK(e1 == e2 && obm_is_immortal(e1) && obm_tuple_size(e1) == 0 && !obm_gc_is_tracked(e1));
  obm_object_t *holds_empty = obm_tuple_pack(rt, 1, e1); /* a collection visits it harmlessly */
  CHECK(obm_gc_collect(rt, 2) == 0 && obm_is_immortal(e1));

  /* errors leave no object behind and counts unchanged */
  size_t live = obm_runtime_live_objects(rt);
  CHECK(obm_tuple_pack(rt, 2, x, (obm_object_t *)NULL) == NULL && errno == EINVAL);
  obm_object_t *bad[] = {x, NULL};
  CHECK(obm_tuple_from_array(rt, bad, 2) == NULL && errno == EINVAL);
  CHECK(obm_runtime_live_objects(rt) == live && obm_refcnt(x) == 7);
  CHECK(obm_tuple_size(x) == 0 && obm_tuple_get(x, 0) == NULL && !obm_tuple_check(x));

  obm_object_t *drop[] = {holds_empty, nested, nested2, t, u, v};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    obm_decref(rt, drop[i]);
  CHECK(obm_refcnt(x) == 1 && obm_refcnt(n) == 1);
  obm_decref(rt, x);
  obm_decref(rt, n);
  tt_end(rt);
}

/* ---- dict ------------------------------------------------------------------------------ */

static void test_dict_basic(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *d = obm_dict_new(rt);
  CHECK(d != NULL && obm_dict_size(d) == 0 && obm_dict_table_size(d) == 0);
  obm_object_t *k1 = tt_str(rt, "one"), *k2 = tt_int(rt, 2), *k3 = tt_int(rt, 1 << 30);
  obm_object_t *v1 = tt_str(rt, "v1"), *v2 = tt_str(rt, "v2");
  CHECK(obm_dict_set(rt, d, k1, v1) == 0 && obm_dict_set(rt, d, k2, v2) == 0);
  CHECK(obm_dict_set(rt, d, k3, v1) == 0 && obm_dict_size(d) == 3);
  CHECK(obm_dict_table_size(d) == 8);
  CHECK(obm_refcnt(k1) == 2 && obm_refcnt(v1) == 3);

  /* lookups by equal, distinct objects */
  obm_object_t *q1 = tt_str(rt, "one"), *q3 = tt_int(rt, 1 << 30);
  CHECK(obm_dict_get(d, q1) == v1 && obm_dict_get(d, q3) == v1 && obm_dict_get(d, k2) == v2);
  CHECK(obm_dict_get_cstr(d, "one") == v1 && obm_dict_get_cstr(d, "two") == NULL);
  CHECK(obm_dict_get(d, v1) == NULL);

  /* replacing keeps the place and the original key object */
  CHECK(obm_dict_set(rt, d, q1, v2) == 0 && obm_dict_size(d) == 3);
  CHECK(obm_refcnt(q1) == 1 && obm_refcnt(k1) == 2 && obm_refcnt(v1) == 2);
  size_t pos = 0;
  obm_object_t *key, *value;
  CHECK(obm_dict_next(d, &pos, &key, &value) == 1 && key == k1 && value == v2);

  /* deletion, and insertion order after deletes */
  CHECK(obm_dict_delete(rt, d, q1) == 0 && obm_dict_delete(rt, d, q1) == ENOENT);
  CHECK(obm_refcnt(k1) == 1 && obm_dict_get(d, k1) == NULL && obm_dict_size(d) == 2);
  CHECK(obm_dict_set(rt, d, k1, v1) == 0); /* re-inserted: now last */
  obm_object_t *want[] = {k2, k3, k1};
  pos = 0;
  for (size_t i = 0; i < 3; i++)
    CHECK(obm_dict_next(d, &pos, &key, NULL) == 1 && key == want[i]);
  CHECK(obm_dict_next(d, &pos, &key, &value) == 0 && obm_dict_next(d, &pos, NULL, NULL) == 0);

  /* tuple keys by value; other objects by identity */
  obm_object_t *tk = obm_tuple_pack(rt, 2, k1, k2), *tk2 = obm_tuple_pack(rt, 2, q1, k2);
  obm_object_t *lst = obm_list_new(rt, 0), *lst2 = obm_list_new(rt, 0);
  CHECK(obm_dict_set(rt, d, tk, v1) == 0 && obm_dict_get(d, tk2) == v1);
  CHECK(obm_dict_set(rt, d, lst, v2) == 0 && obm_dict_get(d, lst) == v2);
  CHECK(obm_dict_get(d, lst2) == NULL);

  /* errors */
  CHECK(obm_dict_set(rt, d, NULL, v1) == EINVAL && obm_dict_set(rt, d, k1, NULL) == EINVAL);
  CHECK(obm_dict_set(rt, lst, k1, v1) == EINVAL && obm_dict_delete(rt, lst, k1) == EINVAL);
  CHECK(obm_dict_get(lst, k1) == NULL && obm_dict_size(lst) == 0 && !obm_dict_check(lst));

  obm_dict_clear(rt, d);
  CHECK(obm_dict_size(d) == 0 && obm_dict_table_size(d) == 0 && obm_refcnt(k1) == 2);
  CHECK(obm_dict_get(d, k1) == NULL && obm_dict_delete(rt, d, k1) == ENOENT);
  pos = 0;
  CHECK(obm_dict_next(d, &pos, &key, &value) == 0);
  CHECK(obm_dict_set(rt, d, k1, v1) == 0 && obm_dict_size(d) == 1); /* usable again */

  obm_object_t *drop[] = {d, k1, k2, k3, v1, v2, q1, q3, tk, tk2, lst, lst2};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    obm_decref(rt, drop[i]);
  tt_end(rt);
}

/* Growth: 5 entries in 8 slots, 10 in 16, ... (usable = 2/3, new size >= 3 * used);
 * shrinking: after mass deletion, the next resize (when appending finds no room) builds
 * the smallest table >= 3 * used, dummies and deleted entries gone. */
static void test_dict_resize(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *d = obm_dict_new(rt);
  size_t expect_size = 8;
  for (int64_t i = 0; i < 5000; i++) {
    size_t used = (size_t)i;
    size_t before = obm_dict_table_size(d);
    obm_object_t *k = tt_int(rt, i * 1000003);
    CHECK(obm_dict_set(rt, d, k, k) == 0);
    obm_decref(rt, k);
    size_t after = obm_dict_table_size(d);
    if (after != before) {
      /* resized at this insertion: the smallest power of two >= 3 * used, at least 8 */
      expect_size = 8;
      while (expect_size < used * 3)
        expect_size *= 2;
      CHECKF(after == expect_size, "resize at %zu entries to %zu, expected %zu", used, after,
             expect_size);
      CHECK(before == 0 || used == before * 2 / 3); /* only when the entries ran out */
    }
  }
  size_t big = obm_dict_table_size(d);
  CHECK(big == 8192 && obm_dict_size(d) == 5000);
  size_t big_bytes = obm_sizeof(d);
  for (int64_t i = 0; i < 4990; i++) {
    obm_object_t *k = tt_int(rt, i * 1000003);
    CHECK(obm_dict_delete(rt, d, k) == 0);
    obm_decref(rt, k);
  }
  CHECK(obm_dict_table_size(d) == big && obm_dict_size(d) == 10); /* deletion never resizes */
  int64_t next = 1000000;
  while (obm_dict_table_size(d) == big) {
    obm_object_t *k = tt_int(rt, next++);
    CHECK(obm_dict_set(rt, d, k, k) == 0);
    obm_decref(rt, k);
  }
  /* 5461 entries fit 8192 slots; 10 live + the 471 appended ones fill it, then one more */
  CHECK(next - 1000000 == 5461 - 5000 + 1);
  size_t live = obm_dict_size(d);
  CHECK(live == 10 + (size_t)(next - 1000000));
  size_t small = 8;
  while (small < (live - 1) * 3)
    small *= 2;
  CHECKF(obm_dict_table_size(d) == small, "shrunk to %zu, expected %zu", obm_dict_table_size(d),
         small);
  CHECK(obm_sizeof(d) < big_bytes / 3);
  /* order kept through the rebuild: the 10 survivors first, then the new keys */
  size_t pos = 0;
  obm_object_t *key;
  for (int64_t i = 4990; i < 5000; i++)
    CHECK(obm_dict_next(d, &pos, &key, NULL) == 1 && obm_int_value(key) == i * 1000003);
  for (int64_t i = 1000000; i < next; i++)
    CHECK(obm_dict_next(d, &pos, &key, NULL) == 1 && obm_int_value(key) == i);
  CHECK(obm_dict_next(d, &pos, &key, NULL) == 0);
  obm_decref(rt, d);
  tt_end(rt);
}

/* The shadow model: key number k in [0, NKEYS) is the int k * 37 - 500 when k is even, the
 * str "key<k>" when odd (fresh objects each time, so equality by value is what is tested);
 * present[k], value[k], and order[] the key numbers in insertion order. */
enum { NKEYS = 600 };

static obm_object_t *model_key(obm_runtime_t *rt, int k) {
  if (k % 2 == 0) return tt_int(rt, (int64_t)k * 37 - 500);
  char text[24];
  snprintf(text, sizeof text, "key%d", k);
  return tt_str(rt, text);
}

static void test_dict_model(long nops) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *d = obm_dict_new(rt);
  static bool present[NKEYS];
  static int64_t value[NKEYS];
  static int order[NKEYS];
  size_t norder = 0;
  memset(present, 0, sizeof present);
  /* phases: mostly inserts, then mostly deletes, so the table grows and shrinks */
  for (long op = 0; op < nops; op++) {
    int phase = (int)((op / 4000) % 3); /* 0: grow, 1: churn, 2: shrink */
    int k = (int)(tt_rand() % NKEYS);
    unsigned r = (unsigned)(tt_rand() % 100);
    unsigned insert_pct = phase == 0 ? 70 : phase == 1 ? 45 : 20;
    obm_object_t *key = model_key(rt, k);
    if (r < insert_pct) {
      int64_t v = (int64_t)(tt_rand() % 100000);
      obm_object_t *val = tt_int(rt, v);
      CHECK(obm_dict_set(rt, d, key, val) == 0);
      obm_decref(rt, val);
      if (!present[k]) order[norder++] = k;
      present[k] = true;
      value[k] = v;
    } else if (r < insert_pct + 30) {
      int rc = obm_dict_delete(rt, d, key);
      CHECKF(rc == (present[k] ? 0 : ENOENT), "op %ld: delete key %d gave %d", op, k, rc);
      if (present[k]) {
        size_t i = 0;
        while (order[i] != k)
          i++;
        memmove(&order[i], &order[i + 1], (norder - i - 1) * sizeof order[0]);
        norder--;
        present[k] = false;
      }
    } else {
      obm_object_t *got = obm_dict_get(d, key);
      CHECKF(present[k] ? got != NULL && obm_int_value(got) == value[k] : got == NULL,
             "op %ld: lookup of key %d", op, k);
    }
    obm_decref(rt, key);
    CHECK(obm_dict_size(d) == norder);
    if (op % 500 == 0 || op == nops - 1) { /* the whole dict, in insertion order */
      size_t pos = 0, i = 0;
      obm_object_t *kk, *vv;
      while (obm_dict_next(d, &pos, &kk, &vv)) {
        CHECKF(i < norder, "op %ld: more entries than the model", op);
        obm_object_t *want = model_key(rt, order[i]);
        CHECKF(obm_object_equal(kk, want) && obm_int_value(vv) == value[order[i]],
               "op %ld: entry %zu differs from the model", op, i);
        obm_decref(rt, want);
        i++;
      }
      CHECK(i == norder);
      size_t slots = obm_dict_table_size(d);
      CHECK(norder == 0 || norder <= slots * 2 / 3);
    }
  }
  obm_decref(rt, d);
  tt_end(rt);
}

/* ---- footprints ------------------------------------------------------------------------ */

static void test_sizeof(void) {
  obm_runtime_t *rt = tt_begin();
  obm_object_t *big = tt_int(rt, 1 << 20), *small = tt_int(rt, 3);
  CHECK(obm_sizeof(big) == obm_usable_size(big) && obm_sizeof(big) >= sizeof(obm_int_t));
  CHECK(obm_sizeof(small) == sizeof(obm_int_t)); /* static: its struct */
  obm_object_t *s = tt_str(rt, "abcdefghijklmnopqrstuvwxyz");
  CHECK(obm_sizeof(s) == obm_usable_size(s) && obm_sizeof(s) >= offsetof(obm_str_t, data) + 27);

  obm_object_t *list = obm_list_new(rt, 0);
  CHECK(obm_sizeof(list) == gc_block(list)); /* no item array yet */
  for (int i = 0; i < 3; i++)
    CHECK(obm_list_append(rt, list, s) == 0);
  const obm_list_t *l = (const obm_list_t *)list;
  CHECK(obm_sizeof(list) == gc_block(list) + obm_usable_size(l->items));
  CHECK(gc_block(list) >= 16 + sizeof(obm_list_t));

  obm_object_t *t = obm_tuple_pack(rt, 3, big, s, small);
  CHECK(obm_sizeof(t) == gc_block(t) && gc_block(t) >= 16 + sizeof(obm_tuple_t) + 24);

  obm_object_t *d = obm_dict_new(rt);
  CHECK(obm_sizeof(d) == gc_block(d));
  CHECK(obm_dict_set(rt, d, s, big) == 0 && obm_dict_set(rt, d, big, s) == 0);
  const obm_dict_t *dd = (const obm_dict_t *)d;
  CHECK(obm_sizeof(d) == gc_block(d) + obm_usable_size(dd->keys));

  obm_object_t *rec = ot_new(rt, &obm_record_type, 4);
  CHECK(obm_sizeof(rec) == gc_block(rec));

  /* deep: shared objects once */
  CHECK(obm_sizeof_deep(rt, list) == obm_sizeof(list) + obm_sizeof(s));
  CHECK(obm_sizeof_deep(rt, t) ==
        obm_sizeof(t) + obm_sizeof(big) + obm_sizeof(s) + obm_sizeof(small));
  CHECK(obm_record_set(rt, rec, 0, list) == 0 && obm_record_set(rt, rec, 1, t) == 0);
  CHECK(obm_record_set(rt, rec, 2, d) == 0 && obm_record_set(rt, rec, 3, s) == 0);
  size_t want = obm_sizeof(rec) + obm_sizeof(list) + obm_sizeof(t) + obm_sizeof(d) + obm_sizeof(s) +
                obm_sizeof(big) + obm_sizeof(small);
  CHECK(obm_sizeof_deep(rt, rec) == want);
  CHECK(obm_list_append(rt, list, rec) == 0); /* a cycle: still each once */
  CHECK(obm_sizeof_deep(rt, rec) == want && obm_sizeof_deep(rt, list) == want);
  CHECK(obm_sizeof_deep(rt, NULL) == 0 && obm_sizeof(NULL) == 0);
  obm_list_clear(rt, list);

  /* a 200 000-deep chain: no recursion, every link counted */
  obm_object_t *head = obm_list_new(rt, 1);
  size_t expect = obm_sizeof(head);
  obm_object_t *cur = head;
  for (int i = 0; i < 200000; i++) {
    obm_object_t *next = obm_list_new(rt, 1);
    CHECK(obm_list_append(rt, cur, next) == 0);
    obm_decref(rt, next);
    expect += obm_sizeof(next);
    cur = next;
  }
  CHECK(obm_sizeof_deep(rt, head) == expect);
  obm_decref(rt, head);

  obm_object_t *drop[] = {big, s, list, t, d, rec};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    obm_decref(rt, drop[i]);
  tt_end(rt);
}

/* ---- cycles through dicts and tuples --------------------------------------------------- */

static void test_cycles(void) {
  obm_runtime_t *rt = tt_begin();
  obm_gc_disable(rt);

  /* a dict that contains itself */
  obm_object_t *d = obm_dict_new(rt), *k = tt_str(rt, "self");
  CHECK(obm_dict_set(rt, d, k, d) == 0);
  obm_decref(rt, k);
  obm_decref(rt, d);
  CHECK(obm_runtime_live_objects(rt) == 2);
  CHECK(obm_gc_collect(rt, 2) == 1); /* tracked objects only: the str goes with the dict */
  CHECK(obm_runtime_live_objects(rt) == 0);

  /* a dict as its own key (identity hash) */
  d = obm_dict_new(rt);
  CHECK(obm_dict_set(rt, d, d, tt_int(rt, 1)) == 0);
  obm_decref(rt, d);
  CHECK(obm_gc_collect(rt, 2) == 1 && obm_runtime_live_objects(rt) == 0);

  /* tuple <-> list, with a counting record inside to see one deallocation */
  obm_object_t *list = obm_list_new(rt, 0), *probe = ot_new(rt, &ot_node, 1);
  obm_object_t *t = obm_tuple_pack(rt, 2, list, probe);
  CHECK(obm_list_append(rt, list, t) == 0);
  obm_decref(rt, t);
  obm_decref(rt, list);
  obm_decref(rt, probe);
  CHECK(ot_ndealloc == 0);
  CHECK(obm_gc_collect(rt, 2) == 3);
  CHECK(ot_ndealloc == 1 && obm_runtime_live_objects(rt) == 0);

  /* dict -> tuple -> record -> dict, and a second dict <-> dict pair, in one collection */
  ot_reset_calls();
  obm_object_t *d1 = obm_dict_new(rt), *rec = ot_new(rt, &ot_node, 1);
  obm_object_t *tup = obm_tuple_pack(rt, 2, rec, tt_int(rt, 5));
  k = tt_str(rt, "t");
  CHECK(obm_dict_set(rt, d1, k, tup) == 0 && obm_record_set(rt, rec, 0, d1) == 0);
  obm_object_t *d2 = obm_dict_new(rt), *d3 = obm_dict_new(rt);
  CHECK(obm_dict_set(rt, d2, k, d3) == 0 && obm_dict_set(rt, d3, k, d2) == 0);
  obm_object_t *drop[] = {d1, rec, tup, k, d2, d3};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    obm_decref(rt, drop[i]);
  CHECK(obm_gc_collect(rt, 2) == 5);
  CHECK(ot_ndealloc == 1 && obm_runtime_live_objects(rt) == 0);

  /* a reachable cycle survives and is intact */
  obm_object_t *root = obm_list_new(rt, 0);
  d = obm_dict_new(rt);
  t = obm_tuple_pack(rt, 1, d);
  k = tt_int(rt, 77777);
  CHECK(obm_dict_set(rt, d, k, t) == 0 && obm_list_append(rt, root, d) == 0);
  obm_decref(rt, t);
  obm_decref(rt, d);
  CHECK(obm_gc_collect(rt, 2) == 0);
  CHECK(obm_tuple_get(obm_dict_get(d, k), 0) == d);
  obm_decref(rt, k);
  obm_decref(rt, root); /* freed at once; d and t are now a garbage cycle */
  CHECK(obm_gc_collect(rt, 2) == 2 && obm_runtime_live_objects(rt) == 0);

  /* many random dict/tuple/list cycles with automatic collections on */
  obm_gc_enable(rt);
  obm_gc_set_threshold(rt, 50, 5, 5);
  ot_reset_calls();
  for (int i = 0; i < 2000; i++) {
    obm_object_t *a = obm_dict_new(rt), *b = obm_list_new(rt, 0);
    obm_object_t *p = ot_new(rt, &ot_node, 1);
    obm_object_t *c = obm_tuple_pack(rt, 3, a, b, p);
    obm_object_t *key = tt_int(rt, (int64_t)(tt_rand() % 1000));
    CHECK(obm_dict_set(rt, a, key, c) == 0 && obm_list_append(rt, b, a) == 0);
    obm_object_t *all[] = {a, b, p, c, key};
    for (size_t j = 0; j < 5; j++)
      obm_decref(rt, all[j]);
  }
  obm_gc_collect(rt, 2);
  CHECK(ot_ndealloc == 2000 && obm_runtime_live_objects(rt) == 0);
  tt_end(rt);
}

/* Two runtimes on two threads: separate interning tables, shared small ints. */
static void *thread_body(void *arg) {
  (void)arg;
  obm_runtime_t *rt = obm_runtime_new();
  CHECK(rt != NULL);
  obm_object_t *d = obm_dict_new(rt);
  for (int i = 0; i < 20000; i++) {
    char text[16];
    snprintf(text, sizeof text, "n%d", i % 500);
    obm_object_t *s = obm_str_intern_cstr(rt, text), *v = obm_int_new(rt, i % 300);
    CHECK(s != NULL && v != NULL && obm_dict_set(rt, d, s, v) == 0);
    obm_decref(rt, s);
    obm_decref(rt, v);
  }
  CHECK(obm_dict_size(d) == 500 && obm_str_interned_count(rt) == 500);
  obm_decref(rt, d);
  CHECK(obm_str_interned_count(rt) == 0 && obm_runtime_free(rt) == 0);
  return NULL;
}

static void test_threads(void) {
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&th[i], NULL, thread_body, NULL) == 0);
  for (int i = 0; i < 2; i++)
    CHECK(pthread_join(th[i], NULL) == 0);
}

int main(int argc, char **argv) {
  check_seed_init("test_types", argc, argv, 1, 20240604);
  tt_rng = check_seed;
  long dict_ops = check_arg_long(argc, argv, 2, NULL, 60000);
  obm_set_error_handler(ot_on_error, NULL);
  test_int();
  test_str();
  test_intern();
  test_tuple();
  test_dict_basic();
  test_dict_resize();
  test_dict_model(dict_ops);
  test_sizeof();
  test_type_hooks();
  test_cycles();
  test_threads();
  check_done();
  return 0;
}
