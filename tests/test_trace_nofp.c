/* test_trace_nofp.c — the tracer's stacks through code without frame pointers (AUTO mode: the
 * frame-pointer chain breaks in the first frame, and the walk goes on by the table of return
 * addresses filled from the call frame information, cfi.c, or libunwind's walks).
 *
 * Compiled with -O2 -fomit-frame-pointer (tests/CMakeLists.txt): each case calls down a path
 * of DEPTH functions chosen from the case's bits, of three frame shapes (no locals; a 200-byte
 * local array; a variable-length array, whose CFA GCC computes from rbp), allocates a block
 * whose size names the case (cases 40.. from a leaf that keeps the caller's frame pointer in
 * rbp, where a frame-pointer step skips a frame), and walks its stack with libgcc's unwinder
 * (_Unwind_Backtrace, from the same call frame information; glibc's backtrace() would do, but
 * AddressSanitizer intercepts it and adds its own frame) right after.  The capture's stack of each
 * block must be that walk: the same return addresses from the leaf's caller out to the outermost
 * frame (the first frames differ by construction: the malloc's return address and the unwinder's).
 * Every case runs twice, so the second walk goes through the table the first one filled.
 *
 * The call frame information's rules themselves (_obm_trace_cfi_rule) are checked against
 * libgcc's unwinder (_Unwind_Backtrace): at each return address, the caller's CFA less the
 * callee's is the offset the rule must give, and the outermost frame must be marked so.  The
 * stacks alone could not tell a wrong rule: the walk checks each step and falls back to
 * libunwind when one fails.
 */
#define _GNU_SOURCE
#include "check.h"

#include "trace/trace_internal.h"

#include <unwind.h>
#include <obmem.h>
#include <obmem/capture.h>
#include <obmem/trace.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NOINLINE __attribute__((noinline, noclone))
enum { CASES = 48, FRAMES = 64, SIZE_BASE = 100000 };

static void *blocks[2][CASES];
static volatile int sink;

/* libgcc's frames of case c in round 0: return address and CFA. */
typedef struct unwound_s {
  uintptr_t ip[FRAMES], cfa[FRAMES];
  int n;
} unwound_t;
static unwound_t unwound[2][CASES];

static _Unwind_Reason_Code unwind_one(struct _Unwind_Context *ctx, void *arg) {
  unwound_t *u = arg;
  if (u->n == FRAMES) return _URC_END_OF_STACK;
  u->ip[u->n] = (uintptr_t)_Unwind_GetIP(ctx);
  u->cfa[u->n++] = (uintptr_t)_Unwind_GetCFA(ctx);
  return _URC_NO_REASON;
}

NOINLINE static void leaf(int round, int c) {
  blocks[round][c] = obm_malloc((size_t)(SIZE_BASE + round * CASES + c));
  _Unwind_Backtrace(unwind_one, &unwound[round][c]);
  sink++;
}

/* Each return address's rule against libgcc's unwinder: _Unwind_GetCFA of a frame is the
 * stack pointer in it at the call (its callee's CFA), so the rule at ip[k] must give
 * cfa[k + 1] - cfa[k]; the walk ends at a frame marked outermost (libgcc then reports one more
 * with ip 0). */
static void check_rules(void) {
  int answered = 0, outermost = 0;
  for (int c = 0; c < CASES; c++) {
    const unwound_t *u = &unwound[0][c];
    int n = u->n, all = 1;
    while (n > 0 && u->ip[n - 1] == 0)
      n--;
    for (int k = 0; k < n; k++) {
      uint64_t offset = 0;
      int outer = 0;
      if (!_obm_trace_cfi_rule(u->ip[k], &offset, &outer)) {
        all = 0;
        continue;
      }
      answered++;
      if (outer) {
        outermost++;
        CHECKF(k == n - 1, "case %d: frame %d of %d (%llx) marked outermost", c, k, n,
               (unsigned long long)u->ip[k]);
      } else {
        CHECKF(k + 1 < u->n && offset == u->cfa[k + 1] - u->cfa[k],
               "case %d frame %d (%llx): the rule says CFA = sp + %llu, libgcc %llu", c, k,
               (unsigned long long)u->ip[k], (unsigned long long)offset,
               k + 1 < u->n ? (unsigned long long)(u->cfa[k + 1] - u->cfa[k]) : 0ull);
      }
    }
    /* without variable-length arrays every frame has a rule (rsp-based CFA) */
    CHECKF(c >= 32 || all, "case %d: a frame without a rule", c);
  }
  CHECKF(outermost == CASES, "%d of %d walks reached a frame marked outermost", outermost, CASES);
  CHECKF(answered > CASES * 5, "%d rules", answered);
}

/* A leaf that leaves rbp alone (no frame pointer, few registers): called from a function
 * that keeps one (dynamic), rbp still holds that function's frame when malloc is called, and a
 * frame-pointer step from here would go to dynamic's caller, skipping dynamic's own frame. */
