/* test_trace_runtime.c — tracing started and stopped at run time, through the allocator.
 *
 *   startstop DIR   one thread: blocks made before obm_trace_start, during, and after
 *                   obm_trace_stop; the capture holds exactly the calls made between start and
 *                   stop, in order (mallocs, callocs, aligned, reallocs, large blocks, frees of
 *                   recorded blocks) and nothing of the blocks made before or after (their
 *                   frees neither); the recorded blocks stay valid after stop.  Twice: exact
 *                   mode, then a second session in the same process.  Then: a sampled
 *                   session whose calloc counts down a class budget drawn with a huge mean,
 *                   and a second one of a small mean whose callocs (no malloc between) are
 *                   sampled at the small mean's rate (a start re-arms every countdown); and a
 *                   thread whose exit allocates after obmem's key destructor ran, its stack
 *                   made inaccessible after join, then a start (which must not write to its
 *                   TLS).
 *   race DIR        worker threads allocate, realloc and free (each other's blocks too) while
 *                   the main thread starts and stops tracing, exact and sampled in turn; every
 *                   capture is complete and readable, and no recorded free lacks its
 *                   allocation unless the block came from before that session; in exact
 *                   mode each worker's malloc/free pair of its own size (which never leaves
 *                   malloc's inline path once the class has a pool) is recorded: a start
 *                   reaches threads already running.  Quick: runs under TSan.
 * Only the public headers: the allocator decides what is recorded.
 */
#include "check.h"

#include <obmem.h>
#include <obmem/capture.h>
#include <obmem/trace.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const char *dir;

/* ---- what the capture should hold ---------------------------------------------------------- */

typedef struct event_s {
  int alloc; /* 1 alloc, 0 free */
  uint64_t address, size;
} event_t;

#define MAX_EVENTS 100000
static event_t expected[MAX_EVENTS];
static size_t nexpected;

static void expect(int alloc, void *p, size_t size) {
  CHECK(nexpected < MAX_EVENTS);
  expected[nexpected++] = (event_t){alloc, (uint64_t)(uintptr_t)p, size};
}

/* The capture's ALLOC and FREE records equal `expected`, in order (one thread). */
static void check_capture(const char *path) {
  char err[512];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return;
  obm_capture_record_t r;
  size_t n = 0, bad = 0;
  int rc;
  while ((rc = obm_capture_next(cap, &r)) > 0) {
    if (r.kind != OBM_CAPTURE_ALLOC && r.kind != OBM_CAPTURE_FREE) continue;
    event_t e = {r.kind == OBM_CAPTURE_ALLOC, r.address, r.kind == OBM_CAPTURE_ALLOC ? r.size : 0};
    if (n < nexpected && (e.alloc != expected[n].alloc || e.address != expected[n].address ||
                          e.size != expected[n].size)) {
      if (bad++ < 5)
        fprintf(stderr, "event %zu: %s %#llx %llu, expected %s %#llx %llu\n", n,
                e.alloc ? "alloc" : "free", (unsigned long long)e.address,
                (unsigned long long)e.size, expected[n].alloc ? "alloc" : "free",
                (unsigned long long)expected[n].address, (unsigned long long)expected[n].size);
    }
    n++;
  }
  CHECKF(rc == 0, "%s", obm_capture_error(cap));
  CHECK(obm_capture_complete(cap));
  CHECKF(n == nexpected, "%zu events in the capture, %zu made while tracing", n, nexpected);
  CHECKF(bad == 0, "%zu events differ", bad);
  obm_capture_close(cap);
}

/* ---- startstop ------------------------------------------------------------------------------- */

#define NBLOCKS 600

static size_t size_of(uint64_t *rng, int i) {
  if (i % 97 == 0) return 300000 + check_rand_below(rng, 200000); /* large */
  if (i % 7 == 0) return 600 + check_rand_below(rng, 20000);      /* medium */
  return 1 + check_rand_below(rng, 512);
}

