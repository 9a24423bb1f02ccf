/* stats.c — statistics (obm_stats_get/print/print_json) and the whole-structure checkers.
 *
 * Statistics walk every arena's pool descriptors under _obm_global_lock, in the spirit of
 * CPython's _PyObject_DebugMallocStats(): per class the pools, blocks in use and free, and
 * where the mapped bytes went (blocks in use, free blocks, pool tails, free pools, metadata).
 * Before walking, the caller's own heap and the heaps of exited threads have their pending
 * cross-thread frees collected, so a quiescent program gets exact numbers.
 */
#include "alloc/alloc_internal.h"

#include <inttypes.h>
#include <string.h>
#include <unistd.h>

static void class_rounding(obm_stats_t *out) {
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_class_stats_t *cs = &out->classes[c];
    if (_obm_debug_on || cs->nmalloc == 0) continue;
    /* mean rounding of this class's allocations so far, applied to the live blocks */
    uint64_t mean_req = cs->requested_bytes / cs->nmalloc;
    if (mean_req > cs->block_size) mean_req = cs->block_size;
    cs->rounding_bytes = cs->blocks_in_use * (cs->block_size - mean_req);
  }
}

void obm_stats_get(obm_stats_t *out) {
  _obm_init();
  memset(out, 0, sizeof *out);
  obm_heap_t *self = _obm_heap_get();
  uint64_t collected = 0;
  if (!self->is_empty_heap) collected += _obm_heap_collect_remote(self);
  collected += _obm_heap_collect_abandoned();
  for (int c = 0; c < OBM_NCLASSES; c++) {
    out->classes[c].block_size = _obm_class_size[c];
    out->classes[c].pool_size = (uint32_t)_obm_class_slots[c] * OBM_POOL_SIZE;
  }
  pthread_mutex_lock(&_obm_global_lock);
  for (obm_arena_t *a = _obm_arenas_all; a; a = a->all_next) {
    out->bytes_metadata += OBM_POOL_SIZE; /* slot 0 */
    out->bytes_free_pools += (uint64_t)a->nfree_slots * OBM_POOL_SIZE;
    for (int s = 1; s < OBM_NSLOTS; s++) {
      obm_pool_t *p = &a->pools[s];
      if (p->kind != OBM_SLOT_HEAD) continue;
      obm_class_stats_t *cs = &out->classes[p->size_class];
      cs->npools++;
      if (p->nused == p->capacity) cs->nfull_pools++;
      cs->blocks_in_use += p->nused;
      cs->blocks_free += p->capacity - p->nused;
      cs->tail_bytes += (uint64_t)p->nslots * OBM_POOL_SIZE - (uint64_t)p->capacity * p->block_size;
      if (_obm_debug_on) {
        for (uint32_t i = 0; i < p->ncarved; i++) {
          size_t need = _obm_debug_block_requested(p->start + (size_t)i * p->block_size,
                                                   p->block_size);
          if (need) cs->rounding_bytes += p->block_size - need;
        }
      }
    }
  }
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next) {
    for (int c = 0; c < OBM_NCLASSES; c++) {
      out->classes[c].nmalloc += h->cls[c].nmalloc;
      out->classes[c].requested_bytes += h->cls[c].requested;
    }
    out->bytes_metadata += sizeof(obm_heap_t);
  }
  out->nheaps = _obm_heaps_count;
  out->nheaps_abandoned = _obm_heaps_abandoned;
  out->arenas_allocated = _obm_arenas_allocated;
  out->arenas_reclaimed = _obm_arenas_reclaimed;
  out->arenas_current = _obm_arenas_current;
  out->arenas_highwater = _obm_arenas_highwater;
  out->arenas_spare = _obm_arenas_nspare;
  pthread_mutex_unlock(&_obm_global_lock);
  out->remote_frees_pending = collected;
  class_rounding(out);
  _obm_large_stats(out);
  out->os_maps = _obm_os_map_calls();
  out->os_unmaps = _obm_os_unmap_calls();
  out->bytes_metadata += _obm_pagemap_bytes();
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_class_stats_t *cs = &out->classes[c];
    out->bytes_in_use += cs->blocks_in_use * cs->block_size;
    out->bytes_free_in_pools += cs->blocks_free * cs->block_size;
    out->bytes_pool_tails += cs->tail_bytes;
    out->bytes_rounding += cs->rounding_bytes;
  }
  out->bytes_free_pools += out->arenas_spare * (OBM_ARENA_SIZE - OBM_POOL_SIZE);
  out->bytes_metadata += out->arenas_spare * OBM_POOL_SIZE;
  out->bytes_in_use += out->large_bytes;
  out->bytes_requested_est =
      out->bytes_in_use > out->bytes_rounding ? out->bytes_in_use - out->bytes_rounding : 0;
  out->bytes_mapped = atomic_load_explicit(&_obm_bytes_mapped, memory_order_relaxed);
  out->bytes_mapped_peak = atomic_load_explicit(&_obm_bytes_mapped_peak, memory_order_relaxed);
}

