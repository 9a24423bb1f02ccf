/* fuzz_capture.c — the capture reader against damaged input: no crash, no hang, no leak, and
 * every refusal names an offset.
 *
 * LLVMFuzzerTestOneInput reads a whole input twice (strict, then salvaging), resolving every
 * allocation's stack to the root (parent < id must hold, or the walk would not end) and every
 * table entry.  Built with -DOBM_LIBFUZZER and clang's -fsanitize=fuzzer it is a libFuzzer
 * target (tests/CMakeLists.txt: OBMEM_LIBFUZZER=ON).  Otherwise main() is a deterministic
 * mutation fuzzer: it writes seed captures with the tracer (threads, many stacks, exact,
 * sampled, and with a made-up interpreter's frames: PYFRAME records), then mutates them with
 * a fixed-seed generator (bit flips, interesting bytes, truncation, chunk copies and
 * deletions, random 32-bit words) and, half of the time, repairs the checksums so that the
 * mutation reaches the record decoder.  The mutation sequence is fixed by the seed; the seed
 * captures differ between runs only in their timing records (TIME, SAMPLE).  It runs for a
 * bounded time:
 *   fuzz_capture [SECONDS [SEED]]     (default 10 s, seed 1)
 */
#define _GNU_SOURCE
#include "check.h"
#include "capture/capture_internal.h"
#include "trace/trace_internal.h"

#include <obmem/capture.h>
#include <obmem/trace.h>
#include <pthread.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  obm_capture_t *cap = obm_capture_open_memory(data, size, "fuzz-input", err, sizeof err);
  if (!cap) {
    if (!strstr(err, "offset ") && !strstr(err, "out of memory")) {
      fprintf(stderr, "refusal without an offset: %s\n", err);
      abort();
    }
    return 0;
  }
  for (int pass = 0; pass < 2; pass++) {
    obm_capture_rewind(cap);
    obm_capture_set_salvage(cap, pass);
    obm_capture_record_t r;
    int st;
    while ((st = obm_capture_next(cap, &r)) > 0) {
      if (r.offset >= size) abort();
      if (r.kind == OBM_CAPTURE_ALLOC) {
        uint32_t id = r.stack, parent, frame;
        if (id >= obm_capture_nstacks(cap)) abort();
        while (id != 0) {
          if (obm_capture_stack(cap, id, &parent, &frame) != 0 || parent >= id) abort();
          if (frame == 0 || frame >= obm_capture_nframes(cap)) abort();
          (void)obm_capture_frame_address(cap, frame);
          const char *function, *file;
          uint32_t line;
          if (obm_capture_frame_python(cap, frame, &function, &file, &line) &&
              (strlen(function) > OBM_CAP_PYNAME_MAX || strlen(file) > OBM_CAP_NAME_MAX))
            abort();
          id = parent;
        }
      }
      /* any record's thread, also before the first THREAD record (an empty table) */
      if (strlen(obm_capture_thread_name(cap, r.thread)) > OBM_CAP_NAME_MAX) abort();
      (void)obm_capture_thread_tid(cap, r.thread);
    }
    if (st < 0 && !strstr(obm_capture_error(cap), "offset ")) {
      fprintf(stderr, "error without an offset: %s\n", obm_capture_error(cap));
      abort();
    }
  }
  for (uint32_t i = 0; i < obm_capture_nmodules(cap); i++) {
    obm_capture_module_t m;
    if (obm_capture_module(cap, i, &m) != 0 || strlen(m.path) > OBM_CAP_NAME_MAX ||
        m.build_id_size > OBM_CAP_BUILD_ID_MAX)
      abort();
  }
  obm_capture_close(cap);
  return 0;
}

#ifndef OBM_LIBFUZZER

/* ---- seed captures ------------------------------------------------------------------------ */

__attribute__((noinline)) static void seed_leaf(int depth, uint64_t base, int n) {
  if (depth > 0) {
    seed_leaf(depth - 1, base, n);
    return;
  }
  for (int i = 0; i < n; i++) {
    uint64_t p = base + (uint64_t)i * 48;
    _obm_trace_alloc((void *)(uintptr_t)p, 40 + (size_t)(i % 5) * 8);
    if (i % 3) _obm_trace_free((void *)(uintptr_t)p);
  }
  _obm_trace_alloc((void *)(uintptr_t)(base + 7), 3); /* an unaligned address */
  _obm_trace_free((void *)(uintptr_t)(base + 7));
  _obm_trace_realloc((void *)(uintptr_t)base, (void *)(uintptr_t)(base + (1u << 20)), 5000);
}

static void *seed_thread(void *arg) {
  uint64_t base = (uint64_t)(uintptr_t)arg;
  for (int d = 0; d < 6; d++)
    seed_leaf(d, base + (uint64_t)d * 65536, 40);
  return NULL;
}

