/* cfi.c — a return address's frame from the loaded code's call frame information (.eh_frame),
 * for the learned walk (stacks.c): where the caller's stack pointer (the CFA) lies from the
 * stack pointer at the return, read from the compiler's own description of the frame instead
 * of learned from libunwind's walks.
 *
 * The object's .eh_frame_hdr (PT_GNU_EH_FRAME) holds a table of (function start, FDE) sorted
 * by start: a binary search finds the FDE of the function holding pc - 1 (the call
 * instruction: a return address may start another function's code or row); its CIE's and its
 * own CFA instructions are run up to that address, keeping only what the walk needs: the CFA
 * rule (register and offset, remembered and restored with DW_CFA_remember/restore_state) and
 * the return address's rule.  A usable row is CFA = rsp + N with the return address saved at
 * CFA - 8 (x86-64's call: what GCC and clang emit for every frame that does not use a frame
 * pointer as CFA), or the return address undefined (the outermost frame: _start, a thread's
 * start).  Anything else is refused: a CFA from rbp (a frame pointer, or a frame with alloca:
 * the frame-pointer walk and libunwind serve those), an expression, a signal frame (augmentation
 * "S"), a 64-bit DWARF length, an unknown instruction or encoding.
 *
 * Called inside malloc on any thread: no allocation, no lock, no libc call but memcpy; every
 * read is checked to lie in the readable segment that holds .eh_frame_hdr (.eh_frame is next to
 * it in every layout the linkers make; an FDE or CIE outside is refused), and the instructions
 * run are bounded by their entry's length.
 */
#include "trace/trace_internal.h"

#include <string.h>

enum {
  PE_ABSPTR = 0x00, /* value formats */
  PE_ULEB128 = 0x01,
  PE_UDATA2 = 0x02,
  PE_UDATA4 = 0x03,
  PE_UDATA8 = 0x04,
  PE_SLEB128 = 0x09,
  PE_SDATA2 = 0x0a,
  PE_SDATA4 = 0x0b,
  PE_SDATA8 = 0x0c,
  PE_PCREL = 0x10, /* applications */
  PE_DATAREL = 0x30,
  PE_INDIRECT = 0x80,
  PE_OMIT = 0xff,
};

enum { REG_RSP = 7, REG_RA = 16, STATE_DEPTH = 8 };

/* A bounded reader over [p, end) of readable memory. */
typedef struct cursor_s {
  const uint8_t *p, *end;
  int bad;
} cursor_t;

static uint64_t get_bytes(cursor_t *c, size_t n) {
  if (c->bad || (size_t)(c->end - c->p) < n) {
    c->bad = 1;
    return 0;
  }
  uint64_t v = 0;
  memcpy(&v, c->p, n); /* little-endian */
  c->p += n;
  return v;
}

static uint64_t get_uleb(cursor_t *c) {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    uint64_t b = get_bytes(c, 1);
    if (c->bad) return 0;
    v |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  c->bad = 1;
  return 0;
}

static int64_t get_sleb(cursor_t *c) {
  uint64_t v = 0, b = 0;
  unsigned shift = 0;
  do {
    if (shift >= 64) {
      c->bad = 1;
      return 0;
    }
    b = get_bytes(c, 1);
    if (c->bad) return 0;
    v |= (b & 0x7f) << shift;
    shift += 7;
  } while (b & 0x80);
  if (shift < 64 && (b & 0x40)) v |= ~(uint64_t)0 << shift;
  return (int64_t)v;
}

/* A pointer in encoding enc, read at c; datarel is relative to data (.eh_frame_hdr). */
static uint64_t get_pointer(cursor_t *c, unsigned enc, uintptr_t data) {
  if (enc == PE_OMIT || (enc & PE_INDIRECT)) {
    c->bad = 1;
    return 0;
  }
  uintptr_t at = (uintptr_t)c->p;
  uint64_t v;
  switch (enc & 0x0f) {
  case PE_ABSPTR:
    v = get_bytes(c, 8);
    break;
  case PE_ULEB128:
    v = get_uleb(c);
    break;
  case PE_UDATA2:
    v = get_bytes(c, 2);
    break;
  case PE_UDATA4:
    v = get_bytes(c, 4);
    break;
  case PE_UDATA8:
    v = get_bytes(c, 8);
    break;
  case PE_SLEB128:
    v = (uint64_t)get_sleb(c);
    break;
  case PE_SDATA2:
    v = (uint64_t)(int64_t)(int16_t)get_bytes(c, 2);
    break;
  case PE_SDATA4:
    v = (uint64_t)(int64_t)(int32_t)get_bytes(c, 4);
    break;
  case PE_SDATA8:
    v = get_bytes(c, 8);
    break;
  default:
    c->bad = 1;
    return 0;
  }
  switch (enc & 0x70) {
  case 0:
    break;
  case PE_PCREL:
    v += at;
    break;
  case PE_DATAREL:
    v += data;
    break;
  default:
    c->bad = 1;
    return 0;
  }
  return v;
}