static size_t thin_size;
static void **thin_block;
static unwound_t *thin_unwound;
NOINLINE static void thin(void) { /* its arguments in globals: no register kept across calls */
  *thin_block = obm_malloc(thin_size);
  _Unwind_Backtrace(unwind_one, thin_unwound);
  sink++;
}

static void step(int round, int c, int d);

NOINLINE static void plain(int round, int c, int d) {
  step(round, c, d);
  sink++;
}

NOINLINE static void wide(int round, int c, int d) {
  volatile char buf[200];
  buf[d % 200] = (char)c;
  step(round, c, d);
  sink += buf[d % 200];
}

NOINLINE static void dynamic(int round, int c, int d) {
  volatile char buf[16 + (c % 7) * 8];
  buf[0] = (char)d;
  step(round, c, d);
  sink += buf[0];
}

/* Level d of case c: three more levels of its path, or the leaf. */
static void step(int round, int c, int d) {
  if (d == 0) {
    if (c >= 40) {
      thin_size = (size_t)(SIZE_BASE + round * CASES + c);
      thin_block = &blocks[round][c];
      thin_unwound = &unwound[round][c];
      thin();
    } else
      leaf(round, c);
    return;
  }
  /* cases 0..31 without variable-length arrays, 32.. with some, 40.. calling thin from one */
  int kind = (c >> (d % 5)) & 1;
  if ((c >= 32 && d % 3 == 0) || (c >= 40 && d == 1)) kind = 2;
  if (kind == 0)
    plain(round, c, d - 1);
  else if (kind == 1)
    wide(round, c, d - 1);
  else
    dynamic(round, c, d - 1);
}

int main(int argc, char **argv) {
  check_seed_init("test_trace_nofp", 0, argv, 0, 1);
  if (argc < 2) {
    fprintf(stderr, "usage: test_trace_nofp DIR\n");
    return 2;
  }
  mkdir(argv[1], 0755);
  char path[4096];
  snprintf(path, sizeof path, "%s/trace-nofp.cap", argv[1]);
  obm_trace_options_t o;
  obm_trace_options_init(&o); /* AUTO stacks */
  CHECK(obm_trace_start(path, &o) == 0);
  for (int round = 0; round < 2; round++)
    for (int c = 0; c < CASES; c++)
      step(round, c, 3 + c % 9);
  CHECK(obm_trace_stop() == 0);
  check_rules();

  char err[512];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return check_done();
  obm_capture_record_t r;
  int rc, seen = 0;
  while ((rc = obm_capture_next(cap, &r)) > 0) {
    if (r.kind != OBM_CAPTURE_ALLOC || r.size < SIZE_BASE || r.size >= SIZE_BASE + 2 * CASES)
      continue;
    int round = (int)(r.size - SIZE_BASE) / CASES, c = (int)(r.size - SIZE_BASE) % CASES;
    uint64_t frames[FRAMES];
    int n = 0;
    for (uint32_t id = r.stack; id != 0 && n < FRAMES;) {
      uint32_t parent, frame;
      if (obm_capture_stack(cap, id, &parent, &frame) != 0) break;
      frames[n++] = obm_capture_frame_address(cap, frame);
      id = parent;
    }
    /* libgcc's frames: leaf's own (after the unwinder's call, not the malloc's), then its
     * callers out to the outermost (then one with ip 0) */
    const unwound_t *u = &unwound[round][c];
    int m = u->n;
    while (m > 0 && u->ip[m - 1] == 0)
      m--;
    /* the recorded stack starts at leaf's call of malloc (in a sanitizer's build the
     * allocator's own frames come first: instrumented, its calls are not tail calls) */
    int top = 0;
    while (top < 4 && top + 1 < n && m > 1 && frames[top + 1] != (uint64_t)u->ip[1])
      top++;
    int same = n - top == m && m > 3 + c % 9 + 2;
#if defined(__SANITIZE_THREAD__)
    /* no libunwind under ThreadSanitizer: a frame whose CFA the CFI computes from rbp (the
     * variable-length arrays') ends the stack there, what was recorded must still be right;
     * and a frame-pointer step from thin is not checked (it skips dynamic's frame) */
    if (c >= 32) same = n - top <= m && n - top >= 1;
    if (c >= 40) same = n >= 1;
#endif
    for (int i = 1; i < m && i < n - top && same; i++)
      same = frames[top + i] == (uint64_t)u->ip[i];
    if (!same) /* recorded, libgcc's */
      for (int i = 0; i < n || i < m; i++)
        fprintf(stderr, "  %2d  %16llx  %16llx\n", i, i < n ? (unsigned long long)frames[i] : 0ull,
                i < m ? (unsigned long long)u->ip[i] : 0ull);
    CHECKF(same, "round %d case %d: %d frames recorded, libgcc's unwinder has %d", round, c, n, m);
    seen++;
  }
  CHECKF(rc == 0, "%s", obm_capture_error(cap));
  CHECKF(seen == 2 * CASES, "%d of the cases' blocks in the capture", seen);
  obm_capture_close(cap);
  for (int round = 0; round < 2; round++)
    for (int c = 0; c < CASES; c++)
      obm_free(blocks[round][c]);
  return check_done();
}
