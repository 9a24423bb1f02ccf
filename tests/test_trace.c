/* test_trace.c — the tracer end to end: hooks -> capture -> `obmem report --json`.
 *
 * The program drives the tracer through the allocator's hook API (as src/alloc will), with
 * addresses it makes up, from functions marked noinline whose call lines it knows, and checks
 * what `obmem report --json` says about the capture: exact byte counts and allocation counts,
 * a leak of exactly K x S bytes at leak_site and its line, the peak made by peak_site,
 * temporary allocations, named threads.  Modes (argv[1]):
 *   report OBMEM DIR     the scenario above (several threads)
 *   kill OBMEM DIR       a child traces, flushes, is SIGKILLed; its capture is readable up to
 *                        the flush; then truncated, damaged and foreign files are refused
 *                        (exit 2, the offset named) and --salvage reads a truncated one
 *   sampled OBMEM DIR    a large synthetic run traced exact and sampled: the sampled estimate
 *                        of the top site's bytes is within 5 % of the exact count
 *   bench DIR [N]        real obm_malloc/obm_free traffic with hooks: bytes per event and ns
 *                        per event, asserting <= 4 bytes per event
 *   stacks DIR           a recursive tree builder (a stack per call path, more than the
 *                        per-thread stack cache holds), built twice: every node's recorded
 *                        stack is its parent's with one frame more (the left or the right
 *                        call), and the second build gets the same ids
 * Compiled with -g -fno-omit-frame-pointer -fno-optimize-sibling-calls (tests/CMakeLists.txt).
 */
#define _GNU_SOURCE
#include "check.h"
#include "trace/trace_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <obmem.h>
#include <obmem/capture.h>
#include <obmem/trace.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define NOINLINE __attribute__((noinline, noclone))

/* The allocator's recording function (src/alloc/traced.c) that calls the hook: the walk starts
 * at the hook's caller's frame, so the first frame recorded is this function's caller. */
NOINLINE static void record_alloc(void *p, size_t size) {
  _obm_trace_alloc(p, size);
  __asm__ volatile("" ::: "memory"); /* a call, not a jump: this frame stays */
}

/* The hook call and the line it records, on one line whatever clang-format does. */
#define TRACED_ALLOC(line_var, p, size)                                                            \
  do {                                                                                             \
    record_alloc(p, size);                                                                         \
    __atomic_store_n(&line_var, __LINE__, __ATOMIC_RELAXED);                                       \
  } while (0)

static const char *obmem_bin, *dir;

/* ---- made-up addresses: each thread its own region, 16-byte aligned, bumped --------------- */
static __thread uint64_t next_address;
static void *fake(size_t size, int region) {
  if (!next_address) next_address = ((uint64_t)region + 1) << 36;
  uint64_t p = next_address;
  next_address += (size + 15) & ~(uint64_t)15;
  return (void *)(uintptr_t)p;
}

/* ---- running `obmem` and reading its JSON ------------------------------------------------- */

static char *run_obmem(const char *args, int *status) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s %s 2>&1", obmem_bin, args);
  FILE *f = popen(cmd, "r");
  CHECK(f != NULL);
  size_t cap = 1 << 16, n = 0;
  char *out = malloc(cap);
  size_t r;
  while ((r = fread(out + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (n + 1 == cap) out = realloc(out, cap *= 2);
  }
  out[n] = 0;
  int st = pclose(f);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  return out;
}

static double json_number(const char *json, const char *key) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *p = strstr(json, pat);
  CHECKF(p != NULL, "no \"%s\" in:\n%s", key, json);
  return strtod(p + strlen(pat), NULL);
}

/* The n-th row (0-based) of a site table: the text of that {...} line. */
static const char *json_row(const char *json, const char *table, int n, char *row, size_t size) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\": [\n", table);
  const char *p = strstr(json, pat);
  CHECKF(p != NULL, "no table %s in:\n%s", table, json);
  p += strlen(pat);
  for (int i = 0; i < n; i++) {
    p = strchr(p, '\n');
    CHECK(p != NULL);
    p++;
  }
  CHECKF(*p == '{', "table %s has no row %d:\n%s", table, n, json);
  const char *end = strchr(p, '}');
  size_t len = (size_t)(end - p + 1) < size - 1 ? (size_t)(end - p + 1) : size - 1;
  memcpy(row, p, len);
  row[len] = 0;
  return row;
}

/* Checks row 0 of a table: the function, its line in `file` (when line > 0), the bytes and,
 * when count >= 0, the count. */
static void check_row_in(const char *json, const char *table, const char *file,
                         const char *function, int line, double bytes, double count) {
  char row[2048], pat[256];
  json_row(json, table, 0, row, sizeof row);
  snprintf(pat, sizeof pat, "\"function\": \"%s\"", function);
  CHECKF(strstr(row, pat) != NULL, "%s: top row is not %s: %s", table, function, row);
  if (line > 0) {
    snprintf(pat, sizeof pat, "\"line\": %d,", line);
    CHECKF(strstr(row, pat) != NULL, "%s: expected line %d: %s", table, line, row);
    CHECKF(strstr(row, file) != NULL, "%s: expected %s: %s", table, file, row);
  }
  CHECKF(json_number(row, "bytes") == bytes, "%s: bytes %.0f, expected %.0f: %s", table,
         json_number(row, "bytes"), bytes, row);
  if (count >= 0)
    CHECKF(json_number(row, "count") == count, "%s: count %.0f, expected %.0f: %s", table,
           json_number(row, "count"), count, row);
}

static void check_row(const char *json, const char *table, const char *function, int line,
                      double bytes, double count) {
  check_row_in(json, table, "test_trace.c", function, line, bytes, count);
}

/* ---- the scenario -------------------------------------------------------------------------- */

#define K_LEAKS   7
#define S_LEAK    1000
#define N_PEAK    50
#define S_PEAK    100000
#define N_TEMP    1000
#define S_TEMP    64
#define N_WORKERS 3
#define N_WORKER  2000
#define S_WORKER  48

static int leak_line, peak_line, temp_line, worker_line;
static void *peak_blocks[N_PEAK];

NOINLINE static void leak_site(void) {
  for (int i = 0; i < K_LEAKS; i++) {
    TRACED_ALLOC(leak_line, fake(S_LEAK, 0), S_LEAK);
  }
}

NOINLINE static void peak_site(void) {
  for (int i = 0; i < N_PEAK; i++) {
    peak_blocks[i] = fake(S_PEAK, 0);
    TRACED_ALLOC(peak_line, peak_blocks[i], S_PEAK);
  }
}

