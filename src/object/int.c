/* int.c — the int type: a 64-bit value in a 24-byte object (CPython's longobject.c, without
 * arbitrary precision), and the cache of small ints.
 *
 * Small ints (OBM_INT_SMALL_MIN..OBM_INT_SMALL_MAX, -5..256 as in CPython's
 * _PyLong_SMALL_INTS) are one static array of immortal, non-GC objects: obm_int_new returns
 * them without allocating or writing anything, so every runtime and thread shares them
 * (object.h allows sharing immortal non-GC objects).  Hash: the value itself, as CPython's
 * hash(int) for |n| < 2^61, so consecutive ints fill a dict's slots without collisions; the
 * dict's perturbation brings the high bits in.
 */
#include "object/object_internal.h"

#include <errno.h>

const obm_type_t obm_int_type = {
    .name = "int",
    .basic_size = sizeof(obm_int_t),
};

#define SMALL_COUNT (OBM_INT_SMALL_MAX - OBM_INT_SMALL_MIN + 1)
#define SMALL(v)                                                                                   \
  { OBM_OBJECT_STATIC_INIT(&obm_int_type), (v) }
#define SMALL4(v)  SMALL(v), SMALL((v) + 1), SMALL((v) + 2), SMALL((v) + 3)
#define SMALL16(v) SMALL4(v), SMALL4((v) + 4), SMALL4((v) + 8), SMALL4((v) + 12)
#define SMALL64(v) SMALL16(v), SMALL16((v) + 16), SMALL16((v) + 32), SMALL16((v) + 48)

/* small_ints[i].value == OBM_INT_SMALL_MIN + i; never written (immortal). */
static obm_int_t small_ints[SMALL_COUNT] = {
    SMALL(-5),  SMALL(-4),   SMALL(-3),    SMALL(-2),    SMALL(-1),
    SMALL64(0), SMALL64(64), SMALL64(128), SMALL64(192), SMALL(256),
};
_Static_assert(sizeof small_ints / sizeof small_ints[0] == SMALL_COUNT,
               "the small-int table covers -5..256");

int obm_int_check(const obm_object_t *op) {
  return op != NULL && op->type == &obm_int_type;
}

obm_object_t *obm_int_new(obm_runtime_t *rt, int64_t value) {
  if (value >= OBM_INT_SMALL_MIN && value <= OBM_INT_SMALL_MAX)
    return &small_ints[value - OBM_INT_SMALL_MIN].base;
  obm_object_t *op = obm_object_new(rt, &obm_int_type);
  if (op != NULL) ((obm_int_t *)op)->value = value;
  return op;
}

int64_t obm_int_value(const obm_object_t *op) {
  return obm_int_check(op) ? ((const obm_int_t *)op)->value : 0;
}