/* The row being computed: the CFA's register and offset, whether the CFA is an expression,
 * and the return address's rule (RA_UNKNOWN, RA_AT: at CFA + ra_offset, RA_UNDEFINED: the
 * outermost frame, RA_OTHER: anything the walk cannot follow). */
enum { RA_UNKNOWN, RA_AT, RA_UNDEFINED, RA_OTHER };
typedef struct row_s {
  uint64_t cfa_reg;
  int64_t cfa_offset;
  int cfa_expr;
  int ra_rule;
  int64_t ra_offset;
} row_t;

typedef struct cie_s {
  uint64_t code_align;
  int64_t data_align;
  uint64_t ra_reg;
  unsigned fde_enc;
  int has_z;
  const uint8_t *insns, *insns_end;
} cie_t;

/* A factored offset times the CIE's data alignment, refused (c->bad) past 2^20 either way:
 * no frame is that large, and the product stays far from overflow. */
static int64_t scaled(cursor_t *c, int64_t v, int64_t align) {
  if (v > (1 << 20) || v < -(1 << 20)) {
    c->bad = 1;
    return 0;
  }
  return v * align;
}
static int64_t scaled_u(cursor_t *c, uint64_t v, int64_t align) {
  return scaled(c, v > (1u << 21) ? (int64_t)(1 << 21) : (int64_t)v, align);
}

/* The rule of register reg becomes rule (at offset): only the return address's is kept. */
static void set_rule(row_t *row, uint64_t reg, int rule, int64_t offset) {
  if (reg != REG_RA) return;
  row->ra_rule = rule;
  row->ra_offset = offset;
}

/* Skips a DWARF expression block (a length, then that many bytes). */
static void skip_block(cursor_t *c) {
  uint64_t n = get_uleb(c);
  if (n > (uint64_t)(c->end - c->p))
    c->bad = 1;
  else
    c->p += n;
}

/* Runs instructions [c.p, c.end) from location loc until the row for target; initial: the
 * CIE's row (DW_CFA_restore of the return address's register goes back to it; NULL while
 * running the CIE's own).  0 on an instruction it cannot follow. */