NOINLINE static void release_peak(void) {
  for (int i = 0; i < N_PEAK; i++)
    _obm_trace_free(peak_blocks[i]);
}

NOINLINE static void temp_site(void) {
  for (int i = 0; i < N_TEMP; i++) {
    void *p = fake(S_TEMP, 0);
    TRACED_ALLOC(temp_line, p, S_TEMP);
    _obm_trace_free(p);
  }
}

NOINLINE static void worker_site(int region, void **blocks) {
  for (int i = 0; i < N_WORKER; i++) {
    blocks[i] = fake(S_WORKER, region);
    TRACED_ALLOC(worker_line, blocks[i], S_WORKER);
  }
}

static void *worker(void *arg) {
  int region = (int)(intptr_t)arg;
  char name[16];
  snprintf(name, sizeof name, "worker-%d", region);
  pthread_setname_np(pthread_self(), name);
  void **blocks = malloc(N_WORKER * sizeof *blocks);
  worker_site(region, blocks);
  for (int i = 0; i < N_WORKER; i++)
    _obm_trace_free(blocks[i]);
  free(blocks);
  return NULL;
}

static void scenario(void) {
  pthread_t t[N_WORKERS];
  for (int i = 0; i < N_WORKERS; i++)
    CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)(i + 1)) == 0);
  for (int i = 0; i < N_WORKERS; i++)
    pthread_join(t[i], NULL);
  leak_site();
  temp_site();
  peak_site();
  release_peak();
}

static void test_report(void) {
  char path[2048], args[8192];
  snprintf(path, sizeof path, "%s/trace-report.cap", dir);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.sample_interval_ms = 5;
  CHECK(obm_trace_start(path, &o) == 0);
  CHECK(obm_trace_start(path, &o) == EBUSY);
  CHECK(obm_trace_active());
  scenario();
  obm_trace_stats_t st;
  CHECK(obm_trace_stop() == 0);
  CHECK(obm_trace_stop() == EINVAL);
  obm_trace_stats_get(&st);
  uint64_t nevents = K_LEAKS + 2 * N_PEAK + 2 * N_TEMP + 2 * N_WORKERS * N_WORKER;
  CHECKF(st.nevents == nevents, "%llu events, expected %llu", (unsigned long long)st.nevents,
         (unsigned long long)nevents);
  CHECK(st.nlost == 0);
  printf("report scenario: %llu events, %llu bytes: %.2f bytes per event (%llu stacks)\n",
         (unsigned long long)st.nevents, (unsigned long long)st.bytes_written,
         (double)st.bytes_written / (double)st.nevents, (unsigned long long)st.nstacks);

  /* the reader directly: every event, named threads */
  char err[1024];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  obm_capture_record_t rec;
  uint64_t nalloc = 0, nfree = 0, nsample = 0;
  int r, named[N_WORKERS + 1] = {0};
  while ((r = obm_capture_next(cap, &rec)) > 0) {
    nalloc += rec.kind == OBM_CAPTURE_ALLOC;
    nfree += rec.kind == OBM_CAPTURE_FREE;
    nsample += rec.kind == OBM_CAPTURE_SAMPLE;
    if (rec.kind == OBM_CAPTURE_END) CHECK(rec.nevents == nevents);
    const char *name = obm_capture_thread_name(cap, rec.thread);
    /* slots of exited threads are reused: a thread's name is read when its THREAD comes */
    if (rec.kind == OBM_CAPTURE_THREAD && strncmp(name, "worker-", 7) == 0)
      named[atoi(name + 7) % (N_WORKERS + 1)] = 1;
  }
  CHECKF(r == 0, "%s", obm_capture_error(cap));
  CHECK(obm_capture_complete(cap));
  CHECK(nalloc == K_LEAKS + N_PEAK + N_TEMP + N_WORKERS * N_WORKER);
  CHECK(nfree == N_PEAK + N_TEMP + N_WORKERS * N_WORKER);
  CHECK(nsample >= 1);
  for (int i = 1; i <= N_WORKERS; i++)
    CHECKF(named[i], "no THREAD record named worker-%d", i);
  CHECK(obm_capture_nmodules(cap) >= 1);
  obm_capture_close(cap);

  int status;
  snprintf(args, sizeof args, "report --json %s", path);
  char *json = run_obmem(args, &status);
  CHECKF(status == 0, "obmem report exited %d:\n%s", status, json);
  double total =
      K_LEAKS * S_LEAK + N_PEAK * S_PEAK + N_TEMP * S_TEMP + N_WORKERS * N_WORKER * S_WORKER;
  CHECK(json_number(json, "total_bytes") == total);
  CHECK(json_number(json, "allocations") == nalloc);
  CHECK(json_number(json, "frees") == nfree);
  CHECK(json_number(json, "leaked_bytes") == K_LEAKS * S_LEAK);
  CHECK(json_number(json, "leaked_blocks") == K_LEAKS);
  CHECK(json_number(json, "peak_bytes") == K_LEAKS * S_LEAK + N_PEAK * S_PEAK);
  CHECK(json_number(json, "temporary_allocations") == N_TEMP);
  CHECK(json_number(json, "temporary_bytes") == N_TEMP * S_TEMP);
  CHECK(strstr(json, "\"complete\": true") != NULL);
  check_row(json, "leaks", "leak_site", leak_line, K_LEAKS * S_LEAK, K_LEAKS);
  check_row(json, "sites_at_peak", "peak_site", peak_line, N_PEAK * S_PEAK, N_PEAK);
  check_row(json, "sites_by_total", "peak_site", peak_line, N_PEAK * S_PEAK, N_PEAK);
  check_row(json, "sites_by_count", "worker_site", worker_line, N_WORKERS * N_WORKER * S_WORKER,
            N_WORKERS * N_WORKER);
  check_row(json, "temporary", "temp_site", temp_line, N_TEMP * S_TEMP, N_TEMP);
  free(json);

  /* the text report and diff against itself run and name the sites */
  snprintf(args, sizeof args, "report --no-progress %s", path);
  char *text = run_obmem(args, &status);
  CHECKF(status == 0 && strstr(text, "leak_site") && strstr(text, "peak:"), "%s", text);
  free(text);
  snprintf(args, sizeof args, "diff --json %s %s", path, path);
  text = run_obmem(args, &status);
  CHECKF(status == 0 && strstr(text, "\"function\": \"peak_site\""), "%s", text);
  free(text);
  /* every command has --help; unknown options are named */
  const char *helps[] = {"--help", "report --help", "diff --help", "run --help", "exec --help"};
  for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
    text = run_obmem(helps[i], &status);
    CHECKF(status == 0 && strstr(text, "usage: obmem"), "%s: %s", helps[i], text);
    free(text);
  }
  text = run_obmem("run --help", &status);
  CHECK(strstr(text, "OBMEM_TRACE") != NULL && strstr(text, "--max-leak") != NULL);
  free(text);
  const char *bad[] = {"report --frobnicate x.cap", "diff --nope a b", "run --what -- true",
                       "exec --zzz -- true",        "launch",          "report --top 0 x.cap"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    text = run_obmem(bad[i], &status);
    const char *word = strchr(bad[i], ' ') ? strchr(bad[i], ' ') + 1 : bad[i];
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(word, " "), word);
    CHECKF(status == 2 && strstr(text, name), "'%s' exited %d: %s", bad[i], status, text);
    free(text);
  }
  /* a second session in the same process starts from fresh tables */
  CHECK(obm_trace_start(path, &o) == 0);
  leak_site();
  CHECK(obm_trace_stop() == 0);
  snprintf(args, sizeof args, "report --json %s", path);
  json = run_obmem(args, &status);
  CHECKF(status == 0, "%s", json);
  CHECK(json_number(json, "allocations") == K_LEAKS);
  check_row(json, "leaks", "leak_site", leak_line, K_LEAKS * S_LEAK, K_LEAKS);
  free(json);
}