static uint8_t *read_all(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  CHECK(f != NULL);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)n + 1);
  CHECK(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  *size = (size_t)n;
  return buf;
}

/* A made-up interpreter for the third seed (PYFRAME records): a stack of up to 4 frames of
 * 3 code objects, changing with every call, named "fK"/"modK.py" (a long name for one). */
static char seed_codes[3][16] __attribute__((aligned(16)));
static __thread unsigned seed_calls;
static int seed_frames(obm_trace_interp_frame_t *out, int max) {
  unsigned c = seed_calls++, n = c % 5;
  if ((int)n > max) n = (unsigned)max;
  for (unsigned i = 0; i < n; i++)
    out[i] = (obm_trace_interp_frame_t){seed_codes[(c + i) % 3], (c / 5 + i) % 7};
  return (int)n;
}
static int seed_names(const void *code, uint32_t offset, obm_trace_interp_names_t *out) {
  static char long_name[300];
  int k = (int)(((const char *)code - seed_codes[0]) / 16);
  memset(long_name, 'x', sizeof long_name);
  out->function = k == 2 ? long_name : k ? "f1" : "f0";
  out->function_len = k == 2 ? sizeof long_name : 2;
  out->file = k ? "mod1.py" : "<frozen mod0>";
  out->file_len = strlen(out->file);
  out->line = offset * 3;
  return 0;
}

static uint8_t *make_seed(const char *path, int sampled, size_t *size) {
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.sample_interval_ms = 1;
  if (sampled == 2) { /* interpreter frames merged with native ones */
    obm_trace_interp_t in = {.frames = seed_frames, .names = seed_names};
    CHECK(obm_trace_set_interpreter(&in) == 0);
    o.stacks = OBM_TRACE_STACKS_FP;
  } else if (sampled) {
    o.mode = OBM_TRACE_SAMPLED;
    o.sample_mean_bytes = 256;
    o.seed = 99;
  }
  CHECK(obm_trace_start(path, &o) == 0);
  for (int i = 0; i < 3; i++) { /* one after the other: the same seed every run */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, seed_thread, (void *)(uintptr_t)((uint64_t)(i + 1) << 32)) == 0);
    pthread_join(t, NULL);
  }
  CHECK(obm_trace_stop() == 0);
  CHECK(obm_trace_set_interpreter(NULL) == 0);
  uint8_t *data = read_all(path, size);
  remove(path);
  return data;
}

/* ---- mutations ---------------------------------------------------------------------------- */

static void repair_checksums(uint8_t *d, size_t size) {
  if (size >= OBM_CAP_HEADER_SIZE) _obm_cap_put_u32(d + 60, _obm_cap_crc32(0, d, 60));
  size_t at = OBM_CAP_HEADER_SIZE;
  while (at + OBM_CAP_BLOCK_HEADER_SIZE <= size) {
    uint32_t n = _obm_cap_get_u32(d + at + 4);
    if (n > OBM_CAP_BLOCK_MAX || at + OBM_CAP_BLOCK_HEADER_SIZE + n > size) break;
    uint32_t crc = _obm_cap_crc32(0, d + at + 12, 12);
    _obm_cap_put_u32(d + at + 8, _obm_cap_crc32(crc, d + at + OBM_CAP_BLOCK_HEADER_SIZE, n));
    at += OBM_CAP_BLOCK_HEADER_SIZE + n;
  }
}

