/* debug.c — debug mode (OBMEM_DEBUG=1), like CPython's PYTHONMALLOC=debug.
 *
 * Each allocation gets a raw block laid out as
 *   [link 8 | size 8 | serial 8 | state 4 | pad 4 | guard 16 + pad bytes][user size][guard 16]
 *    ^ raw block start (the free-list link may overwrite the first word)
 * with guard bytes 0xFD, new memory filled 0xCD and freed memory 0xDD.  Free checks the
 * state (double free, never handed out), the guards (underrun, overrun) and then fills the
 * user bytes with 0xDD; the next allocation of the same raw block, or obm_check(), finds a
 * write after free as a byte that is no longer 0xDD.  Every report names the address, the
 * size, the serial number and the check that failed.
 */
#include "alloc/alloc_internal.h"

#include <errno.h>
#include <string.h>

#define HDR 48u
#define TAIL 16u
#define FILL_NEW 0xCD
#define FILL_FREED 0xDD
#define FILL_GUARD 0xFD
#define STATE_ALIVE 0xA11CE5EDu
#define STATE_FREED 0xF4EED0DDu

typedef struct dbg_hdr_s {
  uint64_t link_;  /* overwritten by free lists */
  uint64_t size;   /* requested bytes */
  uint64_t serial; /* allocation order, from 1 */
  uint32_t state;  /* STATE_ALIVE / STATE_FREED */
  uint32_t pad;    /* guard bytes between the header and the user block, for alignment */
  uint8_t guard[16];
} dbg_hdr_t;

_Static_assert(sizeof(dbg_hdr_t) == HDR, "debug header size");

static _Atomic(uint64_t) serial_counter;

static uint8_t *user_of(dbg_hdr_t *h) {
  return (uint8_t *)h + HDR + h->pad;
}

/* First byte in [p, p+n) that differs from v, or NULL. */
static const uint8_t *find_not(const uint8_t *p, size_t n, uint8_t v) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) return p + i;
  return NULL;
}

/* A freed block is being reused: its user bytes must still read 0xDD. */
static size_t check_freed(dbg_hdr_t *h, size_t raw_size, const char *when) {
  size_t room = raw_size > HDR + TAIL ? raw_size - HDR - TAIL : 0;
  if (h->pad > room) return 0; /* not one of our headers (a pool reused for another class) */
  size_t n = h->size < room - h->pad ? h->size : room - h->pad;
  const uint8_t *bad = find_not(user_of(h), n, FILL_FREED);
  if (!bad) return 0;
  _obm_error(OBM_ERR_WRITE_AFTER_FREE, user_of(h),
             "block %p of %zu bytes, serial %llu, was written after it was freed: byte %zu "
             "(at %p) is 0x%x, expected 0x%x (freed fill); found %s",
             (void *)user_of(h), (size_t)h->size, (unsigned long long)h->serial,
             (size_t)(bad - user_of(h)), (const void *)bad, *bad, FILL_FREED, when);
  return 1;
}

static size_t check_guards(dbg_hdr_t *h, const char *when) {
  uint8_t *user = user_of(h);
  const uint8_t *bad = find_not((uint8_t *)h->guard, 16u + h->pad, FILL_GUARD);
  if (bad) {
    _obm_error(OBM_ERR_UNDERRUN, user,
               "block %p of %zu bytes, serial %llu: the guard before it was overwritten: byte "
               "%zu before the block (at %p) is 0x%x, expected 0x%x; found %s",
               (void *)user, (size_t)h->size, (unsigned long long)h->serial,
               (size_t)(user - bad), (const void *)bad, *bad, FILL_GUARD, when);
    return 1;
  }
  bad = find_not(user + h->size, TAIL, FILL_GUARD);
  if (bad) {
    _obm_error(OBM_ERR_OVERRUN, user,
               "block %p of %zu bytes, serial %llu: the guard after it was overwritten: byte "
               "%zu after the block (at %p) is 0x%x, expected 0x%x; found %s",
               (void *)user, (size_t)h->size, (unsigned long long)h->serial,
               (size_t)(bad - (user + h->size)), (const void *)bad, *bad, FILL_GUARD, when);
    return 1;
  }
  return 0;
}

void *_obm_debug_malloc(size_t size, size_t alignment, int zero) {
  if (alignment < OBM_ALIGNMENT) alignment = OBM_ALIGNMENT;
  size_t pad = alignment > HDR ? alignment - HDR : (HDR % alignment ? alignment - HDR % alignment : 0);
  size_t total;
  if (__builtin_add_overflow(size, HDR + TAIL + pad, &total) || total > ((size_t)1 << 46)) {
    errno = ENOMEM;
    return NULL;
  }
  uint8_t *raw = _obm_raw_aligned(alignment, total);
  if (!raw) return NULL;
  obm_segment_t *seg = _obm_pagemap_lookup(raw);
  size_t raw_size = _obm_raw_usable(raw, seg);
  dbg_hdr_t *h = (dbg_hdr_t *)raw;
  if (h->state == STATE_FREED) check_freed(h, raw_size, "when the block was allocated again");
  h->size = size;
  h->serial = atomic_fetch_add_explicit(&serial_counter, 1, memory_order_relaxed) + 1;
  h->state = STATE_ALIVE;
  h->pad = (uint32_t)pad;
  memset(h->guard, FILL_GUARD, 16 + pad);
  uint8_t *user = user_of(h);
  memset(user, zero ? 0 : FILL_NEW, size);
  memset(user + size, FILL_GUARD, TAIL);
  obm_assert(((uintptr_t)user & (alignment - 1)) == 0);
  return user;
}