/* ---- SIGKILL, and files the reader must refuse ---------------------------------------------- */

#define K_KILLED 25
static int killed_line;

NOINLINE static void killed_site(void) {
  for (int i = 0; i < K_KILLED; i++) {
    TRACED_ALLOC(killed_line, fake(4096, 0), 4096);
  }
}

static size_t file_size(const char *path) {
  struct stat sb;
  CHECK(stat(path, &sb) == 0);
  return (size_t)sb.st_size;
}

static void copy_with(const char *from, const char *to, size_t length, long flip_at) {
  int in = open(from, O_RDONLY);
  CHECK(in >= 0);
  char *buf = malloc(length + 1);
  CHECK(read(in, buf, length) == (ssize_t)length);
  close(in);
  if (flip_at >= 0) buf[flip_at] ^= 0x20;
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(out >= 0 && write(out, buf, length) == (ssize_t)length);
  close(out);
  free(buf);
}

static void expect_refused(const char *path, const char *what, const char *offset) {
  char args[8192];
  int status;
  snprintf(args, sizeof args, "report %s", path);
  char *text = run_obmem(args, &status);
  CHECKF(status == 2, "obmem report of a %s file exited %d: %s", what, status, text);
  CHECKF(strstr(text, path) != NULL, "the message does not name the file: %s", text);
  CHECKF(strstr(text, offset) != NULL, "the message for a %s file does not say '%s': %s", what,
         offset, text);
  CHECKF(strstr(text, what) != NULL, "the message does not say '%s': %s", what, text);
  free(text);
}

static void test_kill(void) {
  char path[2048], bad[2100], args[8192];
  snprintf(path, sizeof path, "%s/trace-kill.cap", dir);
  int fds[2];
  CHECK(pipe(fds) == 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    obm_trace_options_t o;
    obm_trace_options_init(&o);
    o.sample_interval_ms = 0; /* nothing is written after the flush but what we ask */
    if (obm_trace_start(path, &o) != 0) _exit(3);
    killed_site();
    if (obm_trace_flush() != 0) _exit(4);
    for (int i = 0; i < 100; i++)
      record_alloc(fake(32, 0), 32); /* lost with the kill */
    CHECK(write(fds[1], "x", 1) == 1);
    for (;;)
      pause();
  }
  char c;
  CHECK(read(fds[0], &c, 1) == 1);
  /* a second process given the same path leaves the capture being written alone */
  int busy = obm_trace_start(path, NULL);
  CHECKF(busy == EWOULDBLOCK, "a second obm_trace_start on %s returned %d, not EWOULDBLOCK", path,
         busy);
  if (busy == 0) obm_trace_stop();
  CHECK(kill(pid, SIGKILL) == 0);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
  snprintf(args, sizeof args, "report --json %s", path);
  char *json = run_obmem(args, &status);
  CHECKF(status == 0, "report of the killed program's capture exited %d: %s", status, json);
  CHECK(strstr(json, "\"complete\": false") != NULL);
  CHECK(strstr(json, "without an END record") != NULL);
  CHECK(json_number(json, "allocations") == K_KILLED);
  check_row(json, "leaks", "killed_site", killed_line, K_KILLED * 4096, K_KILLED);
  free(json);

  /* truncated inside the last block: refused with the offset, read with --salvage */
  size_t size = file_size(path);
  snprintf(bad, sizeof bad, "%s/trace-truncated.cap", dir);
  copy_with(path, bad, size - 5, -1);
  expect_refused(bad, "truncated", "offset ");
  snprintf(args, sizeof args, "report --json --salvage %s", bad);
  json = run_obmem(args, &status);
  CHECKF(status == 0 && strstr(json, "incomplete block"), "--salvage: %d %s", status, json);
  free(json);
  /* a flipped byte in the last block's payload */
  snprintf(bad, sizeof bad, "%s/trace-damaged.cap", dir);
  copy_with(path, bad, size, (long)size - 3);
  expect_refused(bad, "checksum mismatch", "offset ");
  /* a damaged header, a damaged block header, another version */
  copy_with(path, bad, size, 20);
  expect_refused(bad, "header checksum", "offset 60");
  copy_with(path, bad, size, 64);
  expect_refused(bad, "not a block", "offset 64");
  copy_with(path, bad, size, 8);
  expect_refused(bad, "version", "offset 8");
  /* truncated headers, a foreign file, an empty one, a missing one */
  copy_with(path, bad, 40, -1);
  expect_refused(bad, "truncated", "offset 40");
  int fd = open(bad, O_WRONLY | O_TRUNC);
  CHECK(fd >= 0 && write(fd,
                         "#!/bin/sh\necho this is not a capture at all, no no no no\n"
                         "exit 0\n",
                         64) == 64);
  close(fd);
  expect_refused(bad, "not an obmem capture", "offset 0");
  fd = open(bad, O_WRONLY | O_TRUNC);
  close(fd);
  expect_refused(bad, "empty file", "offset 0");
  snprintf(bad, sizeof bad, "%s/no-such-capture.cap", dir);
  snprintf(args, sizeof args, "report %s", bad);
  char *text = run_obmem(args, &status);
  CHECKF(status == 2 && strstr(text, bad) && strstr(text, "No such file"), "%s", text);
  free(text);
}

