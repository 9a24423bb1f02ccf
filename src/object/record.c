/* record.c — the record type: a fixed number of slots chosen at creation, like a class with
 * __slots__ (CPython's member descriptors over a heap type), as a variable-size object:
 *   [header | size | weaklist | slots[0..size)]
 * Programs derive their own record types (a name, finalizers) with OBM_RECORD_TYPE_FIELDS;
 * the layout, traverse and clear stay these.
 */
#include "object/object_internal.h"

#include <errno.h>

int obm_record_traverse(obm_object_t *op, obm_visit_t *visit, void *arg) {
  obm_record_t *rec = (obm_record_t *)op;
  for (size_t i = 0; i < rec->base.size; i++)
    OBM_VISIT(rec->slots[i]);
  return 0;
}

/* Each slot is emptied before its old value is dropped (the decref may run any code). */
void obm_record_clear(obm_runtime_t *rt, obm_object_t *op) {
  obm_record_t *rec = (obm_record_t *)op;
  for (size_t i = 0; i < rec->base.size; i++) {
    obm_object_t *value = rec->slots[i];
    if (value != NULL) {
      rec->slots[i] = NULL;
      obm_decref(rt, value);
    }
  }
}

const obm_type_t obm_record_type = {OBM_RECORD_TYPE_FIELDS("record")};

static bool type_has_record_layout(const obm_type_t *type) {
  return type->basic_size == sizeof(obm_record_t) && type->item_size == sizeof(obm_object_t *);
}

int obm_record_check(const obm_object_t *op) {
  return op != NULL && type_has_record_layout(op->type);
}

obm_object_t *obm_record_new(obm_runtime_t *rt, const obm_type_t *type, size_t nslots) {
  if (type == NULL || !type_has_record_layout(type)) {
    errno = EINVAL;
    return NULL;
  }
  return obm_object_new_var(rt, type, nslots);
}

size_t obm_record_size(const obm_object_t *op) {
  return obm_record_check(op) ? ((const obm_record_t *)op)->base.size : 0;
}

obm_object_t *obm_record_get(const obm_object_t *op, size_t index) {
  if (!obm_record_check(op)) return NULL;
  const obm_record_t *rec = (const obm_record_t *)op;
  return index < rec->base.size ? rec->slots[index] : NULL;
}

int obm_record_set(obm_runtime_t *rt, obm_object_t *op, size_t index, obm_object_t *value) {
  if (!obm_record_check(op) || index >= ((obm_record_t *)op)->base.size) return EINVAL;
  _obm_set_ref(rt, &((obm_record_t *)op)->slots[index], value);
  return 0;
}