static int run_cfa(cursor_t c, const cie_t *cie, uint64_t loc, uint64_t target, row_t *row,
                   const row_t *initial) {
  row_t stack[STATE_DEPTH];
  int depth = 0;
  const row_t none = {.ra_rule = RA_UNKNOWN};
  if (!initial) initial = &none;
  while (c.p < c.end && !c.bad) {
    unsigned op = (unsigned)get_bytes(&c, 1);
    uint64_t reg, delta = 0;
    switch (op >> 6) {
    case 1: /* DW_CFA_advance_loc */
      delta = (op & 0x3f) * cie->code_align;
      break;
    case 2: /* DW_CFA_offset */
      set_rule(row, op & 0x3f, RA_AT, scaled_u(&c, get_uleb(&c), cie->data_align));
      continue;
    case 3: /* DW_CFA_restore */
      set_rule(row, op & 0x3f, initial->ra_rule, initial->ra_offset);
      continue;
    default:
      switch (op) {
      case 0x00:
        continue; /* nop */
      case 0x02:
        delta = get_bytes(&c, 1) * cie->code_align;
        break; /* advance_loc1 */
      case 0x03:
        delta = get_bytes(&c, 2) * cie->code_align;
        break; /* advance_loc2 */
      case 0x04:
        delta = get_bytes(&c, 4) * cie->code_align;
        break;   /* advance_loc4 */
      case 0x05: /* offset_extended */
        reg = get_uleb(&c);
        set_rule(row, reg, RA_AT, scaled_u(&c, get_uleb(&c), cie->data_align));
        continue;
      case 0x06: /* restore_extended */
        set_rule(row, get_uleb(&c), initial->ra_rule, initial->ra_offset);
        continue;
      case 0x07: /* undefined */
        set_rule(row, get_uleb(&c), RA_UNDEFINED, 0);
        continue;
      case 0x08: /* same_value */
        set_rule(row, get_uleb(&c), RA_OTHER, 0);
        continue;
      case 0x09: /* register */
      case 0x14: /* val_offset */
      case 0x15: /* val_offset_sf (its operand skipped as one LEB128 like the others) */
        reg = get_uleb(&c);
        get_uleb(&c);
        set_rule(row, reg, RA_OTHER, 0);
        continue;
      case 0x0a: /* remember_state */
        if (depth == STATE_DEPTH) return 0;
        stack[depth++] = *row;
        continue;
      case 0x0b: /* restore_state (the CFA rule is restored too, as GCC's unwinder does) */
        if (depth == 0) return 0;
        *row = stack[--depth];
        continue;
      case 0x0c: /* def_cfa */
        row->cfa_reg = get_uleb(&c);
        row->cfa_offset = (int64_t)get_uleb(&c);
        row->cfa_expr = 0;
        continue;
      case 0x12: /* def_cfa_sf */
        row->cfa_reg = get_uleb(&c);
        row->cfa_offset = scaled(&c, get_sleb(&c), cie->data_align);
        row->cfa_expr = 0;
        continue;
      case 0x0d: /* def_cfa_register */
        row->cfa_reg = get_uleb(&c);
        row->cfa_expr = 0;
        continue;
      case 0x0e: /* def_cfa_offset */
        row->cfa_offset = (int64_t)get_uleb(&c);
        continue;
      case 0x13: /* def_cfa_offset_sf */
        row->cfa_offset = scaled(&c, get_sleb(&c), cie->data_align);
        continue;
      case 0x0f: /* def_cfa_expression */
        skip_block(&c);
        row->cfa_expr = 1;
        continue;
      case 0x10: /* expression */
      case 0x16: /* val_expression */
        reg = get_uleb(&c);
        skip_block(&c);
        set_rule(row, reg, RA_OTHER, 0);
        continue;
      case 0x11: /* offset_extended_sf */
        reg = get_uleb(&c);
        set_rule(row, reg, RA_AT, scaled(&c, get_sleb(&c), cie->data_align));
        continue;
      case 0x2e: /* GNU_args_size */
        get_uleb(&c);
        continue;
      case 0x2f: /* GNU_negative_offset_extended */
        reg = get_uleb(&c);
        set_rule(row, reg, RA_AT, -scaled_u(&c, get_uleb(&c), cie->data_align));
        continue;
      default: /* set_loc (not emitted for x86-64) and anything unknown */
        return 0;
      }
    }
    /* an advance: the row so far holds for [loc, loc + delta) */
    if (target < loc + delta) return !c.bad;
    loc += delta;
  }
  return !c.bad;
}

/* Parses the CIE at p (in [lo, hi)). */
static int parse_cie(const uint8_t *p, uintptr_t lo, uintptr_t hi, cie_t *cie) {
  cursor_t c = {p, (const uint8_t *)hi, 0};
  if ((uintptr_t)p < lo) return 0;
  uint64_t length = get_bytes(&c, 4);
  if (c.bad || length == 0 || length == 0xffffffffu || length > (uint64_t)(c.end - c.p)) return 0;
  c.end = c.p + length;
  if (get_bytes(&c, 4) != 0) return 0; /* CIE id */
  unsigned version = (unsigned)get_bytes(&c, 1);
  if (version != 1 && version != 3) return 0;
  const char *aug = (const char *)c.p;
  size_t alen = 0;
  while (c.p + alen < c.end && aug[alen])
    alen++;
  if (c.p + alen >= c.end) return 0;
  c.p += alen + 1;
  cie->code_align = get_uleb(&c);
  cie->data_align = get_sleb(&c);
  cie->ra_reg = version == 1 ? get_bytes(&c, 1) : get_uleb(&c);
  cie->fde_enc = PE_ABSPTR;
  cie->has_z = 0;
  if (alen > 0) {
    if (aug[0] != 'z') return 0; /* "eh" and the like: not emitted for x86-64 */
    cie->has_z = 1;
    uint64_t n = get_uleb(&c);
    if (c.bad || n > (uint64_t)(c.end - c.p)) return 0;
    cursor_t a = {c.p, c.p + n, 0};
    for (size_t i = 1; i < alen; i++) {
      switch (aug[i]) {
      case 'R':
        cie->fde_enc = (unsigned)get_bytes(&a, 1);
        break;
      case 'L':
        get_bytes(&a, 1);
        break;
      case 'P': {
        unsigned enc = (unsigned)get_bytes(&a, 1);
        get_pointer(&a, enc & ~(unsigned)PE_INDIRECT, 0);
        break;
      }
      case 'S':
        return 0; /* a signal frame */
      case 'B':
        break; /* AArch64's; nothing to read */
      default:
        return 0;
      }
      if (a.bad) return 0;
    }
    c.p += n;
  }
  if (c.bad || cie->ra_reg != REG_RA || cie->code_align == 0 || cie->code_align > 256 ||
      cie->data_align > 256 || cie->data_align < -256)
    return 0;
  cie->insns = c.p;
  cie->insns_end = c.end;
  return 1;
}