/* ---- sampled against exact ------------------------------------------------------------------ */

#define N_BIG 400000

/* The allocator decides what is recorded (every call in exact mode, a countdown's worth in
 * sampled mode): real obm_malloc traffic, one thread, so the draws depend only on the seed. */
NOINLINE static void big_site(uint64_t *rng) {
  for (int i = 0; i < N_BIG; i++)
    obm_free(obm_malloc(16 + check_rand_below(rng, 2048)));
}

NOINLINE static void small_site(uint64_t *rng) {
  for (int i = 0; i < N_BIG / 4; i++)
    obm_free(obm_malloc(16 + check_rand_below(rng, 512)));
}

/* Growing buffers, all live at the end (the peak): each grows by reallocs of a few bytes, as
 * a string builder does, to 16..272 KiB.  Returns the bytes live at the end. */
#define N_GROWN 160
NOINLINE static size_t grow_site(uint64_t *rng, void **bufs) {
  size_t total = 0;
  for (int i = 0; i < N_GROWN; i++) {
    size_t target = 16 * 1024 + check_rand_below(rng, 256 * 1024), size = 0;
    bufs[i] = NULL;
    while (size < target) {
      size += 1 + check_rand_below(rng, 256);
      bufs[i] = obm_realloc(bufs[i], size);
    }
    total += size;
  }
  return total;
}

static double peak_bytes(const char *path) {
  char args[8192];
  int status;
  snprintf(args, sizeof args, "report --json %s", path);
  char *json = run_obmem(args, &status);
  CHECKF(status == 0, "%s", json);
  double peak = json_number(json, "peak_bytes");
  free(json);
  return peak;
}

static double top_total(const char *path, char *function, size_t size) {
  char args[8192], row[2048];
  int status;
  snprintf(args, sizeof args, "report --json %s", path);
  char *json = run_obmem(args, &status);
  CHECKF(status == 0, "%s", json);
  json_row(json, "sites_by_total", 0, row, sizeof row);
  const char *f = strstr(row, "\"function\": \"") + 13;
  snprintf(function, size, "%.*s", (int)strcspn(f, "\""), f);
  double bytes = json_number(row, "bytes");
  free(json);
  return bytes;
}

/* Starts tracing in exact (mode 0) or sampled (mode 1, mean 64 KiB, a fixed seed) mode into
 * the path of that mode; the options in *o. */
static void start_mode(int mode, const char *exact_path, const char *sampled_path,
                       obm_trace_options_t *o) {
  obm_trace_options_init(o);
  o->mode = mode ? OBM_TRACE_SAMPLED : OBM_TRACE_EXACT;
  o->sample_mean_bytes = 64 * 1024;
  o->seed = 12345;
  CHECK(obm_trace_start(mode ? sampled_path : exact_path, o) == 0);
}

static void test_sampled(void) {
  char exact_path[2048], sampled_path[2048], f1[256], f2[256];
  snprintf(exact_path, sizeof exact_path, "%s/trace-exact.cap", dir);
  snprintf(sampled_path, sizeof sampled_path, "%s/trace-sampled.cap", dir);
  obm_trace_options_t o;
  for (int mode = 0; mode < 2; mode++) {
    uint64_t rng = 42;
    start_mode(mode, exact_path, sampled_path, &o);
    big_site(&rng);
    small_site(&rng);
    CHECK(obm_trace_stop() == 0);
  }
  double exact = top_total(exact_path, f1, sizeof f1);
  double sampled = top_total(sampled_path, f2, sizeof f2);
  CHECKF(strcmp(f1, "big_site") == 0 && strcmp(f2, "big_site") == 0, "%s %s", f1, f2);
  double error = sampled / exact - 1;
  printf("sampled (mean 64 KiB) estimate of big_site: %.0f vs exact %.0f bytes: %+.2f %%; "
         "capture %zu vs %zu bytes\n",
         sampled, exact, 100 * error, file_size(sampled_path), file_size(exact_path));
  CHECKF(error < 0.05 && error > -0.05, "sampled estimate off by %.2f %% (sampling seed %llu)",
         100 * error, (unsigned long long)o.seed);

  /* reallocs: a buffer grown by many small reallocs is sampled about as often as one malloc
   * of its final size, so the peak estimate holds (counting each realloc as an allocation
   * sampled nearly every buffer and recorded all its later reallocs) */
  void **bufs = calloc(N_GROWN, sizeof *bufs);
  double peaks[2];
  size_t live = 0;
  for (int mode = 0; mode < 2; mode++) {
    uint64_t rng = 7;
    start_mode(mode, exact_path, sampled_path, &o);
    live = grow_site(&rng, bufs);
    CHECK(obm_trace_stop() == 0);
    for (int i = 0; i < N_GROWN; i++)
      obm_free(bufs[i]);
    peaks[mode] = peak_bytes(mode ? sampled_path : exact_path);
  }
  free(bufs);
  error = peaks[1] / peaks[0] - 1;
  printf("sampled (mean 64 KiB) peak of %d grown buffers: %.0f vs exact %.0f bytes (live %zu): "
         "%+.2f %%; capture %zu vs %zu bytes\n",
         N_GROWN, peaks[1], peaks[0], live, 100 * error, file_size(sampled_path),
         file_size(exact_path));
  CHECKF(peaks[0] >= (double)live && peaks[0] < (double)live * 1.01, "exact peak %.0f, live %zu",
         peaks[0], live);
  CHECKF(error < 0.1 && error > -0.1, "sampled peak off by %.2f %% (sampling seed %llu)",
         100 * error, (unsigned long long)o.seed);
  CHECK(file_size(sampled_path) * 20 < file_size(exact_path));
}

/* ---- bytes per event on real allocator traffic ---------------------------------------------- */

/* Four call sites for the bench, so stacks vary as in a program (the allocator records). */
NOINLINE static void *bench_alloc0(size_t size) {
  return obm_malloc(size);
}
NOINLINE static void *bench_alloc1(size_t size) {
  return obm_malloc(size);
}
NOINLINE static void *bench_alloc2(size_t size) {
  return obm_malloc(size);
}
NOINLINE static void *bench_alloc3(size_t size) {
  return obm_malloc(size);
}
static void *(*const bench_sites[4])(size_t) = {bench_alloc0, bench_alloc1, bench_alloc2,
                                                bench_alloc3};

static void bench_free(void *p) {
  obm_free(p);
}

