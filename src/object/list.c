/* list.c — the list type: a growable array of strong references (CPython's list, reduced).
 *
 * items grows by half again (at least to 4), so n appends cost O(n) copies; it never
 * shrinks except on clear.  Every function that drops a reference does it last, after the
 * list is consistent again, because a decref may run any code (finalizers, callbacks,
 * collections), including code that changes this very list.
 */
#include "object/object_internal.h"

#include <errno.h>
#include <string.h>

static int list_traverse(obm_object_t *op, obm_visit_t *visit, void *arg) {
  obm_list_t *list = (obm_list_t *)op;
  for (size_t i = 0; i < list->size; i++)
    OBM_VISIT(list->items[i]);
  return 0;
}

/* Empties the list first, then drops the items (last first, as CPython does). */
static void list_clear(obm_runtime_t *rt, obm_object_t *op) {
  obm_list_t *list = (obm_list_t *)op;
  obm_object_t **items = list->items;
  size_t n = list->size;
  list->items = NULL;
  list->size = list->capacity = 0;
  while (n > 0)
    obm_xdecref(rt, items[--n]);
  obm_free(items);
}

const obm_type_t obm_list_type = {
    .name = "list",
    .basic_size = sizeof(obm_list_t),
    .flags = OBM_TYPE_GC,
    .weaklist_offset = offsetof(obm_list_t, weaklist),
    .traverse = list_traverse,
    .clear = list_clear,
};

int obm_list_check(const obm_object_t *op) {
  return op != NULL && op->type == &obm_list_type;
}

/* Makes room for at least `capacity` items: 0 or ENOMEM. */
static int list_reserve(obm_list_t *list, size_t capacity) {
  if (capacity <= list->capacity) return 0;
  if (capacity > SIZE_MAX / sizeof(obm_object_t *)) return ENOMEM;
  obm_object_t **items = obm_realloc(list->items, capacity * sizeof(obm_object_t *));
  if (items == NULL) return ENOMEM;
  list->items = items;
  list->capacity = capacity;
  return 0;
}

obm_object_t *obm_list_new(obm_runtime_t *rt, size_t capacity) {
  obm_object_t *op = obm_object_new(rt, &obm_list_type);
  if (op != NULL && list_reserve((obm_list_t *)op, capacity) != 0) {
    obm_decref(rt, op);
    errno = ENOMEM;
    return NULL;
  }
  return op;
}

int obm_list_append(obm_runtime_t *rt, obm_object_t *op, obm_object_t *item) {
  (void)rt;
  if (!obm_list_check(op) || item == NULL) return EINVAL;
  obm_list_t *list = (obm_list_t *)op;
  if (list->size == list->capacity) {
    size_t grown = list->capacity < 4 ? 4 : list->capacity + list->capacity / 2;
    if (list_reserve(list, grown) != 0) return ENOMEM;
  }
  obm_incref(item);
  list->items[list->size++] = item;
  return 0;
}

size_t obm_list_size(const obm_object_t *op) {
  return obm_list_check(op) ? ((const obm_list_t *)op)->size : 0;
}

obm_object_t *obm_list_get(const obm_object_t *op, size_t index) {
  if (!obm_list_check(op)) return NULL;
  const obm_list_t *list = (const obm_list_t *)op;
  return index < list->size ? list->items[index] : NULL;
}

int obm_list_set(obm_runtime_t *rt, obm_object_t *op, size_t index, obm_object_t *item) {
  if (!obm_list_check(op) || item == NULL || index >= ((obm_list_t *)op)->size) return EINVAL;
  _obm_set_ref(rt, &((obm_list_t *)op)->items[index], item);
  return 0;
}

int obm_list_delete(obm_runtime_t *rt, obm_object_t *op, size_t index) {
  if (!obm_list_check(op) || index >= ((obm_list_t *)op)->size) return EINVAL;
  obm_list_t *list = (obm_list_t *)op;
  obm_object_t *old = list->items[index];
  memmove(&list->items[index], &list->items[index + 1],
          (list->size - index - 1) * sizeof(obm_object_t *));
  list->size--;
  obm_decref(rt, old);
  return 0;
}

obm_object_t *obm_list_pop(obm_runtime_t *rt, obm_object_t *op) {
  (void)rt;
  if (!obm_list_check(op) || ((obm_list_t *)op)->size == 0) return NULL;
  obm_list_t *list = (obm_list_t *)op;
  return list->items[--list->size];
}

void obm_list_clear(obm_runtime_t *rt, obm_object_t *op) {
  if (obm_list_check(op)) list_clear(rt, op);
}
