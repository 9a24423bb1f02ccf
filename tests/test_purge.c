/* test_purge.c — the purge thread (src/alloc/purge.c): free memory goes back to the OS on
 * schedule while the program makes no allocator call, and the thread never keeps a process
 * alive.
 *
 * Usage: test_purge MODE [SEED]
 *   idle      (OBMEM_PURGE_THREAD=1, OBMEM_PURGE_DELAY_MS=200) fill ~12 MiB with small
 *             blocks, free all but one block in every 4000 (so the arenas stay, partly used,
 *             and their free slots become dirty rather than the arenas going back whole), then
 *             make no allocator call: the RSS must fall by at least 3/4 of what is resident
 *             beyond the pools still in use (polled for up to 20 s — a bound for a busy
 *             machine, not a timing check)
 *   nothread  (OBMEM_PURGE_THREAD=0) the same; with no thread and no allocator call nothing
 *             may be purged: the RSS stays up for the 1 s watched, 5x the delay (the control
 *             that shows the thread is what purges)
 *   budget    (OBMEM_PURGE_THREAD=0, OBMEM_PURGE_DELAY_MS=1000000: time never purges) fill
 *             ~192 MiB, free all but one block in 4000: the release volume alone makes purge
 *             passes, so what stays resident beyond the pools in use is at most about twice
 *             the budget (32 MiB per heap while it holds less than that)
 *   rounds    (OBMEM_PURGE_THREAD=1, OBMEM_PURGE_DELAY_MS=5) fill ~8 MiB, free all but one block
 *             in 4000, idle 200 ms (the purge thread decommits the free slots), fill again:
 *             the pools take back what was purged, so the heap's purge delay grows
 *             (obm_stats_t.purge_delay_ms_max > 5, watched every 2 ms of the idle time, as
 *             idle passes halve it back; up to 10 rounds, a margin for a busy machine, not a
 *             timing check)
 *   giveback  (OBMEM_PURGE_THREAD=0, OBMEM_PURGE_DELAY_MS=1000000: time never purges) a thread
 *             fills 16 MiB and frees all but one block in 4000 (dirty slots and cached pools
 *             of its heap, below the volume budget), then waits; main fills 16 MiB in fresh
 *             arenas: each fresh arena first gives back an arena's worth of the other heap's
 *             free slots, so the RSS stays within 24 MiB of the start, not 32
 *   exit      a thread makes purgeable memory (the purge thread starts and is seen by name
 *             in /proc/self/task), then main() ends with pthread_exit: the process must end
 *             (a hang is the failure; ctest's timeout catches it)
 * Seeds only vary the block sizes.
 */
#define _GNU_SOURCE
#include "check.h"
#include "internal.h"
#include "obmem.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>

#define MiB (1024.0 * 1024.0)

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Fills, then frees all but one block in `keep_every`; returns the kept blocks' count. */
static uint64_t rng;
static void **kept;
static size_t nkept;
static void fill_and_free(size_t bytes, size_t keep_every) {
  size_t n = bytes / 64;
  void **blocks = obm_malloc(n * sizeof *blocks);
  CHECK(blocks != NULL);
  for (size_t i = 0; i < n; i++) {
    size_t size = 32 + check_rand_below(&rng, 65); /* 32..96 B: a few small classes */
    blocks[i] = obm_malloc(size);
    CHECK(blocks[i] != NULL);
    memset(blocks[i], 0x5A, size);
  }
  kept = obm_malloc((n / keep_every + 1) * sizeof *kept);
  CHECK(kept != NULL);
  for (size_t i = 0; i < n; i++) {
    if (i % keep_every == 0)
      kept[nkept++] = blocks[i];
    else
      obm_free(blocks[i]);
  }
  obm_free(blocks);
}

static int purge_thread_running(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return 0;
  int found = 0;
  struct dirent *e;
  while (!found && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], comm[32] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t r = read(fd, comm, sizeof comm - 1);
    close(fd);
    if (r > 0 && strncmp(comm, "obmem-purge", 11) == 0) found = 1;
  }
  closedir(d);
  return found;
}

