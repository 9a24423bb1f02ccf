/* test_trace_interp.c — interpreter frames in captures (obm_trace_set_interpreter, PYFRAME).
 *
 * A made-up interpreter (frames: a per-thread list of (code, offset) pairs the test sets;
 * names: "fK" in "modK.py", line offset + 1) is registered with the tracer, and allocations
 * are made through the allocator's hook API with made-up addresses.  Checked through the
 * reader:
 *   - with no native stacks, each allocation's stack is exactly its interpreted frames,
 *     innermost first, with their names and lines; names is called once per (code, offset);
 *     three threads with different stacks;
 *   - with native stacks (frame pointers), the merged stack: the native frame inside the
 *     "interpreter loop" (fake_eval, the range [eval_lo, eval_hi)) is replaced by the
 *     interpreted frames, the C frame that allocated stays innermost, the loop's caller
 *     outermost; an allocation while frames returns 0 has the native stack alone;
 *   - damaged PYFRAME records (a name over the bound, a string past the block, a NUL in a
 *     name) are refused with the record's offset named, and a good one is read.
 *   test_trace_interp DIR
 * Compiled with -g -fno-omit-frame-pointer -fno-optimize-sibling-calls (tests/CMakeLists.txt).
 */
#define _GNU_SOURCE
#include "check.h"
#include "capture/capture_internal.h"
#include "trace/trace_internal.h"

#include <errno.h>
#include <obmem/capture.h>
#include <obmem/trace.h>
#include <pthread.h>
#include <sys/stat.h>

#define NOINLINE __attribute__((noinline, noclone))
#define NCODES   8

static const char *dir;
static char codes[NCODES][64] __attribute__((aligned(16))); /* the "code objects" */
static __thread obm_trace_interp_frame_t tls_frames[16];
static __thread int tls_nframes;
static atomic_int names_calls[NCODES][16];

static int fake_frames(obm_trace_interp_frame_t *out, int max) {
  int n = tls_nframes < max ? tls_nframes : max;
  memcpy(out, tls_frames, (size_t)n * sizeof *out);
  return n;
}

static int code_index(const void *code) {
  return (int)(((const char *)code - codes[0]) / (long)sizeof codes[0]);
}

static int fake_names(const void *code, uint32_t offset, obm_trace_interp_names_t *out) {
  static __thread char function[32], file[32];
  int k = code_index(code);
  CHECK(k >= 0 && k < NCODES && offset < 16);
  atomic_fetch_add(&names_calls[k][offset], 1);
  out->function_len = (size_t)snprintf(function, sizeof function, "f%d", k);
  out->file_len = (size_t)snprintf(file, sizeof file, "mod%d.py", k);
  out->function = function;
  out->file = file;
  out->line = offset + 1;
  return 0;
}

/* Sets the calling thread's interpreted stack: n frames (code k[i], offset o[i]). */
static void set_stack(int n, const int *k, const int *o) {
  for (int i = 0; i < n; i++)
    tls_frames[i] = (obm_trace_interp_frame_t){codes[k[i]], (uint32_t)o[i]};
  tls_nframes = n;
}

/* The frames of a recorded stack, innermost first: for an interpreted frame its code index
 * * 100 + its line (from the names), else -1 and its return address in native[]. */
static int stack_of(obm_capture_t *cap, uint32_t stack, int *out, uint64_t *native, int max) {
  int n = 0;
  for (uint32_t id = stack; id != 0 && n < max;) {
    uint32_t parent, frame, line;
    const char *function, *file;
    CHECK(obm_capture_stack(cap, id, &parent, &frame) == 0);
    if (obm_capture_frame_python(cap, frame, &function, &file, &line)) {
      int k = atoi(function + 1);
      char expect[32];
      snprintf(expect, sizeof expect, "mod%d.py", k);
      CHECKF(function[0] == 'f' && strcmp(file, expect) == 0, "%s in %s", function, file);
      out[n] = k * 100 + (int)line;
      native[n] = 0;
    } else {
      out[n] = -1;
      native[n] = obm_capture_frame_address(cap, frame);
    }
    n++;
    id = parent;
  }
  return n;
}

static obm_capture_t *open_capture(const char *path) {
  char err[512];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  return cap;
}

/* The allocator's recording function (src/alloc/traced.c) that calls the hook: the walk starts
 * at the hook's caller's frame, so the first frame recorded is this function's caller. */