static void print_bytes_line(FILE *f, const char *what, uint64_t bytes) {
  fprintf(f, "# %-44s = %15" PRIu64 "\n", what, bytes);
}

void obm_stats_print(FILE *f) {
  if (!f) f = stderr;
  obm_stats_t st;
  obm_stats_get(&st);
  fprintf(f, "obmem %s allocator statistics (pid %d)\n", OBM_VERSION_STRING, (int)getpid());
  fprintf(f, "class  block  pool  # pools  # full  # blocks in use  # free blocks"
             "   # allocs  mean req\n");
  fprintf(f, "-----  -----  ----  -------  ------  ---------------  -------------"
             "  ---------  --------\n");
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_class_stats_t *cs = &st.classes[c];
    if (cs->npools == 0 && cs->nmalloc == 0) continue;
    fprintf(f, "%5d  %5u  %3uK  %7" PRIu64 "  %6" PRIu64 "  %15" PRIu64 "  %13" PRIu64 "  %9" PRIu64
               "  %8" PRIu64 "\n",
            c, cs->block_size, cs->pool_size / 1024, cs->npools, cs->nfull_pools,
            cs->blocks_in_use, cs->blocks_free, cs->nmalloc,
            cs->nmalloc ? cs->requested_bytes / cs->nmalloc : 0);
  }
  fputc('\n', f);
  fprintf(f, "# arenas allocated total           = %" PRIu64 "\n", st.arenas_allocated);
  fprintf(f, "# arenas reclaimed                 = %" PRIu64 "\n", st.arenas_reclaimed);
  fprintf(f, "# arenas highwater mark            = %" PRIu64 "\n", st.arenas_highwater);
  fprintf(f, "# arenas allocated current         = %" PRIu64 " (%" PRIu64 " spare)\n",
          st.arenas_current, st.arenas_spare);
  fprintf(f, "%" PRIu64 " arenas * %d bytes/arena       = %" PRIu64 "\n", st.arenas_current,
          OBM_ARENA_SIZE, st.arenas_current * (uint64_t)OBM_ARENA_SIZE);
  fprintf(f, "# large blocks live                = %" PRIu64 " (%" PRIu64 " bytes)\n",
          st.large_blocks, st.large_bytes);
  fprintf(f, "# large blocks cached              = %" PRIu64 " (%" PRIu64 " bytes)\n",
          st.large_cached_blocks, st.large_cached_bytes);
  fprintf(f, "# large allocations / cache hits   = %" PRIu64 " / %" PRIu64 "\n",
          st.large_nmalloc, st.large_cache_hits);
  fprintf(f, "# heaps (abandoned)                = %" PRIu64 " (%" PRIu64 ")\n", st.nheaps,
          st.nheaps_abandoned);
  fputc('\n', f);
  print_bytes_line(f, "bytes in allocated blocks", st.bytes_in_use);
  print_bytes_line(f, "bytes requested (estimate)", st.bytes_requested_est);
  print_bytes_line(f, "bytes lost to size-class rounding", st.bytes_rounding);
  print_bytes_line(f, "bytes in available blocks", st.bytes_free_in_pools);
  print_bytes_line(f, "bytes lost to unused pool tails", st.bytes_pool_tails);
  print_bytes_line(f, "bytes in free pools", st.bytes_free_pools);
  print_bytes_line(f, "bytes in cached large blocks", st.large_cached_bytes);
  print_bytes_line(f, "bytes in metadata", st.bytes_metadata);
  print_bytes_line(f, "total mapped", st.bytes_mapped);
  print_bytes_line(f, "peak mapped", st.bytes_mapped_peak);
  fflush(f);
}

