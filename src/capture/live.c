/* live.c — the blocks live along a capture, as every reader of captures counts them
 * (obm_capture_live_*, obmem/capture.h): `obmem report` and `obmem diff` (tools/obmem/analysis.c),
 * and the Python module's budgets for `python -m obmem run --max-peak/--max-leak`.
 *
 * Two open-addressing tables keyed by address (linear probing, backward-shift deletion, grown
 * at 3/4 full): the live blocks, and the frees read before their allocation.  File order is
 * each thread's order, threads interleaved by flush, so a block freed by another thread may be
 * freed before its allocation is read: such a free waits in the second table (with a count, an
 * address may be freed and handed out again several times before the allocations are read),
 * and the next allocation of that address by a thread other than the freeing one is matched to
 * it (the freeing thread's own later allocation of the address cannot be: it came after its
 * free).  An allocation at an address still live ends the older block (its free is in a block
 * not read yet).
 *
 * Weights of sampled captures without libm (the library links none): one_minus_exp_neg.
 * The live bytes are a running sum, set to 0 when no block is live (so that a sampled
 * capture whose blocks were all freed does not show a rounding residue).
 *
 * Invariants: capacity is 0 or a power of two; count * 4 < capacity * 3 after every insert;
 * bytes = the sum of the live blocks' weights (up to rounding).
 */
#include "obmem/capture.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
  uint64_t address; /* 0 = empty */
  uint64_t size;    /* pending table: frees waiting */
  uint32_t stack;
  uint32_t thread;
} entry_t;

typedef struct table_s {
  entry_t *slots;
  size_t capacity, count;
} table_t;

struct obm_capture_live_s {
  table_t live, pending;
  double mean; /* sampled captures' mean bytes; 0 = exact */
  double bytes;
};

/* 1 - exp(-x) for x >= 0, to about 1e-15 relative: x = k ln 2 + r, |r| <= ln 2 / 2 (ln 2 in
 * two parts, Cody and Waite's, so that r is exact to the last bits for k up to 1010), and
 * 1 - exp(-x) = (1 - 2^-k) - 2^-k (exp(-r) - 1) with exp(-r) - 1 summed without its leading 1
 * (no cancellation for small x, where k = 0). */
static double one_minus_exp_neg(double x) {
  if (x > 700) return 1; /* exp(-x) < 1e-304: 1 - exp(-x) rounds to 1 */
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  uint64_t k = (uint64_t)(x / 0.69314718055994530942 + 0.5); /* 0..1010 */
  double r = (x - (double)k * ln2_hi) - (double)k * ln2_lo;
  double term = -r, em1 = 0; /* exp(-r) - 1 = -r + r^2/2 - ...: 20 terms, |r| <= 0.35 */
  for (int i = 2; i <= 21; i++) {
    em1 += term;
    term *= -r / i;
  }
  uint64_t bits = (1023 - k) << 52; /* 2^-k, a normal double */
  double scale;
  memcpy(&scale, &bits, sizeof scale);
  return (1 - scale) - scale * em1;
}

/* An allocation of size bytes in a capture sampled with this mean (0: exact). */
static void weigh(double mean, uint64_t size, double *bytes, double *count) {
  if (mean <= 0 || size == 0) {
    *bytes = (double)size;
    *count = 1;
    return;
  }
  double p = one_minus_exp_neg((double)size / mean);
  *bytes = (double)size / p;
  *count = 1 / p;
}

void obm_capture_weigh(const obm_capture_header_t *header, uint64_t size, double *bytes,
                       double *count) {
  weigh(header->flags & OBM_CAPTURE_FLAG_SAMPLED ? (double)header->sample_mean_bytes : 0, size,
        bytes, count);
}

static size_t home_of(const table_t *t, uint64_t address) {
  return (size_t)((address * 0x9e3779b97f4a7c15ull) >> 17) & (t->capacity - 1);
}

static entry_t *find(table_t *t, uint64_t address) {
  if (!t->capacity) return NULL;
  for (size_t i = home_of(t, address);; i = (i + 1) & (t->capacity - 1)) {
    if (t->slots[i].address == address) return &t->slots[i];
    if (t->slots[i].address == 0) return NULL;
  }
}