__attribute__((noinline, noclone)) static void record_alloc(void *p, size_t size) {
  _obm_trace_alloc(p, size);
  __asm__ volatile("" ::: "memory"); /* a call, not a jump: this frame stays */
}

/* ---- interpreted frames alone, three threads ---------------------------------------------- */

static void *thread_main(void *arg) {
  int t = (int)(intptr_t)arg;
  int k[3] = {t, 3, 4}, o[3] = {t + 1, 2, 0};
  set_stack(3, k, o);
  for (int i = 0; i < 100; i++)
    record_alloc((void *)(uintptr_t)(((uint64_t)t + 1) << 32 | (uint64_t)i * 64), 1000 + t);
  return NULL;
}

static void test_alone(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/interp-alone.cap", dir);
  obm_trace_interp_t in = {.frames = fake_frames, .names = fake_names};
  CHECK(obm_trace_set_interpreter(&(obm_trace_interp_t){0}) == EINVAL);
  CHECK(obm_trace_set_interpreter(&in) == 0);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.stacks = OBM_TRACE_STACKS_NONE;
  CHECK(obm_trace_start(path, &o) == 0);
  CHECK(obm_trace_set_interpreter(NULL) == EBUSY);
  pthread_t th[3];
  for (int t = 0; t < 3; t++)
    CHECK(pthread_create(&th[t], NULL, thread_main, (void *)(intptr_t)t) == 0);
  for (int t = 0; t < 3; t++)
    pthread_join(th[t], NULL);
  tls_nframes = 0; /* no interpreted frames: the empty stack (no native ones either) */
  record_alloc((void *)(uintptr_t)((uint64_t)9 << 32), 77);
  CHECK(obm_trace_stop() == 0);
  CHECK(obm_trace_set_interpreter(NULL) == 0);

  obm_capture_t *cap = open_capture(path);
  if (!cap) return;
  CHECK(obm_capture_header(cap)->flags & OBM_CAPTURE_FLAG_PYTHON);
  CHECK(!(obm_capture_header(cap)->flags & OBM_CAPTURE_FLAG_STACKS));
  obm_capture_record_t r;
  int st, seen[4] = {0};
  while ((st = obm_capture_next(cap, &r)) > 0) {
    if (r.kind != OBM_CAPTURE_ALLOC) continue;
    int frames[8];
    uint64_t native[8];
    int n = stack_of(cap, r.stack, frames, native, 8);
    if (r.size == 77) {
      CHECK(r.stack == 0);
      seen[3]++;
      continue;
    }
    int t = (int)r.size - 1000;
    CHECK(t >= 0 && t < 3);
    CHECKF(n == 3 && frames[0] == t * 100 + t + 2 && frames[1] == 303 && frames[2] == 401,
           "thread %d: %d frames: %d %d %d", t, n, frames[0], frames[1], frames[2]);
    seen[t]++;
  }
  CHECKF(st == 0 && obm_capture_complete(cap), "%s", obm_capture_error(cap));
  CHECK(seen[0] == 100 && seen[1] == 100 && seen[2] == 100 && seen[3] == 1);
  /* named once per (code, offset) of the session, a frame the three threads met first at the
   * same moment up to once each; 5 distinct frames, 5 PYFRAMEs */
  CHECK(names_calls[0][1] == 1 && names_calls[1][2] == 1 && names_calls[2][3] == 1);
  CHECK(names_calls[3][2] >= 1 && names_calls[3][2] <= 3);
  CHECK(names_calls[4][0] >= 1 && names_calls[4][0] <= 3);
  CHECK(obm_capture_nframes(cap) == 6);
  obm_capture_close(cap);
}

/* ---- merged with native frames ----------------------------------------------------------------
 */

static volatile int sink;

NOINLINE static void c_allocator(uint64_t address, size_t size) {
  record_alloc((void *)(uintptr_t)address, size);
  sink++;
}

/* The "interpreter loop": its frame is replaced by the interpreted frames. */
NOINLINE static void fake_eval(uint64_t address, size_t size) {
  c_allocator(address, size);
  sink++;
}

NOINLINE static void eval_caller(uint64_t address, size_t size) {
  fake_eval(address, size);
  sink++;
}