void obm_stats_print_json(FILE *f) {
  if (!f) f = stderr;
  obm_stats_t st;
  obm_stats_get(&st);
  fprintf(f, "{\"version\": \"%s\", \"pid\": %d, \"classes\": [", OBM_VERSION_STRING,
          (int)getpid());
  for (int c = 0; c < OBM_NCLASSES; c++) {
    obm_class_stats_t *cs = &st.classes[c];
    fprintf(f,
            "%s\n  {\"class\": %d, \"block_size\": %u, \"pool_size\": %u, \"pools\": %" PRIu64
            ", \"full_pools\": %" PRIu64 ", \"blocks_in_use\": %" PRIu64
            ", \"blocks_free\": %" PRIu64 ", \"nmalloc\": %" PRIu64
            ", \"requested_bytes\": %" PRIu64 ", \"rounding_bytes\": %" PRIu64
            ", \"tail_bytes\": %" PRIu64 "}",
            c ? "," : "", c, cs->block_size, cs->pool_size, cs->npools, cs->nfull_pools,
            cs->blocks_in_use, cs->blocks_free, cs->nmalloc, cs->requested_bytes,
            cs->rounding_bytes, cs->tail_bytes);
  }
  fprintf(f, "],\n");
#define J(field) fprintf(f, " \"%s\": %" PRIu64 ",\n", #field, st.field)
  J(arenas_allocated);
  J(arenas_reclaimed);
  J(arenas_current);
  J(arenas_highwater);
  J(arenas_spare);
  J(large_blocks);
  J(large_bytes);
  J(large_mapped_bytes);
  J(large_cached_blocks);
  J(large_cached_bytes);
  J(large_nmalloc);
  J(large_cache_hits);
  J(os_maps);
  J(os_unmaps);
  J(bytes_in_use);
  J(bytes_requested_est);
  J(bytes_free_in_pools);
  J(bytes_pool_tails);
  J(bytes_rounding);
  J(bytes_free_pools);
  J(bytes_metadata);
  J(bytes_mapped);
  J(bytes_mapped_peak);
  J(nheaps);
  J(nheaps_abandoned);
#undef J
  fprintf(f, " \"remote_frees_pending\": %" PRIu64 "}\n", st.remote_frees_pending);
  fflush(f);
}

/* ---- checkers ---------------------------------------------------------------------------- */

static size_t corrupt(const void *where, const char *what, unsigned long long a,
                      unsigned long long b) {
  _obm_error(OBM_ERR_CORRUPTION, (void *)where, "%s (%llu vs %llu)", what, a, b);
  return 1;
}

static size_t check_pool(obm_arena_t *a, int s) {
  obm_pool_t *p = &a->pools[s];
  size_t problems = 0;
  if (p->nslots == 0 || s + p->nslots > OBM_NSLOTS)
    return corrupt(p, "pool spans outside its arena", (unsigned long long)s, p->nslots);
  for (int i = 1; i < p->nslots; i++)
    if (a->pools[s + i].kind != OBM_SLOT_TAIL || a->pools[s + i].head_offset != i)
      problems += corrupt(&a->pools[s + i], "pool tail slot is not marked", (unsigned)i,
                          a->pools[s + i].kind);
  if (p->block_size != _obm_class_size[p->size_class] ||
      p->capacity != _obm_class_capacity[p->size_class])
    problems += corrupt(p, "pool geometry disagrees with its class", p->block_size,
                        p->size_class);
  if (p->ncarved > p->capacity || p->nused > p->capacity)
    problems += corrupt(p, "pool counts exceed capacity", p->ncarved, p->nused);
  uint64_t nfree = 0;
  uint8_t *end = p->start + (size_t)p->ncarved * p->block_size;
  for (obm_block_t *b = p->free; b; b = b->next) {
    uint8_t *q = (uint8_t *)b;
    if (q < p->start || q >= end || (size_t)(q - p->start) % p->block_size) {
      problems += corrupt(b, "free-list entry is not a carved block of its pool",
                          (unsigned long long)(uintptr_t)q, (unsigned long long)(uintptr_t)p->start);
      break;
    }
    if (++nfree > p->capacity) {
      problems += corrupt(p, "free list is longer than the pool (cycle?)", nfree, p->capacity);
      break;
    }
  }
  /* nused counts blocks pending on remote_free as used */
  if (nfree + p->nused + (p->capacity - p->ncarved) != p->capacity)
    problems += corrupt(p, "nused + |free| + uncarved != capacity", nfree + p->nused,
                        p->ncarved);
  if (a->heap && p->in_list) {
    obm_pool_t *q = a->heap->cls[p->size_class].pool;
    while (q && q != &_obm_pool_empty && q != p) q = q->next;
    if (q != p) problems += corrupt(p, "pool marked in_list is not in its class list", 0, 0);
  }
  if (_obm_debug_on)
    for (uint32_t i = 0; i < p->ncarved; i++)
      problems += _obm_debug_check_block(p->start + (size_t)i * p->block_size, p->block_size);
  return problems;
}