/* Inserts or replaces v (v.address != 0); -1 when out of memory (the table unchanged). */
static int put(table_t *t, entry_t v) {
  if ((t->count + 1) * 4 >= t->capacity * 3) {
    size_t n = t->capacity ? t->capacity * 2 : 1024;
    entry_t *s = calloc(n, sizeof *s);
    if (!s) return -1;
    table_t bigger = {s, n, 0};
    for (size_t i = 0; i < t->capacity; i++)
      if (t->slots[i].address) put(&bigger, t->slots[i]);
    free(t->slots);
    *t = bigger;
  }
  size_t i = home_of(t, v.address);
  while (t->slots[i].address && t->slots[i].address != v.address)
    i = (i + 1) & (t->capacity - 1);
  if (!t->slots[i].address) t->count++;
  t->slots[i] = v;
  return 0;
}

static void remove_entry(table_t *t, entry_t *e) {
  size_t mask = t->capacity - 1, i = (size_t)(e - t->slots), j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!t->slots[j].address) break;
    size_t home = home_of(t, t->slots[j].address);
    /* move j back to i unless its home lies cyclically in (i, j] */
    if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
      t->slots[i] = t->slots[j];
      i = j;
    }
  }
  t->slots[i].address = 0;
  t->count--;
}

obm_capture_live_t *obm_capture_live_new(const obm_capture_header_t *header) {
  obm_capture_live_t *l = calloc(1, sizeof *l);
  if (l && (header->flags & OBM_CAPTURE_FLAG_SAMPLED)) l->mean = (double)header->sample_mean_bytes;
  return l;
}

void obm_capture_live_free(obm_capture_live_t *l) {
  if (!l) return;
  free(l->live.slots);
  free(l->pending.slots);
  free(l);
}

static void fill(const obm_capture_live_t *l, const entry_t *e, obm_capture_block_t *out) {
  out->address = e->address;
  out->size = e->size;
  out->stack = e->stack;
  out->thread = e->thread;
  weigh(l->mean, e->size, &out->bytes, &out->count);
}

int obm_capture_live_apply(obm_capture_live_t *l, const obm_capture_record_t *r,
                           obm_capture_block_t *block) {
  if (r->kind == OBM_CAPTURE_ALLOC) {
    entry_t v = {r->address, r->size, r->stack, r->thread};
    entry_t *pend = find(&l->pending, r->address);
    if (pend && pend->thread != r->thread) { /* freed by another thread in a block read earlier */
      fill(l, &v, block);
      if (--pend->size == 0) remove_entry(&l->pending, pend);
      return OBM_CAPTURE_LIVE_CANCELLED;
    }
    entry_t *old = find(&l->live, r->address);
    obm_capture_block_t gone = {0};
    if (old) fill(l, old, &gone); /* its free is in a block not read yet: it ends here */
    if (put(&l->live, v)) return -1;
    fill(l, &v, block);
    l->bytes += block->bytes - gone.bytes;
    return OBM_CAPTURE_LIVE_ADDED;
  }
  if (r->kind != OBM_CAPTURE_FREE) return OBM_CAPTURE_LIVE_NONE;
  entry_t *e = find(&l->live, r->address);
  if (e) {
    fill(l, e, block);
    l->bytes -= block->bytes;
    remove_entry(&l->live, e);
    if (l->live.count == 0) l->bytes = 0;
    return OBM_CAPTURE_LIVE_FREED;
  }
  entry_t *pend = find(&l->pending, r->address);
  if (pend)
    pend->size++;
  else if (put(&l->pending, (entry_t){r->address, 1, 0, r->thread}))
    return -1;
  memset(block, 0, sizeof *block);
  block->address = r->address;
  block->thread = r->thread;
  return OBM_CAPTURE_LIVE_PENDING;
}

double obm_capture_live_bytes(const obm_capture_live_t *l) {
  return l->bytes;
}

uint64_t obm_capture_live_count(const obm_capture_live_t *l) {
  return l->live.count;
}

int obm_capture_live_next(const obm_capture_live_t *l, size_t *cursor, obm_capture_block_t *block) {
  for (size_t i = *cursor; i < l->live.capacity; i++)
    if (l->live.slots[i].address) {
      fill(l, &l->live.slots[i], block);
      *cursor = i + 1;
      return 1;
    }
  *cursor = l->live.capacity;
  return 0;
}