static void test_merged(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/interp-merged.cap", dir);
  /* fake_eval's code: up to the next function of this file (they are small and close) */
  uintptr_t lo = (uintptr_t)fake_eval, hi = lo + 256;
  uintptr_t others[] = {(uintptr_t)c_allocator, (uintptr_t)eval_caller, (uintptr_t)test_merged,
                        (uintptr_t)fake_frames, (uintptr_t)fake_names,  (uintptr_t)thread_main,
                        (uintptr_t)test_alone,  (uintptr_t)stack_of,    (uintptr_t)set_stack};
  for (size_t i = 0; i < sizeof others / sizeof *others; i++)
    if (others[i] > lo && others[i] < hi) hi = others[i];
  obm_trace_interp_t in = {
      .frames = fake_frames, .names = fake_names, .eval_lo = lo, .eval_hi = hi};
  CHECK(obm_trace_set_interpreter(&in) == 0);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.stacks = OBM_TRACE_STACKS_FP;
  CHECK(obm_trace_start(path, &o) == 0);
  int k[2] = {5, 6}, off[2] = {1, 2};
  set_stack(2, k, off);
  for (int i = 0; i < 10; i++)
    eval_caller((uint64_t)1 << 40 | (uint64_t)i * 64, 2000);
  tls_nframes = 0;
  eval_caller((uint64_t)2 << 40, 3000); /* no interpreted frames: the native stack */
  CHECK(obm_trace_stop() == 0);
  CHECK(obm_trace_set_interpreter(NULL) == 0);

  obm_capture_t *cap = open_capture(path);
  if (!cap) return;
  CHECK((obm_capture_header(cap)->flags & (OBM_CAPTURE_FLAG_PYTHON | OBM_CAPTURE_FLAG_STACKS)) ==
        (OBM_CAPTURE_FLAG_PYTHON | OBM_CAPTURE_FLAG_STACKS));
  obm_capture_record_t r;
  int st, merged = 0, plain = 0;
  uint32_t first_stack = 0;
  while ((st = obm_capture_next(cap, &r)) > 0) {
    if (r.kind != OBM_CAPTURE_ALLOC) continue;
    int frames[64];
    uint64_t native[64];
    int n = stack_of(cap, r.stack, frames, native, 64);
    if (r.size == 2000) {
      /* c_allocator, the two interpreted frames (innermost first), then eval_caller */
      CHECKF(n >= 4 && frames[0] == -1 && frames[1] == 502 && frames[2] == 603 && frames[3] == -1,
             "%d frames: %d %d %d %d", n, frames[0], frames[1], frames[2], frames[3]);
      if (n < 4) continue;
      CHECK(native[0] - (uintptr_t)c_allocator < 256);
      CHECK(native[3] - (uintptr_t)eval_caller < 256);
      for (int i = 0; i < n; i++)
        CHECK(native[i] - in.eval_lo >= in.eval_hi - in.eval_lo); /* no loop frame left */
      if (!first_stack) first_stack = r.stack;
      CHECK(r.stack == first_stack); /* the same stack id every time (the cache, the trie) */
      merged++;
    } else if (r.size == 3000) {
      CHECK(n >= 3 && frames[0] == -1 && frames[1] == -1 && frames[2] == -1);
      if (n >= 3) CHECK(native[1] - in.eval_lo < in.eval_hi - in.eval_lo);
      plain++;
    }
  }
  CHECKF(st == 0, "%s", obm_capture_error(cap));
  CHECK(merged == 10 && plain == 1);
  obm_capture_close(cap);
}

/* ---- damaged PYFRAME records ---------------------------------------------------------------- */

/* A capture of one definitions block holding payload; returns the reader's first error (""
 * when it read the whole file) in err. */
static void read_made(const uint8_t *payload, size_t n, char *err, size_t err_size) {
  uint8_t *d = calloc(1, OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE + n);
  _obm_cap_header_encode(d, OBM_CAPTURE_FLAG_PYTHON, 0, 1, 4096, 0);
  memcpy(d + OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE, payload, n);
  _obm_cap_block_header_encode(d + OBM_CAP_HEADER_SIZE,
                               d + OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE, (uint32_t)n, 0,
                               0);
  obm_capture_t *cap = obm_capture_open_memory(
      d, OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE + n, "made.cap", err, err_size);
  CHECKF(cap != NULL, "%s", err);
  if (cap) {
    obm_capture_record_t r;
    int st;
    while ((st = obm_capture_next(cap, &r)) > 0) {
    }
    snprintf(err, err_size, "%s", st < 0 ? obm_capture_error(cap) : "");
    if (st == 0) {
      const char *function = NULL, *file = NULL;
      uint32_t line = 0;
      CHECK(obm_capture_nframes(cap) == 2 && obm_capture_nstacks(cap) == 2);
      CHECK(obm_capture_frame_python(cap, 1, &function, &file, &line) == 1);
      CHECK(strcmp(function, "main") == 0 && strcmp(file, "a.py") == 0 && line == 7);
      CHECK(obm_capture_frame_python(cap, 0, NULL, NULL, NULL) == 0);
      CHECK(obm_capture_frame_python(cap, 2, NULL, NULL, NULL) == 0);
    }
    obm_capture_close(cap);
  }
  free(d);
}