/* random: every operation picks one of 4096 slots at random (allocates if empty, frees if
 * not), sizes uniform over 8..208 and 1 in 8 over 512..8704 — the worst case for delta coding.
 * mixed: what allocation-heavy programs do — per site a few sizes; 60 % of blocks die young
 * (a LIFO of 8), 35 % live a while (a FIFO of 1024), 5 % long (random slots). */
static void bench_workload(int mixed, long n, uint64_t *rng, void **slots, void **lifo,
                           void **fifo) {
  static const size_t site_sizes[4][3] = {
      {24, 24, 40}, {64, 64, 96}, {32, 48, 48}, {200, 512, 4000}};
  size_t nlifo = 0, fifo_head = 0;
  for (long i = 0; i < n; i++) {
    uint64_t r = check_rand(rng);
    if (!mixed) {
      size_t k = r % 4096;
      if (slots[k]) {
        bench_free(slots[k]);
        slots[k] = NULL;
      } else {
        size_t size = ((r >> 12) & 7) == 0 ? 512 + (r >> 16) % 8192 : 8 + (r >> 16) % 200;
        slots[k] = bench_sites[(r >> 40) & 3](size);
      }
      continue;
    }
    unsigned site = (unsigned)(r >> 8) & 3, pick = (unsigned)((r >> 10) % 3);
    void *p = bench_sites[site](site_sizes[site][pick]);
    unsigned kind = (unsigned)((r >> 16) % 100);
    if (kind < 60) {
      if (nlifo == 8) bench_free(lifo[--nlifo]);
      lifo[nlifo++] = p;
      if ((r >> 24) & 1) bench_free(lifo[--nlifo]);
    } else if (kind < 95) {
      if (fifo[fifo_head]) bench_free(fifo[fifo_head]);
      fifo[fifo_head] = p;
      fifo_head = (fifo_head + 1) % 1024;
    } else {
      size_t k = (r >> 32) % 4096;
      if (slots[k]) bench_free(slots[k]);
      slots[k] = p;
    }
  }
  for (size_t k = 0; k < 4096; k++)
    if (slots[k]) bench_free(slots[k]), slots[k] = NULL;
  for (size_t k = 0; k < 1024; k++)
    if (fifo[k]) bench_free(fifo[k]), fifo[k] = NULL;
  while (nlifo)
    bench_free(lifo[--nlifo]);
}

static void test_bench(long n) {
  char path[2048];
  void **slots = calloc(4096, sizeof *slots), **fifo = calloc(1024, sizeof *fifo), *lifo[8];
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  if (getenv("TRACE_BENCH_STACKS"))
    o.stacks = (obm_trace_stacks_t)atoi(getenv("TRACE_BENCH_STACKS"));
  for (int mixed = 0; mixed < 2; mixed++) {
    snprintf(path, sizeof path, "%s/trace-bench-%s.cap", dir, mixed ? "mixed" : "random");
    double times[2];
    obm_trace_stats_t st = {0};
    for (int traced = 0; traced < 2; traced++) {
      uint64_t rng = 7;
      if (traced) CHECK(obm_trace_start(path, &o) == 0);
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      bench_workload(mixed, n, &rng, slots, lifo, fifo);
      clock_gettime(CLOCK_MONOTONIC, &b);
      times[traced] = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
      if (traced) {
        CHECK(obm_trace_stop() == 0);
        obm_trace_stats_get(&st);
      }
    }
    double per = (double)st.bytes_written / (double)st.nevents;
    printf("bench %s: %llu events, %.2f bytes per event; %.1f ns per event untraced, %.1f "
           "traced (+%.1f ns)\n",
           mixed ? "mixed" : "random", (unsigned long long)st.nevents, per,
           times[0] / (double)st.nevents, times[1] / (double)st.nevents,
           (times[1] - times[0]) / (double)st.nevents);
    if (mixed) CHECKF(per <= 4.0, "%.2f bytes per event", per);
    if (getenv("TRACE_BENCH_REPORT") && obmem_bin) {
      char args[8192];
      int status;
      snprintf(args, sizeof args, "report --no-progress %s > /dev/null", path);
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      free(run_obmem(args, &status));
      clock_gettime(CLOCK_MONOTONIC, &b);
      double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
      printf("obmem report: %.2f s for %llu events (%.0f ns per event)\n", s,
             (unsigned long long)st.nevents, s * 1e9 / (double)st.nevents);
    }
  }
  free(slots);
  free(fifo);
}

/* ---- stacks: a call path per node ------------------------------------------------------------ */

#define TREE_DEPTH 10 /* 2047 nodes, each its own stack */
#define TREE_NODES ((1u << (TREE_DEPTH + 1)) - 1)

/* Node i (heap numbering: root 1, children 2i and 2i + 1) is allocated with size i + offset;
 * its children are made from two different call sites. */
NOINLINE static void tree_node(uint32_t i, uint32_t depth, size_t offset, void **blocks) {
  blocks[i] = obm_malloc(i + offset);
  if (depth == TREE_DEPTH) return;
  tree_node(2 * i, depth + 1, offset, blocks);
  tree_node(2 * i + 1, depth + 1, offset, blocks);
}

/* One build of the tree and its frees, from one call site whatever the loop around it. */
NOINLINE static void tree_build(size_t offset, void **blocks) {
  tree_node(1, 0, offset, blocks);
  for (uint32_t i = 1; i <= TREE_NODES; i++)
    obm_free(blocks[i]);
}

/* The frames of a stack, innermost first; the count. */
static size_t stack_frames(obm_capture_t *cap, uint32_t id, uint64_t *frames, size_t max) {
  size_t n = 0;
  uint32_t parent, frame;
  while (id != 0 && n < max && obm_capture_stack(cap, id, &parent, &frame) == 0) {
    frames[n++] = obm_capture_frame_address(cap, frame);
    id = parent;
  }
  return n;
}

