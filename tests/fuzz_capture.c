/* fuzz_capture.c — the capture reader against damaged input: no crash, no hang, no leak, and
 * every refusal names an offset.
 *
 * LLVMFuzzerTestOneInput reads a whole input twice (strict, then salvaging), resolving every
 * allocation's stack to the root (parent < id must hold, or the walk would not end) and every
 * table entry.  Built with -DOBM_LIBFUZZER and clang's -fsanitize=fuzzer it is a libFuzzer
 * target (tests/CMakeLists.txt: OBMEM_LIBFUZZER=ON).  Otherwise main() is a deterministic
 * mutation fuzzer: it writes seed captures with the tracer (threads, many stacks, exact,
 * sampled, with a made-up interpreter's frames: PYFRAME records, and zstd-compressed), then mutates
 * them with a fixed-seed generator (bit flips, interesting bytes, truncation, chunk copies and
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

/* Seed 0: exact, 1: sampled, 2: with interpreter frames, all with stored blocks (mutations
 * reach the record decoder); 3: exact with zstd-compressed blocks (they reach libzstd's frame
 * checks, and with the checksums repaired the decoder behind them). */
#define NSEEDS 4
static uint8_t *make_seed(const char *path, int sampled, size_t *size) {
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.sample_interval_ms = 1;
  o.compress_level = sampled == 3 ? 1 : 0;
  if (sampled == 3) {
  } else if (sampled == 2) { /* interpreter frames merged with native ones */
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

/* The first block of d whose stream word has `flag` set: its offset, or 0. */
static size_t first_block(const uint8_t *d, size_t size, uint32_t flag) {
  for (size_t at = OBM_CAP_HEADER_SIZE; at + OBM_CAP_BLOCK_HEADER_SIZE <= size;
       at += OBM_CAP_BLOCK_HEADER_SIZE + _obm_cap_get_u32(d + at + 4))
    if ((_obm_cap_get_u32(d + at + 12) & flag) == flag) return at;
  return 0;
}

/* Reads d whole: 0, or -1 with the reader's error in err. */
static int read_whole(const uint8_t *d, size_t size, char *err, size_t err_size) {
  obm_capture_t *cap = obm_capture_open_memory(d, size, "zstd-test", err, err_size);
  if (!cap) return -1;
  obm_capture_record_t r;
  int st;
  while ((st = obm_capture_next(cap, &r)) > 0) {
  }
  snprintf(err, err_size, "%s", obm_capture_error(cap));
  obm_capture_close(cap);
  return st;
}

/* A compressed block whose frame is damaged behind a good checksum is refused, naming the
 * block's offset; so is a compressed block in a version 1 file. */
static void test_zstd_damaged(const uint8_t *seed, size_t size) {
  size_t at = first_block(seed, size, OBM_CAP_STREAM_ZSTD);
  CHECK(at != 0);
  if (!at) return;
  uint8_t *d = malloc(size);
  char err[700], want[64];
  snprintf(want, sizeof want, "offset %zu", at);
  memcpy(d, seed, size);
  uint32_t n = _obm_cap_get_u32(d + at + 4);
  memset(d + at + OBM_CAP_BLOCK_HEADER_SIZE + n / 2, 0xa5, n - n / 2); /* the frame's 2nd half */
  repair_checksums(d, size);
  CHECK(read_whole(d, size, err, sizeof err) < 0);
  CHECKF(strstr(err, want) && strstr(err, "zstd"), "a damaged zstd block: %s", err);
  memcpy(d, seed, size);
  d[8] = 1; /* version 1 */
  repair_checksums(d, size);
  CHECK(read_whole(d, size, err, sizeof err) < 0);
  CHECKF(strstr(err, want) && strstr(err, "version 1"), "zstd block in version 1: %s", err);
  free(d);
}

/* A version 1 capture (address before size in ALLOC and ALLOC_MRU_STACK, coded against
 * last_alloc) and the same events in version 2 (size first, address against the size's
 * latest): both decode to the same events. */
static void test_versions(void) {
  static const uint64_t address[4] = {0x100000, 0x200000, 0x100020, 0x200040};
  static const uint64_t size[4] = {32, 64, 32, 64};
  for (int version = 1; version <= 2; version++) {
    uint8_t d[256] = {0}, *p;
    _obm_cap_header_encode(d, OBM_CAPTURE_FLAG_STACKS, 0, 1, 4096, 0);
    d[8] = (uint8_t)version;
    _obm_cap_put_u32(d + 60, _obm_cap_crc32(0, d, 60));
    size_t at = OBM_CAP_HEADER_SIZE;
    p = d + at + OBM_CAP_BLOCK_HEADER_SIZE; /* stream 0: thread 1, frame 1, stack 1 */
    uint8_t *start = p;
    *p++ = OBM_CAP_THREAD, *p++ = 1, *p++ = 7, *p++ = 1, *p++ = 'm';
    *p++ = OBM_CAP_FRAME, p = _obm_cap_put_varint(p, 0x401000);
    *p++ = OBM_CAP_STACK, *p++ = 0, *p++ = 1;
    _obm_cap_block_header_encode(d + at, start, (uint32_t)(p - start), 0, 0);
    at += OBM_CAP_BLOCK_HEADER_SIZE + (size_t)(p - start);
    p = start = d + at + OBM_CAP_BLOCK_HEADER_SIZE; /* stream 1: four allocations, stack 1 */
    obm_cap_delta_t delta = {0};
    for (int i = 0; i < 4; i++) {
      uint64_t units = address[i] >> OBM_CAP_ADDRESS_SHIFT;
      uint64_t base = version == 1 ? delta.last_alloc : _obm_cap_alloc_base(&delta, size[i]);
      uint64_t zz = _obm_cap_zigzag((int64_t)(units - base));
      int pair = _obm_cap_mru_find(&delta, size[i], 1);
      if (i == 0) { /* a new pair: ALLOC */
        *p++ = OBM_CAP_ALLOC;
        if (version == 1) p = _obm_cap_put_varint(p, zz);
        *p++ = (uint8_t)size[i], *p++ = 1;
        if (version == 2) p = _obm_cap_put_varint(p, zz);
      } else if (pair < 0) { /* stack 1 with a new size: ALLOC_MRU_STACK */
        *p++ = OBM_CAP_ALLOC_MRU_STACK + 0;
        if (version == 1) p = _obm_cap_put_varint(p, zz);
        *p++ = (uint8_t)size[i];
        if (version == 2) p = _obm_cap_put_varint(p, zz);
      } else { /* pair 1 (the other size), 1 block on: ALLOC_MRU */
        *p++ = (uint8_t)(OBM_CAP_TAG_ALLOC_MRU | (unsigned)pair << 4 | 1);
      }
      _obm_cap_note_alloc(&delta, pair, units, size[i], 1);
    }
    _obm_cap_block_header_encode(d + at, start, (uint32_t)(p - start), 1, 0);
    at += OBM_CAP_BLOCK_HEADER_SIZE + (size_t)(p - start);
    char err[512];
    obm_capture_t *cap = obm_capture_open_memory(d, at, "versions", err, sizeof err);
    CHECKF(cap != NULL, "version %d: %s", version, err);
    if (!cap) continue;
    obm_capture_record_t r;
    int n = 0, st;
    while ((st = obm_capture_next(cap, &r)) > 0) {
      if (r.kind != OBM_CAPTURE_ALLOC) continue; /* the THREAD record */
      CHECKF(n < 4, "version %d: more than 4 allocations", version);
      if (n >= 4) break;
      CHECKF(r.kind == OBM_CAPTURE_ALLOC && r.address == address[n] && r.size == size[n] &&
                 r.stack == 1,
             "version %d, event %d: kind %d address %#llx size %llu stack %u", version, n,
             (int)r.kind, (unsigned long long)r.address, (unsigned long long)r.size, r.stack);
      n++;
    }
    CHECKF(st == 0 && n == 4, "version %d: %d events, %s", version, n, obm_capture_error(cap));
    obm_capture_close(cap);
  }
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10;
  check_seed_init("fuzz_capture", argc, argv, 2, 1);
  char path[256];
  snprintf(path, sizeof path, "/tmp/obmem-fuzz-seed-%d.cap", (int)getpid());
  size_t sizes[NSEEDS];
  uint8_t *seeds[NSEEDS];
  for (int i = 0; i < NSEEDS; i++)
    seeds[i] = make_seed(path, i, &sizes[i]);
  for (int i = 0; i < NSEEDS; i++) {
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
    int zipped = 0; /* only seed 3 has compressed blocks (when libzstd is there) */
    for (size_t at = OBM_CAP_HEADER_SIZE; at + OBM_CAP_BLOCK_HEADER_SIZE <= sizes[i];
         at += OBM_CAP_BLOCK_HEADER_SIZE + _obm_cap_get_u32(seeds[i] + at + 4))
      zipped |= (_obm_cap_get_u32(seeds[i] + at + 12) & OBM_CAP_STREAM_ZSTD) != 0;
    CHECKF(zipped == (i == 3 && !_obm_cap_zstd_missing()), "seed %d: compressed blocks: %d", i,
           zipped);
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
  test_versions();
  if (!_obm_cap_zstd_missing()) test_zstd_damaged(seeds[3], sizes[3]);
  uint64_t rng = check_seed;
  size_t capacity = 0;
  for (int i = 0; i < NSEEDS; i++)
    capacity = sizes[i] > capacity ? sizes[i] : capacity;
  capacity += 4096;
  uint8_t *buf = malloc(capacity);
  double start = now_s();
  uint64_t runs = 0;
  while (now_s() - start < seconds) {
    for (int k = 0; k < 64; k++, runs++) {
      int which = (int)(check_rand(&rng) % NSEEDS);
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
  printf("fuzz_capture: %llu inputs in %.1f s (seed captures of %zu, %zu, %zu and %zu bytes)\n",
         (unsigned long long)runs, now_s() - start, sizes[0], sizes[1], sizes[2], sizes[3]);
  free(buf);
  for (int i = 0; i < NSEEDS; i++)
    free(seeds[i]);
  return check_done();
}
#endif