size_t _obm_heap_check_all(void) {
  _obm_init();
  size_t problems = 0;
  pthread_mutex_lock(&_obm_global_lock);
  for (obm_arena_t *a = _obm_arenas_all; a; a = a->all_next) {
    if (a->heap && a->heap->orphaned) continue; /* may have been mid-update at fork */
    if (a->kind != (_obm_debug_on ? OBM_SEG_ARENA_DEBUG : OBM_SEG_ARENA))
      problems += corrupt(a, "arena kind is wrong", a->kind, OBM_SEG_ARENA);
    if (_obm_pagemap_lookup(a) != (obm_segment_t *)a)
      problems += corrupt(a, "page map does not point at the arena", 0, 0);
    if ((unsigned)__builtin_popcountll(a->free_slots) != a->nfree_slots || (a->free_slots & 1))
      problems += corrupt(a, "arena free-slot count disagrees with its bitmap", a->nfree_slots,
                          (unsigned)__builtin_popcountll(a->free_slots));
    if ((a->nfree_slots > 0) != (a->in_usable != 0))
      problems += corrupt(a, "arena usable-list membership is wrong", a->nfree_slots,
                          a->in_usable);
    for (int s = 1; s < OBM_NSLOTS; s++) {
      int is_free = (a->free_slots >> s) & 1;
      uint8_t kind = a->pools[s].kind;
      if (is_free != (kind == OBM_SLOT_FREE))
        problems += corrupt(&a->pools[s], "slot state disagrees with the arena bitmap",
                            (unsigned)s, kind);
      if (kind == OBM_SLOT_HEAD) problems += check_pool(a, s);
    }
  }
  for (obm_heap_t *h = _obm_heaps_all; h; h = h->all_next) {
    if (h->orphaned) continue;
    unsigned last = 0;
    for (obm_arena_t *a = h->usable; a; a = a->next) {
      if (a->nfree_slots < last)
        problems += corrupt(a, "usable arenas are not ordered by free slots", a->nfree_slots,
                            last);
      if (a->heap != h) problems += corrupt(a, "arena in a heap's list has another owner", 0, 0);
      last = a->nfree_slots;
    }
    for (int c = 0; c < OBM_NCLASSES; c++) {
      obm_pool_t *prev_pool = NULL;
      for (obm_pool_t *p = h->cls[c].pool; p && p != &_obm_pool_empty; p = p->next) {
        if (p->kind != OBM_SLOT_HEAD || p->size_class != c || !p->in_list ||
            _obm_pool_arena(p)->heap != h || p->prev != prev_pool)
          problems += corrupt(p, "class list holds a pool that does not belong", (unsigned)c,
                              p->size_class);
        prev_pool = p;
      }
      if (h->cls[c].tail != prev_pool)
        problems += corrupt(h, "class list tail is not its last pool", (unsigned)c, 0);
    }
  }
  pthread_mutex_unlock(&_obm_global_lock);
  return problems + _obm_large_check();
}

size_t obm_check(void) {
  return _obm_heap_check_all();
}