static void run_idle(int thread_on) {
  CHECKF(obm_option_get(OBM_OPTION_PURGE_THREAD) == thread_on, "run with OBMEM_PURGE_THREAD=%d",
         thread_on);
  CHECKF(obm_option_get(OBM_OPTION_PURGE_DELAY_MS) > 0, "%s",
         "OBMEM_PURGE_DELAY_MS must not be 0 here");
  size_t before = _obm_os_rss_bytes();
  size_t fill = 12u << 20; /* below the volume budget (32 MiB): only time purges it */
  fill_and_free(fill, 4000);
  size_t after_free = _obm_os_rss_bytes();
  /* what must stay: the pools (and arena headers) that still hold a kept block */
  size_t live = 0;
  for (size_t i = 0; i < nkept; i++) {
    uintptr_t pool = (uintptr_t)kept[i] >> 14, arena = (uintptr_t)kept[i] >> 20;
    int new_pool = 1, new_arena = 1;
    for (size_t j = 0; j < i; j++) {
      if ((uintptr_t)kept[j] >> 14 == pool) new_pool = 0;
      if ((uintptr_t)kept[j] >> 20 == arena) new_arena = 0;
    }
    live += (size_t)(new_pool + new_arena) * (16u << 10);
  }
  size_t floor = before + live;
  printf("rss: %.1f MiB before, %.1f MiB after filling %.0f MiB and freeing all but %zu "
         "blocks (in pools of %.1f MiB)\n",
         before / MiB, after_free / MiB, fill / MiB, nkept, live / MiB);
  CHECKF(after_free > floor + fill / 4,
         "only %.1f MiB resident after the frees: nothing to "
         "test",
         (after_free - before) / MiB);
  size_t goal = floor + (after_free - floor) / 4;
  size_t rss = after_free;
  long waited = 0;
  long limit = thread_on ? 20000 : 1000;
  while (waited < limit && rss > goal) { /* no allocator call in this loop */
    sleep_ms(10);
    waited += 10;
    rss = _obm_os_rss_bytes();
  }
  printf("rss: %.1f MiB after %ld ms idle (goal %.1f MiB)\n", rss / MiB, waited, goal / MiB);
  if (thread_on) {
    CHECKF(rss <= goal, "the idle program kept %.1f MiB resident (%.1f MiB after the frees)",
           rss / MiB, after_free / MiB);
  } else {
    CHECKF(rss > goal, "%s", "memory was purged with no purge thread and no allocator call");
  }
  for (size_t i = 0; i < nkept; i++)
    obm_free(kept[i]);
  obm_free(kept);
}

static void run_budget(void) {
  CHECKF(obm_option_get(OBM_OPTION_PURGE_THREAD) == 0 &&
             obm_option_get(OBM_OPTION_PURGE_DELAY_MS) >= 100000,
         "%s", "run with OBMEM_PURGE_THREAD=0 OBMEM_PURGE_DELAY_MS=1000000");
  size_t before = _obm_os_rss_bytes();
  size_t fill = 192u << 20;
  fill_and_free(fill, 4000);
  size_t after_free = _obm_os_rss_bytes();
  size_t live = 0;
  for (size_t i = 0; i < nkept; i++) {
    int new_pool = 1, new_arena = 1;
    for (size_t j = 0; j < i; j++) {
      if ((uintptr_t)kept[j] >> 14 == (uintptr_t)kept[i] >> 14) new_pool = 0;
      if ((uintptr_t)kept[j] >> 20 == (uintptr_t)kept[i] >> 20) new_arena = 0;
    }
    live += (size_t)(new_pool + new_arena) * (16u << 10);
  }
  /* 2 x 32 MiB of dirty slots, the retained pools (4 MiB), the freed pointer array (~24 MiB,
   * a cached large block) and the spare arena */
  size_t bound = before + live + (96u << 20);
  printf("rss: %.1f MiB before, %.1f MiB after filling %.0f MiB and freeing all but %zu "
         "blocks (in pools of %.1f MiB); bound %.1f MiB\n",
         before / MiB, after_free / MiB, fill / MiB, nkept, live / MiB, bound / MiB);
  CHECKF(after_free <= bound, "%.1f MiB resident after the frees, with no purge by time",
         after_free / MiB);
  for (size_t i = 0; i < nkept; i++)
    obm_free(kept[i]);
  obm_free(kept);
}

static void free_kept(void) {
  for (size_t i = 0; i < nkept; i++)
    obm_free(kept[i]);
  obm_free(kept);
  nkept = 0;
}

static void run_rounds(void) {
  CHECKF(obm_option_get(OBM_OPTION_PURGE_THREAD) == 1 &&
             obm_option_get(OBM_OPTION_PURGE_DELAY_MS) == 5,
         "%s", "run with OBMEM_PURGE_THREAD=1 OBMEM_PURGE_DELAY_MS=5");
  static obm_stats_t st;
  uint64_t longest = 0;
  for (int round = 0; round < 10 && longest <= 5; round++) {
    fill_and_free(8u << 20, 4000);
    /* the purge thread decommits the free slots; idle passes that find them still free
     * halve the delay again, so it is watched all along (every 2 ms, twice per pass) */
    uint64_t round_longest = 0;
    for (int t = 0; t < 100; t++) {
      sleep_ms(2);
      obm_stats_get(&st);
      if (st.purge_delay_ms_max > round_longest) round_longest = st.purge_delay_ms_max;
    }
    free_kept();
    printf("round %d: longest purge delay %" PRIu64 " ms\n", round, round_longest);
    if (round_longest > longest) longest = round_longest;
  }
  CHECKF(longest > 5,
         "the purge delay stayed %" PRIu64 " ms although every round took back what was "
         "purged",
         longest);
}