static void test_stacks(void) {
  char path[2048];
  snprintf(path, sizeof path, "%s/trace-stacks.cap", dir);
  void **blocks = calloc(TREE_NODES + 1, sizeof *blocks);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.stacks = OBM_TRACE_STACKS_FP;
  CHECK(obm_trace_start(path, &o) == 0);
  for (volatile int build = 0; build < 2; build++)
    tree_build((size_t)build * 4096, blocks);
  CHECK(obm_trace_stop() == 0);
  free(blocks);

  char err[512];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return;
  uint32_t *ids = calloc(2 * (TREE_NODES + 1), sizeof *ids);
  obm_capture_record_t r;
  int rc;
  while ((rc = obm_capture_next(cap, &r)) > 0)
    if (r.kind == OBM_CAPTURE_ALLOC && r.size % 4096 >= 1 && r.size % 4096 <= TREE_NODES)
      ids[(r.size / 4096) * (TREE_NODES + 1) + r.size % 4096] = r.stack;
  CHECKF(rc == 0, "%s", obm_capture_error(cap));
  uint64_t side[2] = {0, 0}; /* the frame a left (0) or right (1) call adds */
  int bad = 0;
  for (uint32_t i = 2; i <= TREE_NODES && !bad; i++) {
    uint64_t child[OBM_TRACE_MAX_FRAMES], parent[OBM_TRACE_MAX_FRAMES];
    size_t nc = stack_frames(cap, ids[i], child, OBM_TRACE_MAX_FRAMES);
    size_t np = stack_frames(cap, ids[i / 2], parent, OBM_TRACE_MAX_FRAMES);
    size_t k = 0; /* where the child's stack has its extra frame */
    while (k < np && child[k] == parent[k])
      k++;
    bad |= ids[i] == 0 || nc != np + 1 || k >= np;
    for (size_t j = k; j < np && !bad; j++)
      bad |= child[j + 1] != parent[j];
    if (!bad && side[i & 1] == 0) side[i & 1] = child[k];
    bad |= !bad && child[k] != side[i & 1];
    bad |= ids[TREE_NODES + 1 + i] != ids[i]; /* the second build: the same stack */
    CHECKF(!bad, "node %u: %zu frames (its parent %zu), stack %u then %u", i, nc, np, ids[i],
           ids[TREE_NODES + 1 + i]);
  }
  CHECK(side[0] != 0 && side[1] != 0 && side[0] != side[1]);
  free(ids);
  obm_capture_close(cap);
}

/* One site called from two callers in turn: the hook's caller's frame is at the same address
 * with the same return address each time, only the callers' return addresses differ, so a
 * walk answered from the thread's memo of recent walks must still tell them apart. */
#define N_TURNS 3000
NOINLINE static void turn_site(size_t size) {
  record_alloc(fake(size, 0), size);
  __asm__ volatile("" ::: "memory");
}
NOINLINE static void turn_a(void) {
  turn_site(100);
  __asm__ volatile("" ::: "memory");
}
NOINLINE static void turn_b(void) {
  turn_site(200);
  __asm__ volatile("" ::: "memory");
}

static void test_turns(void) {
  char path[2048];
  snprintf(path, sizeof path, "%s/trace-turns.cap", dir);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  CHECK(obm_trace_start(path, &o) == 0);
  for (volatile int i = 0; i < N_TURNS; i++)
    if (i % 3 == 1)
      turn_b();
    else
      turn_a();
  CHECK(obm_trace_stop() == 0);
  char err[512];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return;
  obm_capture_record_t r;
  uint64_t caller[2] = {0, 0}, site = 0;
  int rc, n[2] = {0, 0}, bad = 0;
  while ((rc = obm_capture_next(cap, &r)) > 0) {
    if (r.kind != OBM_CAPTURE_ALLOC || (r.size != 100 && r.size != 200)) continue;
    uint64_t frames[OBM_TRACE_MAX_FRAMES];
    size_t nf = stack_frames(cap, r.stack, frames, OBM_TRACE_MAX_FRAMES);
    int b = r.size == 200;
    if (nf < 2) {
      bad++;
      continue;
    }
    if (!caller[b]) caller[b] = frames[1];
    if (!site) site = frames[0];
    bad += frames[1] != caller[b] || frames[0] != site;
    n[b]++;
  }
  CHECKF(rc == 0, "%s", obm_capture_error(cap));
  CHECKF(bad == 0 && n[0] == N_TURNS - N_TURNS / 3 && n[1] == N_TURNS / 3 && caller[0] != caller[1],
         "%d stacks with the wrong caller; %d and %d allocations", bad, n[0], n[1]);
  obm_capture_close(cap);
}

/* ---- obmem run, end to end: the preload library traces a real program -------------------- */

/* The line of `marker` in the file at path, or 0. */
static int marked_line(const char *path, const char *marker) {
  FILE *f = fopen(path, "r");
  CHECKF(f != NULL, "cannot read %s", path);
  if (!f) return 0;
  char buf[1024];
  int line = 0, found = 0;
  while (!found && fgets(buf, sizeof buf, f)) {
    line++;
    if (strstr(buf, marker)) found = line;
  }
  fclose(f);
  return found;
}

static void test_run(const char *target, const char *source) {
  char args[8192], capture[4096];
  snprintf(capture, sizeof capture, "%s/run.cap", dir);
  unlink(capture);
  int status = 0;
  snprintf(args, sizeof args, "run -o %s -- %s", capture, target);
  char *out = run_obmem(args, &status);
  CHECKF(status == 0, "obmem run exited %d: %s", status, out);
  CHECKF(strstr(out, "capture written to") != NULL, "no capture: %s", out);
  free(out);
  snprintf(args, sizeof args, "report --json %s", capture);
  char *json = run_obmem(args, &status);
  CHECKF(status == 0, "obmem report exited %d: %s", status, json);
  check_row_in(json, "leaks", "trace_target.c", "leak_site", marked_line(source, "LEAK_LINE"),
               7 * 1000, 7);
  check_row_in(json, "sites_at_peak", "trace_target.c", "peak_site",
               marked_line(source, "PEAK_LINE"), 1 << 20, 1);
  check_row_in(json, "sites_by_count", "trace_target.c", "temp_site",
               marked_line(source, "TEMP_LINE"), 1000 * 64, 1000);
  check_row_in(json, "temporary", "trace_target.c", "temp_site", marked_line(source, "TEMP_LINE"),
               1000 * 64, 1000);
  /* a budget that the leak exceeds: exit status 1 and a message */
  snprintf(args, sizeof args, "run -o %s --max-leak 4000 -- %s", capture, target);
  out = run_obmem(args, &status);
  CHECKF(status == 1 && strstr(out, "--max-leak") != NULL, "--max-leak: status %d: %s", status,
         out);
  free(out);
  free(json);
  /* the benchmark's decomposition (OBMEM_TEST_TRACE_PARTS): the program runs as before, and the
   * capture is whole with the allocations left out (dispatch: hooks that record nothing;
   * events: recorded, dropped by the writer) */
  static const char *const parts[] = {"dispatch", "events"};
  for (int i = 0; i < 2; i++) {
    setenv("OBMEM_TEST_TRACE_PARTS", parts[i], 1);
    snprintf(args, sizeof args, "run -o %s -- %s", capture, target);
    out = run_obmem(args, &status);
    unsetenv("OBMEM_TEST_TRACE_PARTS");
    CHECKF(status == 0 && strstr(out, "capture written to") != NULL, "%s: status %d: %s", parts[i],
           status, out);
    free(out);
    char err[512];
    obm_capture_t *cap = obm_capture_open(capture, err, sizeof err);
    CHECKF(cap != NULL, "%s: %s", parts[i], err);
    if (!cap) continue;
    obm_capture_record_t r;
    int rc;
    uint64_t events = 0;
    while ((rc = obm_capture_next(cap, &r)) > 0)
      events += r.kind == OBM_CAPTURE_ALLOC || r.kind == OBM_CAPTURE_FREE;
    CHECKF(rc == 0, "%s: %s", parts[i], obm_capture_error(cap));
    CHECKF(obm_capture_complete(cap), "%s: the capture is not complete", parts[i]);
    CHECKF(events == 0, "%s: %llu events in the capture", parts[i], (unsigned long long)events);
    obm_capture_close(cap);
  }
}