static void test_damaged(void) {
  char err[512];
  const size_t at = OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE; /* the first record */
  /* good: PYFRAME 7 "main" "a.py", STACK 0 1 */
  uint8_t good[] = {OBM_CAP_PYFRAME, 7, 4, 'm', 'a', 'i', 'n', 4, 'a', '.', 'p', 'y',
                    OBM_CAP_STACK,   0, 1};
  read_made(good, sizeof good, err, sizeof err);
  CHECKF(err[0] == 0, "%s", err);
  /* a function name of 5000 bytes (over OBM_CAP_PYNAME_MAX) */
  uint8_t *p, big[16] = {OBM_CAP_PYFRAME, 7};
  p = _obm_cap_put_varint(big + 2, 5000);
  read_made(big, (size_t)(p - big) + 4, err, sizeof err);
  char want[128];
  snprintf(want, sizeof want, "made.cap: offset %zu: length 5000 exceeds %d", at,
           OBM_CAP_PYNAME_MAX);
  CHECKF(strstr(err, want) != NULL, "%s", err);
  /* a file name that runs past the block */
  uint8_t past[] = {OBM_CAP_PYFRAME, 7, 1, 'f', 20, 'a', '.', 'p', 'y'};
  read_made(past, sizeof past, err, sizeof err);
  snprintf(want, sizeof want, "made.cap: offset %zu: string runs past the end of its block", at);
  CHECKF(strstr(err, want) != NULL, "%s", err);
  /* a NUL byte in the function name */
  uint8_t nul[] = {OBM_CAP_PYFRAME, 7, 2, 'f', 0, 1, 'x'};
  read_made(nul, sizeof nul, err, sizeof err);
  snprintf(want, sizeof want, "made.cap: offset %zu: Python frame name holds a NUL byte", at);
  CHECKF(strstr(err, want) != NULL, "%s", err);
  /* a PYFRAME in a thread's stream */
  uint8_t *d = calloc(1, 256);
  _obm_cap_header_encode(d, 0, 0, 1, 4096, 0);
  size_t pos = OBM_CAP_HEADER_SIZE;
  uint8_t thread[] = {OBM_CAP_THREAD, 1, 5, 1, 'm'};
  memcpy(d + pos + OBM_CAP_BLOCK_HEADER_SIZE, thread, sizeof thread);
  _obm_cap_block_header_encode(d + pos, d + pos + OBM_CAP_BLOCK_HEADER_SIZE, sizeof thread, 0, 0);
  pos += OBM_CAP_BLOCK_HEADER_SIZE + sizeof thread;
  memcpy(d + pos + OBM_CAP_BLOCK_HEADER_SIZE, good, 12);
  _obm_cap_block_header_encode(d + pos, d + pos + OBM_CAP_BLOCK_HEADER_SIZE, 12, 1, 0);
  size_t record = pos + OBM_CAP_BLOCK_HEADER_SIZE;
  pos += OBM_CAP_BLOCK_HEADER_SIZE + 12;
  obm_capture_t *cap = obm_capture_open_memory(d, pos, "made.cap", err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (cap) {
    obm_capture_record_t r;
    int st;
    while ((st = obm_capture_next(cap, &r)) > 0) {
    }
    snprintf(want, sizeof want, "made.cap: offset %zu: definition record (tag 0x16)", record);
    CHECKF(st < 0 && strstr(obm_capture_error(cap), want), "%s", obm_capture_error(cap));
    obm_capture_close(cap);
  }
  free(d);
}

int main(int argc, char **argv) {
  check_seed_init("test_trace_interp", 0, argv, 0, 1);
  if (argc < 2) {
    fprintf(stderr, "usage: test_trace_interp DIR\n");
    return 2;
  }
  dir = argv[1];
  mkdir(dir, 0755);
  test_alone();
  test_merged();
  test_damaged();
  return check_done();
}
