/* pagemap.c — a two-level radix tree from 1 MiB chunks of the address space to segments.
 *
 * Answers "is this pointer ours, and whose" in O(1) for any address, without touching the
 * memory at that address (CPython 3.12's arena_map_* does the same with three levels).
 * 48-bit addresses: root index = bits 47..34 (16384 entries, static, 128 KiB of zero pages
 * until used), leaf index = bits 33..20 (16384 entries, 128 KiB mapped on first use, each
 * covering 16 GiB).  Readers take no lock; writers (arena and large-block creation) hold
 * _obm_pagemap_lock only to create leaves.  Leaves are never freed.
 */
#include "alloc/alloc_internal.h"

#include <errno.h>

_Atomic(obm_pagemap_leaf_t *) _obm_pagemap_root[1u << OBM_PAGEMAP_ROOT_BITS];
pthread_mutex_t _obm_pagemap_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t pagemap_leaf_count;

static obm_pagemap_leaf_t *leaf_get(uintptr_t a) {
  size_t i = a >> (OBM_ARENA_SHIFT + OBM_PAGEMAP_LEAF_BITS);
  obm_pagemap_leaf_t *leaf = atomic_load_explicit(&_obm_pagemap_root[i], memory_order_acquire);
  if (leaf) return leaf;
  pthread_mutex_lock(&_obm_pagemap_lock);
  leaf = atomic_load_explicit(&_obm_pagemap_root[i], memory_order_acquire);
  if (!leaf) {
    leaf = _obm_os_map(sizeof(obm_pagemap_leaf_t), 0);
    if (leaf) {
      pagemap_leaf_count++;
      _obm_mapped_add(sizeof(obm_pagemap_leaf_t));
      atomic_store_explicit(&_obm_pagemap_root[i], leaf, memory_order_release);
    }
  }
  pthread_mutex_unlock(&_obm_pagemap_lock);
  return leaf;
}

int _obm_pagemap_set(void *start, size_t size, obm_segment_t *seg) {
  uintptr_t a = (uintptr_t)start;
  uintptr_t end = a + size;
  if (end >> OBM_PAGEMAP_BITS) return ENOMEM; /* beyond what the map covers: never ours */
  for (uintptr_t c = a & ~(uintptr_t)(OBM_ARENA_SIZE - 1); c < end; c += OBM_ARENA_SIZE) {
    obm_pagemap_leaf_t *leaf = seg ? leaf_get(c) : atomic_load_explicit(
        &_obm_pagemap_root[c >> (OBM_ARENA_SHIFT + OBM_PAGEMAP_LEAF_BITS)], memory_order_acquire);
    if (!leaf) {
      if (!seg) continue;
      /* undo what was set so far */
      for (uintptr_t u = a & ~(uintptr_t)(OBM_ARENA_SIZE - 1); u < c; u += OBM_ARENA_SIZE) {
        obm_pagemap_leaf_t *l = atomic_load_explicit(
            &_obm_pagemap_root[u >> (OBM_ARENA_SHIFT + OBM_PAGEMAP_LEAF_BITS)],
            memory_order_acquire);
        atomic_store_explicit(&(*l)[(u >> OBM_ARENA_SHIFT) & ((1u << OBM_PAGEMAP_LEAF_BITS) - 1)],
                              NULL, memory_order_release);
      }
      return ENOMEM;
    }
    atomic_store_explicit(&(*leaf)[(c >> OBM_ARENA_SHIFT) & ((1u << OBM_PAGEMAP_LEAF_BITS) - 1)],
                          seg, memory_order_release);
  }
  return 0;
}

size_t _obm_pagemap_bytes(void) {
  return pagemap_leaf_count * sizeof(obm_pagemap_leaf_t);
}