/* ---- live blocks (obm_capture_live_*): the replay every report shares ------------------- */

static int live_feed(obm_capture_live_t *l, int kind, uint64_t address, uint64_t size,
                     uint32_t thread, obm_capture_block_t *b) {
  obm_capture_record_t r = {.kind = (obm_capture_kind_t)kind,
                            .thread = thread,
                            .address = address,
                            .size = size,
                            .stack = (uint32_t)size % 7};
  return obm_capture_live_apply(l, &r, b);
}

static int near(double a, double b) {
  double d = a > b ? a - b : b - a;
  return d <= 2e-15 * (a > b ? a : b);
}

static void test_live(void) {
  obm_capture_header_t exact = {.version = OBM_CAPTURE_VERSION};
  obm_capture_live_t *l = obm_capture_live_new(&exact);
  CHECK(l != NULL);
  if (!l) return;
  obm_capture_block_t b;
  const int A = OBM_CAPTURE_ALLOC, F = OBM_CAPTURE_FREE;
  CHECK(live_feed(l, A, 0x1000, 100, 1, &b) == OBM_CAPTURE_LIVE_ADDED && b.bytes == 100);
  /* another thread's free read before the allocation: it waits, and cancels it */
  CHECK(live_feed(l, F, 0x2000, 0, 2, &b) == OBM_CAPTURE_LIVE_PENDING && b.thread == 2);
  CHECK(live_feed(l, A, 0x2000, 50, 1, &b) == OBM_CAPTURE_LIVE_CANCELLED && b.size == 50);
  CHECK(obm_capture_live_bytes(l) == 100 && obm_capture_live_count(l) == 1);
  /* the freeing thread's own later allocation of the address came after its free */
  CHECK(live_feed(l, F, 0x3000, 0, 2, &b) == OBM_CAPTURE_LIVE_PENDING);
  CHECK(live_feed(l, A, 0x3000, 30, 2, &b) == OBM_CAPTURE_LIVE_ADDED);
  CHECK(live_feed(l, F, 0x3000, 0, 2, &b) == OBM_CAPTURE_LIVE_FREED && b.size == 30);
  CHECK(live_feed(l, A, 0x3000, 40, 3, &b) == OBM_CAPTURE_LIVE_CANCELLED);
  /* two frees waiting for the same address cancel two allocations */
  CHECK(live_feed(l, F, 0x4000, 0, 2, &b) == OBM_CAPTURE_LIVE_PENDING);
  CHECK(live_feed(l, F, 0x4000, 0, 2, &b) == OBM_CAPTURE_LIVE_PENDING);
  CHECK(live_feed(l, A, 0x4000, 8, 1, &b) == OBM_CAPTURE_LIVE_CANCELLED);
  CHECK(live_feed(l, A, 0x4000, 8, 1, &b) == OBM_CAPTURE_LIVE_CANCELLED);
  CHECK(live_feed(l, A, 0x4000, 8, 1, &b) == OBM_CAPTURE_LIVE_ADDED);
  CHECK(obm_capture_live_bytes(l) == 108 && obm_capture_live_count(l) == 2);
  /* an allocation at a live address ends the older block */
  CHECK(live_feed(l, A, 0x1000, 200, 1, &b) == OBM_CAPTURE_LIVE_ADDED);
  CHECK(obm_capture_live_bytes(l) == 208 && obm_capture_live_count(l) == 2);
  CHECK(live_feed(l, F, 0x1000, 0, 5, &b) == OBM_CAPTURE_LIVE_FREED && b.size == 200 &&
        b.thread == 1 && b.stack == 200 % 7 && b.address == 0x1000);
  CHECK(live_feed(l, OBM_CAPTURE_SAMPLE, 0x1000, 0, 1, &b) == OBM_CAPTURE_LIVE_NONE);
  /* many blocks (the tables grow), freed in a random order: the iteration, count and bytes
   * agree with a plain list */
  enum { N = 5000 };
  static uint64_t addr[N];
  uint64_t rng = check_seed | 1, sum = 8;
  for (int i = 0; i < N; i++) {
    addr[i] = 0x100000 + (uint64_t)i * 48;
    CHECK(live_feed(l, A, addr[i], (uint64_t)i, 1 + (uint32_t)(i % 3), &b) ==
          OBM_CAPTURE_LIVE_ADDED);
    sum += (uint64_t)i;
  }
  for (int i = N - 1; i > 0; i--) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    int j = (int)(rng % (uint64_t)(i + 1));
    uint64_t t = addr[i];
    addr[i] = addr[j];
    addr[j] = t;
  }
  for (int i = 0; i < N / 2; i++) {
    CHECK(live_feed(l, F, addr[i], 0, 1, &b) == OBM_CAPTURE_LIVE_FREED);
    sum -= b.size;
  }
  size_t cursor = 0, n = 0;
  double total = 0;
  while (obm_capture_live_next(l, &cursor, &b)) {
    n++;
    total += b.bytes;
  }
  CHECKF(n == obm_capture_live_count(l) && n == N - N / 2 + 1, "%zu live blocks", n);
  CHECKF(total == (double)sum && obm_capture_live_bytes(l) == (double)sum, "%.0f, %.0f, %llu",
         total, obm_capture_live_bytes(l), (unsigned long long)sum);
  obm_capture_live_free(l);
  /* sampled: s bytes stand for s / (1 - exp(-s / mean)), without libm's expm1 */
  obm_capture_header_t sampled = {
      .version = OBM_CAPTURE_VERSION, .flags = OBM_CAPTURE_FLAG_SAMPLED, .sample_mean_bytes = 1000};
  static const struct {
    uint64_t size;
    double p; /* 1 - exp(-size / 1000) */
  } cases[] = {{1, 9.995001666250085e-4}, {1000, 0.6321205588285577},  {124, 0.11662015911724911},
               {125, 0.1175030974154046}, {20000, 0.9999999979388464}, {1000000, 1.0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double bytes, count;
    obm_capture_weigh(&sampled, cases[i].size, &bytes, &count);
    CHECKF(near(bytes, (double)cases[i].size / cases[i].p) && near(count, 1 / cases[i].p),
           "size %llu: %.17g bytes, %.17g allocations", (unsigned long long)cases[i].size, bytes,
           count);
  }
  /* x = 1e-9 (where 1 - exp(-x) computed plainly keeps 7 digits), and 1e-3 below the
   * series' old switch-over and above it */
  obm_capture_header_t fine = {.version = OBM_CAPTURE_VERSION,
                               .flags = OBM_CAPTURE_FLAG_SAMPLED,
                               .sample_mean_bytes = 1000000000};
  static const struct {
    uint64_t size;
    double p; /* 1 - exp(-size / 1e9) */
  } small[] = {{1, 9.999999995e-10}, {130500000, 0.12234350705126146}};
  for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
    double bytes, count;
    obm_capture_weigh(&fine, small[i].size, &bytes, &count);
    CHECKF(near(bytes, (double)small[i].size / small[i].p), "size %llu of 1e9: %.17g bytes",
           (unsigned long long)small[i].size, bytes);
  }
  double bytes, count;
  obm_capture_weigh(&sampled, 0, &bytes, &count);
  CHECK(bytes == 0 && count == 1);
  obm_capture_weigh(&exact, 1000, &bytes, &count);
  CHECK(bytes == 1000 && count == 1);
  l = obm_capture_live_new(&sampled);
  CHECK(l != NULL);
  if (!l) return;
  live_feed(l, A, 0x1000, 1000, 1, &b);
  CHECK(near(b.bytes, 1000 / 0.6321205588285577) && near(obm_capture_live_bytes(l), b.bytes));
  for (uint64_t i = 0; i < 100; i++) /* sizes whose weights do not add up exactly */
    live_feed(l, A, 0x10000 + 64 * i, 37 + 13 * i, 1, &b);
  for (uint64_t i = 0; i < 100; i++)
    live_feed(l, F, 0x10000 + 64 * i, 0, 1, &b);
  live_feed(l, F, 0x1000, 0, 1, &b);
  CHECKF(obm_capture_live_bytes(l) == 0, "%.17g bytes live after every block was freed",
         obm_capture_live_bytes(l));
  obm_capture_live_free(l);
}