static void session(int round) {
  char path[2048];
  snprintf(path, sizeof path, "%s/runtime-%d.cap", dir, round);
  uint64_t rng = check_seed + (uint64_t)round;
  void *before[NBLOCKS], *during[NBLOCKS], *after[NBLOCKS];
  for (int i = 0; i < NBLOCKS; i++) {
    before[i] = obm_malloc(size_of(&rng, i));
    memset(before[i], 1, 1);
  }
  nexpected = 0;
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.stacks = OBM_TRACE_STACKS_FP;
  o.sample_interval_ms = 0;
  CHECK(obm_trace_start(path, &o) == 0);
  for (int i = 0; i < NBLOCKS; i++) {
    size_t size = size_of(&rng, i);
    switch (i % 5) {
    case 0:
      during[i] = obm_calloc(1, size);
      break;
    case 1: {
      void *p = NULL;
      CHECK(obm_posix_memalign(&p, 64, size) == 0);
      during[i] = p;
      CHECK(((uintptr_t)p & 63) == 0);
      break;
    }
    default:
      during[i] = obm_malloc(size);
    }
    expect(1, during[i], size);
    memset(during[i], 2, size < 64 ? size : 64);
    if (i % 3 == 0) { /* a block from before tracing: its free is not recorded */
      obm_free(before[i]);
      before[i] = NULL;
    }
    if (i % 4 == 1) { /* a recorded block grows or shrinks: one realloc event */
      size_t to = size_of(&rng, i + 1);
      void *p = obm_realloc(during[i], to);
      CHECK(p != NULL);
      expect(0, during[i], 0);
      expect(1, p, to);
      during[i] = p;
    }
    if (i % 5 == 2 && before[i]) { /* a block from before, reallocated: recorded as new */
      size_t to = size_of(&rng, i + 2);
      void *p = obm_realloc(before[i], to);
      CHECK(p != NULL);
      expect(1, p, to);
      before[i] = NULL;
      after[i] = p; /* freed after stop */
    } else {
      after[i] = NULL;
    }
    if (i % 2 == 0) {
      obm_free(during[i]);
      expect(0, during[i], 0);
      during[i] = NULL;
    }
  }
  CHECK(obm_trace_stop() == 0);
  /* after stop: recorded blocks stay valid, their frees call nothing; new blocks are plain */
  for (int i = 0; i < NBLOCKS; i++) {
    if (during[i]) {
      volatile unsigned char *c = during[i];
      CHECK(c[0] == 2);
      obm_free(during[i]);
    }
    obm_free(after[i]);
    obm_free(before[i]);
    obm_free(obm_malloc(size_of(&rng, i)));
  }
  check_capture(path);
}

static uint64_t count_allocs(const char *path, uint64_t size) {
  char err[512];
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  CHECKF(cap != NULL, "%s", err);
  if (!cap) return 0;
  obm_capture_record_t r;
  uint64_t n = 0;
  while (obm_capture_next(cap, &r) > 0)
    n += r.kind == OBM_CAPTURE_ALLOC && r.size == size;
  obm_capture_close(cap);
  return n;
}

/* The countdowns a sampled session drew are not those of the next session. */
static void rearm(void) {
  char path[2048];
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.mode = OBM_TRACE_SAMPLED;
  o.stacks = OBM_TRACE_STACKS_NONE;
  o.seed = check_seed;
  o.sample_mean_bytes = (uint64_t)1 << 40; /* draws a class budget that never runs out */
  snprintf(path, sizeof path, "%s/rearm-1.cap", dir);
  CHECK(obm_trace_start(path, &o) == 0);
  for (int i = 0; i < 4; i++)
    obm_free(obm_calloc(1, 48));
  CHECK(obm_trace_stop() == 0);
  o.sample_mean_bytes = 64; /* each 48-byte block: recorded with probability 1 - e^-0.75 */
  snprintf(path, sizeof path, "%s/rearm-2.cap", dir);
  CHECK(obm_trace_start(path, &o) == 0);
  static void *keep[10000];
  for (int i = 0; i < 10000; i++)
    keep[i] = obm_calloc(1, 48);
  CHECK(obm_trace_stop() == 0);
  for (int i = 0; i < 10000; i++)
    obm_free(keep[i]);
  uint64_t n = count_allocs(path, 48); /* 5276 expected, standard deviation 50 */
  CHECKF(n > 4800 && n < 5750, "%llu of 10000 callocs of 48 bytes sampled at a 64-byte mean",
         (unsigned long long)n);
}

static pthread_key_t exit_key;
static void exit_key_again(void *p) { /* every round of key destructors */
  obm_free(p);
  pthread_setspecific(exit_key, obm_malloc(32));
}
static void *exit_key_thread(void *arg) {
  (void)arg;
  pthread_setspecific(exit_key, obm_malloc(32));
  return NULL;
}

/* A thread allocates after obmem's key destructor (a later key's destructor does, in every
 * round); its TLS, at the top of a stack the program unmaps after join, is gone by the next
 * start, which must not write to it. */
