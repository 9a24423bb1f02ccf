/* types_internal.h — what the built-in types (int.c, str.c, tuple.c, dict.c, sizeof.c) share
 * beyond object.h: the hash and equality helpers behind obm_object_hash/obm_object_equal. */
#ifndef OBM_TYPES_INTERNAL_H
#define OBM_TYPES_INTERNAL_H

#include "object/object_internal.h"

/* str.c: the hash of these bytes, which every str holding them has (never 0). */
OBM_HIDDEN obm_hash_t _obm_str_hash_bytes(const char *bytes, size_t length);
/* str.c: op's (a str's) hash, computed once and cached. */
OBM_HIDDEN obm_hash_t _obm_str_hash(obm_object_t *op);
/* tuple.c: hash and equality of tuples, item by item (recursive, as CPython's). */
OBM_HIDDEN obm_hash_t _obm_tuple_hash(obm_object_t *op);
OBM_HIDDEN int _obm_tuple_equal(obm_object_t *a, obm_object_t *b);

#endif /* OBM_TYPES_INTERNAL_H */