static pthread_mutex_t gb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gb_cond = PTHREAD_COND_INITIALIZER;
static int gb_state; /* 1: the thread freed its blocks; 2: main is done */

static void *fill_free_wait(void *arg) {
  (void)arg;
  fill_and_free(16u << 20, 4000);
  pthread_mutex_lock(&gb_lock);
  gb_state = 1;
  pthread_cond_broadcast(&gb_cond);
  while (gb_state != 2)
    pthread_cond_wait(&gb_cond, &gb_lock);
  pthread_mutex_unlock(&gb_lock);
  free_kept();
  return NULL;
}

static void run_giveback(void) {
  CHECKF(obm_option_get(OBM_OPTION_PURGE_THREAD) == 0 &&
             obm_option_get(OBM_OPTION_PURGE_DELAY_MS) >= 100000,
         "%s", "run with OBMEM_PURGE_THREAD=0 OBMEM_PURGE_DELAY_MS=1000000");
  void *mine = obm_malloc(100); /* main's heap exists before the other's memory is freed */
  CHECK(mine != NULL);
  size_t before = _obm_os_rss_bytes();
  pthread_t t;
  CHECK(pthread_create(&t, NULL, fill_free_wait, NULL) == 0);
  pthread_mutex_lock(&gb_lock);
  while (gb_state != 1)
    pthread_cond_wait(&gb_cond, &gb_lock);
  pthread_mutex_unlock(&gb_lock);
  size_t after_free = _obm_os_rss_bytes();
  CHECKF(after_free > before + (12u << 20), "only %.1f MiB resident after the thread's frees",
         (after_free - before) / MiB);
  size_t n = (16u << 20) / 64;
  void **blocks = obm_malloc(n * sizeof *blocks);
  CHECK(blocks != NULL);
  for (size_t i = 0; i < n; i++) {
    blocks[i] = obm_malloc(64);
    CHECK(blocks[i] != NULL);
    memset(blocks[i], 0x3C, 64);
  }
  size_t after_fill = _obm_os_rss_bytes();
  printf("rss: %.1f MiB before, %.1f MiB after the thread's frees, %.1f MiB after main's "
         "16 MiB\n",
         before / MiB, after_free / MiB, after_fill / MiB);
  CHECKF(after_fill <= before + (24u << 20),
         "%.1f MiB resident: the other heap's free slots stayed beside main's fresh arenas",
         (after_fill - before) / MiB);
  for (size_t i = 0; i < n; i++)
    obm_free(blocks[i]);
  obm_free(blocks);
  obm_free(mine);
  pthread_mutex_lock(&gb_lock);
  gb_state = 2;
  pthread_cond_broadcast(&gb_cond);
  pthread_mutex_unlock(&gb_lock);
  CHECK(pthread_join(t, NULL) == 0);
}

static void *make_purgeable(void *arg) {
  (void)arg;
  fill_and_free(8u << 20, 1000000);
  return NULL;
}

static void run_exit(void) {
  void *mine = obm_malloc(100); /* main has a heap of its own, live until pthread_exit */
  CHECK(mine != NULL);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, make_purgeable, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  if (obm_option_get(OBM_OPTION_PURGE_THREAD) && obm_option_get(OBM_OPTION_PURGE_DELAY_MS))
    CHECKF(purge_thread_running(), "%s", "no obmem-purge thread after memory was freed");
  obm_free(mine);
  check_done();
  fflush(stdout);
  pthread_exit(NULL); /* the process ends when its last thread does: the purge thread too */
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  check_seed_init("purge", argc, argv, 2, 20261127);
  rng = check_seed;
  if (strcmp(mode, "idle") == 0)
    run_idle(1);
  else if (strcmp(mode, "nothread") == 0)
    run_idle(0);
  else if (strcmp(mode, "exit") == 0)
    run_exit();
  else if (strcmp(mode, "budget") == 0)
    run_budget();
  else if (strcmp(mode, "rounds") == 0)
    run_rounds();
  else if (strcmp(mode, "giveback") == 0)
    run_giveback();
  else {
    fprintf(stderr, "usage: test_purge idle|nothread|budget|rounds|giveback|exit [SEED]\n");
    return 2;
  }
  return check_done();
}