static void exit_allocates(void) {
#if defined(__SANITIZE_THREAD__)
  /* TSan's runtime finishes a thread in its own last key destructor; a mutex taken by a
   * destructor after that (obmem's, in the last round) crashes inside TSan. */
  return;
#endif
  obm_free(obm_malloc(16)); /* obmem's key first */
  CHECK(pthread_key_create(&exit_key, exit_key_again) == 0);
  size_t size = (size_t)1 << 20;
  void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(stack != MAP_FAILED);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  CHECK(pthread_attr_setstack(&attr, stack, size) == 0);
  pthread_t t;
  CHECK(pthread_create(&t, &attr, exit_key_thread, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  pthread_attr_destroy(&attr);
  /* the thread's stack and TLS made inaccessible: a write there by the start faults */
  CHECK(mmap(stack, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == stack);
  char path[2048];
  snprintf(path, sizeof path, "%s/exit-key.cap", dir);
  obm_trace_options_t o;
  obm_trace_options_init(&o);
  o.stacks = OBM_TRACE_STACKS_NONE;
  CHECK(obm_trace_start(path, &o) == 0);
  obm_free(obm_malloc(100));
  CHECK(obm_trace_stop() == 0);
  CHECK(count_allocs(path, 100) == 1);
  CHECK(munmap(stack, size) == 0);
}

static void test_startstop(void) {
  exit_allocates(); /* first: before any session's threads */
  session(0);
  session(1); /* a second session in the same process */
  rearm();
  CHECK(obm_check() == 0);
}

/* ---- race ------------------------------------------------------------------------------------ */

#define NWORKERS 3
#define NSLOTS   256
static _Atomic(void *) shared[NSLOTS]; /* blocks any thread frees */
static atomic_int done;
static _Atomic long progress[NWORKERS];
#define PAIR_SIZE(id) (900 + 7 * (size_t)(id)) /* sizes nothing else allocates */

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  uint64_t rng = check_seed * 31 + (uint64_t)id;
  void *own[64] = {0};
  while (!atomic_load(&done)) {
    for (int k = 0; k < 64; k++) {
      uint64_t r = check_rand(&rng);
      size_t size = (r >> 20) % 16 == 0 ? 4096 + (r >> 8) % 70000 : 1 + (r >> 8) % 400;
      if (own[k] && (r & 3) == 0) {
        own[k] = obm_realloc(own[k], size);
      } else {
        obm_free(own[k]);
        own[k] = (r & 4) ? obm_calloc(1, size) : obm_malloc(size);
      }
      memset(own[k], id, 1);
      void *p = atomic_exchange(&shared[(r >> 40) % NSLOTS], obm_malloc(1 + (r >> 50) % 256));
      obm_free(p); /* often another thread's block */
    }
    for (int k = 0; k < 16; k++) /* the same block again and again: the inline paths only */
      obm_free(obm_malloc(PAIR_SIZE(id)));
    atomic_fetch_add(&progress[id], 1);
  }
  for (int k = 0; k < 64; k++)
    obm_free(own[k]);
  return NULL;
}

/* Waits until every worker made `rounds` more rounds (no clock: counts). */
static void wait_rounds(long rounds) {
  long target[NWORKERS];
  for (int i = 0; i < NWORKERS; i++)
    target[i] = atomic_load(&progress[i]) + rounds;
  for (int i = 0; i < NWORKERS; i++)
    while (atomic_load(&progress[i]) < target[i])
      sched_yield();
}

static void test_race(void) {
  pthread_t t[NWORKERS];
  for (int i = 0; i < NWORKERS; i++)
    CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
  for (int round = 0; round < 8; round++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/race-%d.cap", dir, round);
    obm_trace_options_t o;
    obm_trace_options_init(&o);
    o.mode = round % 2 ? OBM_TRACE_SAMPLED : OBM_TRACE_EXACT;
    o.sample_mean_bytes = 4096;
    o.seed = check_seed + (uint64_t)round;
    o.stacks = OBM_TRACE_STACKS_FP;
    o.sample_interval_ms = 1;
    CHECK(obm_trace_start(path, &o) == 0);
    wait_rounds(3);
    if (round == 2) CHECK(obm_trace_flush() == 0);
    CHECK(obm_trace_stop() == 0);
    wait_rounds(1);
    /* the capture: complete, readable, and it recorded the workers */
    char err[512];
    obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
    CHECKF(cap != NULL, "%s", err);
    if (!cap) continue;
    obm_capture_record_t r;
    uint64_t nalloc = 0, pairs[NWORKERS] = {0};
    int rc;
    while ((rc = obm_capture_next(cap, &r)) > 0) {
      nalloc += r.kind == OBM_CAPTURE_ALLOC;
      for (int i = 0; i < NWORKERS; i++)
        pairs[i] += r.kind == OBM_CAPTURE_ALLOC && r.size == PAIR_SIZE(i);
    }
    CHECKF(rc == 0, "%s: %s", path, obm_capture_error(cap));
    CHECKF(obm_capture_complete(cap), "%s", path);
    CHECKF(nalloc > 0, "%s: no allocation recorded", path);
    /* wait_rounds(3): the first of the 3 rounds may have begun before the start, the other
     * 2 (16 pairs each) were made wholly inside the session */
    for (int i = 0; i < NWORKERS && o.mode == OBM_TRACE_EXACT; i++)
      CHECKF(pairs[i] >= 32, "%s: worker %d's malloc/free pairs: %llu recorded, 32 or more made",
             path, i, (unsigned long long)pairs[i]);
    obm_capture_close(cap);
  }
  atomic_store(&done, 1);
  for (int i = 0; i < NWORKERS; i++)
    pthread_join(t[i], NULL);
  for (int k = 0; k < NSLOTS; k++)
    obm_free(atomic_exchange(&shared[k], NULL));
  CHECK(obm_check() == 0);
}

int main(int argc, char **argv) {
  check_seed_init("test_trace_runtime", argc, argv, 3, 1);
  if (argc < 3) {
    fprintf(stderr, "usage: test_trace_runtime startstop|race DIR [SEED]\n");
    return 2;
  }
  dir = argv[2];
  mkdir(dir, 0755);
  if (strcmp(argv[1], "startstop") == 0)
    test_startstop();
  else if (strcmp(argv[1], "race") == 0)
    test_race();
  else
    return 2;
  return check_done();
}