int _obm_cfi_frame(uintptr_t pc, uintptr_t hdr, uintptr_t lo, uintptr_t hi, uint64_t *cfa_offset,
                   int *outermost) {
  if (!hdr || hdr < lo || hdr >= hi || pc == 0) return 0;
  uintptr_t target = pc - 1; /* the call instruction */
  cursor_t c = {(const uint8_t *)hdr, (const uint8_t *)hi, 0};
  unsigned version = (unsigned)get_bytes(&c, 1), frame_enc = (unsigned)get_bytes(&c, 1),
           count_enc = (unsigned)get_bytes(&c, 1), table_enc = (unsigned)get_bytes(&c, 1);
  if (c.bad || version != 1 || table_enc != (PE_DATAREL | PE_SDATA4)) return 0;
  get_pointer(&c, frame_enc, hdr);
  uint64_t count = get_pointer(&c, count_enc, hdr);
  if (c.bad || count == 0 || count > (uint64_t)(c.end - c.p) / 8) return 0;
  const uint8_t *table = c.p;
  /* the last entry whose start is <= target */
  uint64_t a = 0, b = count;
  while (b - a > 1) {
    uint64_t mid = a + (b - a) / 2;
    int32_t start;
    memcpy(&start, table + mid * 8, 4);
    if ((uintptr_t)((intptr_t)hdr + start) <= target)
      a = mid;
    else
      b = mid;
  }
  int32_t start_rel, fde_rel;
  memcpy(&start_rel, table + a * 8, 4);
  memcpy(&fde_rel, table + a * 8 + 4, 4);
  if ((uintptr_t)((intptr_t)hdr + start_rel) > target) return 0;
  uintptr_t fde = (uintptr_t)((intptr_t)hdr + fde_rel);
  if (fde < lo || fde >= hi) return 0;
  cursor_t f = {(const uint8_t *)fde, (const uint8_t *)hi, 0};
  uint64_t length = get_bytes(&f, 4);
  if (f.bad || length == 0 || length == 0xffffffffu || length > (uint64_t)(f.end - f.p)) return 0;
  f.end = f.p + length;
  const uint8_t *id_at = f.p;
  uint64_t cie_delta = get_bytes(&f, 4);
  if (f.bad || cie_delta == 0 || cie_delta > (uintptr_t)id_at - lo) return 0;
  cie_t cie;
  if (!parse_cie(id_at - cie_delta, lo, hi, &cie)) return 0;
  uint64_t begin = get_pointer(&f, cie.fde_enc, hdr);
  uint64_t range = get_pointer(&f, cie.fde_enc & 0x0f, hdr);
  if (f.bad || target < begin || target - begin >= range) return 0;
  if (cie.has_z) {
    uint64_t n = get_uleb(&f);
    if (f.bad || n > (uint64_t)(f.end - f.p)) return 0;
    f.p += n;
  }
  row_t row = {0}, initial;
  cursor_t ci = {cie.insns, cie.insns_end, 0};
  if (!run_cfa(ci, &cie, begin, UINT64_MAX, &row, NULL)) return 0;
  initial = row;
  if (!run_cfa(f, &cie, begin, target, &row, &initial)) return 0;
  if (row.ra_rule == RA_UNDEFINED) {
    *outermost = 1;
    *cfa_offset = 0;
    return 1;
  }
  if (row.cfa_expr || row.cfa_reg != REG_RSP || row.ra_rule != RA_AT || row.ra_offset != -8 ||
      row.cfa_offset < 8 || (row.cfa_offset & 7) || row.cfa_offset > (1 << 20))
    return 0;
  *outermost = 0;
  *cfa_offset = (uint64_t)row.cfa_offset;
  return 1;
}