static size_t mutate(uint8_t *d, size_t size, size_t capacity, uint64_t *rng) {
  static const uint8_t interesting[] = {0,    1,    0x7f, 0x80, 0xff, 0x40,
                                        0x3f, 0x88, 0x8c, 0x11, 0x12, 0x16};
  int n = 1 + (int)check_rand_below(rng, 4);
  for (int i = 0; i < n && size > 0; i++) {
    size_t at = check_rand_below(rng, size);
    switch (check_rand_below(rng, 7)) {
    case 0:
      d[at] ^= (uint8_t)(1u << check_rand_below(rng, 8));
      break;
    case 1:
      d[at] = interesting[check_rand_below(rng, sizeof interesting)];
      break;
    case 2:
      size = at;
      break;  /* truncate */
    case 3: { /* copy a chunk over another place */
      size_t from = check_rand_below(rng, size), len = 1 + check_rand_below(rng, 64);
      if (from + len > size) len = size - from;
      if (at + len > size) len = size - at;
      memmove(d + at, d + from, len);
      break;
    }
    case 4: { /* delete a chunk */
      size_t len = 1 + check_rand_below(rng, 32);
      if (at + len > size) len = size - at;
      memmove(d + at, d + at + len, size - at - len);
      size -= len;
      break;
    }
    case 5: { /* insert random bytes */
      size_t len = 1 + check_rand_below(rng, 16);
      if (size + len > capacity) break;
      memmove(d + at + len, d + at, size - at);
      for (size_t k = 0; k < len; k++)
        d[at + k] = (uint8_t)check_rand(rng);
      size += len;
      break;
    }
    default: /* a random 32-bit word (sizes, ids, stream numbers) */
      if (at + 4 <= size)
        _obm_cap_put_u32(d + at, (uint32_t)check_rand(rng) >> (check_rand(rng) & 31));
      break;
    }
  }
  if (check_rand(rng) & 1) repair_checksums(d, size);
  return size;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A capture whose first record (a SAMPLE of stream 0) comes before any THREAD record: its
 * thread is 0, and the thread table does not exist yet (the tracer writes this when its first
 * cycle comes before any thread traced). */
static void test_no_threads(const uint8_t *seed) {
  uint8_t d[OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE + 8] = {0};
  memcpy(d, seed, OBM_CAP_HEADER_SIZE); /* a valid header */
  uint8_t *payload = d + OBM_CAP_HEADER_SIZE + OBM_CAP_BLOCK_HEADER_SIZE;
  payload[0] = OBM_CAP_SAMPLE; /* and six zero varints */
  _obm_cap_block_header_encode(d + OBM_CAP_HEADER_SIZE, payload, 7, 0, 0);
  char err[512];
  obm_capture_t *cap = obm_capture_open_memory(d, sizeof d - 1, "no-threads", err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return;
  obm_capture_record_t r;
  CHECK(obm_capture_next(cap, &r) == 1 && r.kind == OBM_CAPTURE_SAMPLE);
  CHECK(strcmp(obm_capture_thread_name(cap, r.thread), "") == 0);
  CHECK(obm_capture_thread_tid(cap, r.thread) == 0);
  obm_capture_close(cap);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10;
  check_seed_init("fuzz_capture", argc, argv, 2, 1);
  char path[256];
  snprintf(path, sizeof path, "/tmp/obmem-fuzz-seed-%d.cap", (int)getpid());
  size_t sizes[3];
  uint8_t *seeds[3] = {make_seed(path, 0, &sizes[0]), make_seed(path, 1, &sizes[1]),
                       make_seed(path, 2, &sizes[2])};
  for (int i = 0; i < 3; i++) {
    /* the seeds themselves are read whole and without error */
    char err[512];
    obm_capture_t *cap = obm_capture_open_memory(seeds[i], sizes[i], "seed", err, sizeof err);
    CHECKF(cap != NULL, "%s", err);
    obm_capture_record_t r;
    int st;
    uint64_t n = 0;
    while ((st = obm_capture_next(cap, &r)) > 0)
      n++;
    CHECKF(st == 0 && obm_capture_complete(cap), "seed %d: %s", i, obm_capture_error(cap));
    CHECK(n > 100);
    if (i == 2) { /* the interpreter's frames are there */
      uint32_t py = 0;
      for (uint32_t f = 1; f < obm_capture_nframes(cap); f++)
        py += (uint32_t)obm_capture_frame_python(cap, f, NULL, NULL, NULL);
      CHECKF(py == 21, "%u Python frames", py); /* 3 codes x 7 offsets */
    }
    obm_capture_close(cap);
    LLVMFuzzerTestOneInput(seeds[i], sizes[i]);
  }
  test_no_threads(seeds[0]);
  uint64_t rng = check_seed;
  size_t capacity = sizes[0] > sizes[1] ? sizes[0] : sizes[1];
  capacity = (capacity > sizes[2] ? capacity : sizes[2]) + 4096;
  uint8_t *buf = malloc(capacity);
  double start = now_s();
  uint64_t runs = 0;
  while (now_s() - start < seconds) {
    for (int k = 0; k < 64; k++, runs++) {
      int which = (int)(check_rand(&rng) % 3);
      memcpy(buf, seeds[which], sizes[which]);
      size_t size = mutate(buf, sizes[which], capacity, &rng);
      /* a fresh allocation of exactly the input's size, so ASan sees any overread */
      uint8_t *input = malloc(size ? size : 1);
      memcpy(input, buf, size);
      LLVMFuzzerTestOneInput(input, size);
      free(input);
    }
  }
  CHECK(runs > 0);
  printf("fuzz_capture: %llu inputs in %.1f s (seed captures of %zu, %zu and %zu bytes)\n",
         (unsigned long long)runs, now_s() - start, sizes[0], sizes[1], sizes[2]);
  free(buf);
  for (int i = 0; i < 3; i++)
    free(seeds[i]);
  return check_done();
}
#endif