/* ---- obmem run follows fork and exec: one capture per process --------------------------- */

/* Allocations of each of the three sizes in the capture of pid. */
static void count_sizes(int pid, const uint64_t sizes[3], uint64_t counts[3]) {
  char path[2048], err[512];
  snprintf(path, sizeof path, "%s/fork-%d.cap", dir, pid);
  counts[0] = counts[1] = counts[2] = 0;
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return;
  obm_capture_record_t r;
  int rc;
  while ((rc = obm_capture_next(cap, &r)) > 0)
    for (int k = 0; k < 3; k++)
      counts[k] += r.kind == OBM_CAPTURE_ALLOC && r.size == sizes[k];
  CHECKF(rc == 0, "%s: %s", path, obm_capture_error(cap));
  CHECKF(obm_capture_complete(cap), "%s is not complete", path);
  obm_capture_close(cap);
}

static void test_fork(const char *target) {
  char args[8192];
  int status;
  snprintf(args, sizeof args, "run -o %s/fork-%%p.cap -- %s", dir, target);
  char *out = run_obmem(args, &status);
  CHECKF(status == 0, "status %d: %s", status, out);
  static const char *const roles[3] = {"parent", "fork", "exec"};
  static const uint64_t sizes[3] = {7001, 5003, 3001}, expected[3] = {7, 5, 3};
  for (int role = 0; role < 3; role++) {
    char key[32];
    snprintf(key, sizeof key, "pid %s ", roles[role]);
    const char *at = strstr(out, key);
    CHECKF(at != NULL, "no '%s' in: %s", key, out);
    if (!at) continue;
    uint64_t counts[3];
    count_sizes(atoi(at + strlen(key)), sizes, counts);
    for (int k = 0; k < 3; k++)
      CHECKF(counts[k] == (k == role ? expected[k] : 0),
             "%s's capture: %llu allocations of %llu bytes", roles[role],
             (unsigned long long)counts[k], (unsigned long long)sizes[k]);
  }
  free(out);
}

int main(int argc, char **argv) {
  check_seed_init("test_trace", 0, argv, 0, 1);
  if (argc >= 5 && strcmp(argv[1], "fork") == 0) {
    obmem_bin = argv[2];
    dir = argv[3];
    mkdir(dir, 0755);
    test_fork(argv[4]);
    return check_done();
  }
  if (argc >= 6 && strcmp(argv[1], "run") == 0) {
    obmem_bin = argv[2];
    dir = argv[3];
    mkdir(dir, 0755);
    test_run(argv[4], argv[5]);
    return check_done();
  }
  if (argc >= 3 && strcmp(argv[1], "bench") == 0) {
    dir = argv[2];
    mkdir(dir, 0755);
    obmem_bin = getenv("TRACE_BENCH_OBMEM");
    test_bench(argc > 3 ? atol(argv[3]) : 2000000);
    return check_done();
  }
  if (argc >= 3 && strcmp(argv[1], "stacks") == 0) {
    dir = argv[2];
    mkdir(dir, 0755);
    test_stacks();
    test_turns();
    return check_done();
  }
  if (argc < 4) {
    fprintf(stderr, "usage: test_trace report|kill|sampled OBMEM DIR | run OBMEM DIR TARGET "
                    "SOURCE | fork OBMEM DIR TARGET | bench DIR [N] | stacks DIR\n");
    return 2;
  }
  obmem_bin = argv[2];
  dir = argv[3];
  mkdir(dir, 0755);
  if (strcmp(argv[1], "report") == 0) {
    test_live();
    test_report();
  } else if (strcmp(argv[1], "kill") == 0)
    test_kill();
  else if (strcmp(argv[1], "sampled") == 0)
    test_sampled();
  else
    return 2;
  return check_done();
}