/* The header of the live block whose user pointer is p, or NULL after a report. */
static dbg_hdr_t *validate(const void *p, obm_segment_t *seg, const char *op, size_t *raw_size) {
  uint8_t *raw = _obm_raw_block_start(p, seg, raw_size);
  dbg_hdr_t *h = (dbg_hdr_t *)raw;
  if (raw && (h->state == STATE_ALIVE || h->state == STATE_FREED) &&
      h->pad <= *raw_size && user_of(h) == (const uint8_t *)p) {
    if (h->state == STATE_FREED) {
      _obm_error(OBM_ERR_DOUBLE_FREE, (void *)p,
                 "%s(%p): block of %zu bytes, serial %llu, was already freed (double free)", op,
                 p, (size_t)h->size, (unsigned long long)h->serial);
      return NULL;
    }
    return h;
  }
  _obm_error(OBM_ERR_NOT_BLOCK_START, (void *)p,
             "%s(%p): obmem never handed out this address (it is inside obmem's memory but "
             "not the start of a live block)",
             op, p);
  return NULL;
}

void _obm_debug_free(void *p, obm_segment_t *seg) {
  size_t raw_size;
  dbg_hdr_t *h = validate(p, seg, "free", &raw_size);
  if (!h) return;
  if (check_guards(h, "by free")) return;
  memset(p, FILL_FREED, h->size);
  h->state = STATE_FREED;
  _obm_raw_free(h, seg);
}

void *_obm_debug_realloc(void *p, obm_segment_t *seg, size_t size) {
  size_t raw_size;
  dbg_hdr_t *h = validate(p, seg, "realloc", &raw_size);
  if (!h || check_guards(h, "by realloc")) {
    errno = EINVAL;
    return NULL;
  }
  void *fresh = _obm_debug_malloc(size, OBM_ALIGNMENT, 0);
  if (!fresh) return NULL;
  memcpy(fresh, p, h->size < size ? h->size : size);
  _obm_debug_free(p, seg);
  return fresh;
}

size_t _obm_debug_usable(const void *p, obm_segment_t *seg) {
  size_t raw_size;
  dbg_hdr_t *h = validate(p, seg, "usable_size", &raw_size);
  return h ? h->size : 0;
}

size_t _obm_debug_check_block(uint8_t *raw, size_t raw_size) {
  dbg_hdr_t *h = (dbg_hdr_t *)raw;
  if (raw_size < HDR + TAIL) return 0;
  if (h->state == STATE_ALIVE) {
    if (h->pad > raw_size || h->size > raw_size - HDR - TAIL - h->pad) {
      _obm_error(OBM_ERR_UNDERRUN, raw + HDR,
                 "the debug header of the block at %p is damaged (size %zu, pad %u); found by "
                 "obm_check",
                 (void *)(raw + HDR), (size_t)h->size, (unsigned)h->pad);
      return 1;
    }
    return check_guards(h, "by obm_check");
  }
  if (h->state == STATE_FREED) return check_freed(h, raw_size, "by obm_check");
  return 0;
}

/* Read by obm_stats_get's snapshot (stats.c, read_counters) while the block's owner may be
 * writing the header: the same deliberate race, not instrumented either (TSan reported the
 * owner's store of the state against this load, with the load's stack restored without
 * read_counters' frame, so tests/tsan.supp did not match: threads_debug, 1 run in ~30). */
OBM_NO_TSAN size_t _obm_debug_block_requested(const uint8_t *raw, size_t raw_size) {
  const dbg_hdr_t *h = (const dbg_hdr_t *)raw;
  if (raw_size < HDR + TAIL || h->state != STATE_ALIVE) return 0;
  return HDR + TAIL + h->pad + h->size;
}

int obm_debug_enabled(void) {
  _obm_init();
  return _obm_debug_on;
}

uint64_t obm_debug_serial(const void *p) {
  if (!_obm_debug_on || !p) return 0;
  obm_segment_t *seg = _obm_pagemap_lookup(p);
  if (!seg) return 0;
  size_t raw_size;
  uint8_t *raw = _obm_raw_block_start(p, seg, &raw_size);
  dbg_hdr_t *h = (dbg_hdr_t *)raw;
  if (!raw || h->state != STATE_ALIVE || user_of(h) != (const uint8_t *)p) return 0;
  return h->serial;
}
