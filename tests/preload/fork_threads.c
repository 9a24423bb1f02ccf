/* fork_threads.c — a program that forks while its threads allocate, on the preload.
 *
 * Run with LD_PRELOAD=libobmem-preload.so.  NWORKERS threads churn malloc, calloc, realloc,
 * posix_memalign and free in every tier (and glibc's own allocations through strdup and
 * asprintf) while the main thread forks NFORKS times.  Each child, which has only the forking
 * thread: allocates and frees in every tier; frees a block a parent's worker allocated (its
 * heap belongs to a thread that does not exist in the child); checks a parent block's
 * contents; starts a thread that allocates; uses stdio (whose lock and buffers the fork
 * handlers must leave usable); and, every 8th fork, execs /bin/sh under the same preload
 * (the environment is inherited), which must run.  A child that deadlocks is killed by
 * alarm() and counts as a failure; every child must exit 0.  Half the forks are made from a
 * worker thread rather than main.  Afterwards the parent's workers verify their blocks.
 * Usage: fork_threads [SEED]
 */
#include "preload_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#define NWORKERS 4
#define NFORKS   40
#define NSLOTS   128

typedef struct slot_s {
  unsigned char *p;
  size_t size;
  unsigned char fill;
} slot_t;

static atomic_int stop;
static _Atomic(unsigned char *) shared_block; /* 4000 bytes of 0xA5, from some worker */
static atomic_int nforks_from_workers;

static size_t pick_size(uint64_t *rng) {
  uint64_t r = check_rand_below(rng, 100);
  return r < 70 ? 1 + (size_t)r * 7 : r < 97 ? 600 + (size_t)r * 400 : 100000 + (size_t)r * 3000;
}

static int fork_and_wait(int index);

static void *worker(void *arg) {
  uintptr_t index = (uintptr_t)arg;
  uint64_t rng = check_seed * 31 + index;
  slot_t slots[NSLOTS] = {{0}};
  long iterations = 0;
  while (!atomic_load(&stop)) {
    slot_t *s = &slots[check_rand_below(&rng, NSLOTS)];
    if (s->p) {
      for (size_t i = 0; i < s->size; i += 61)
        CHECK(s->p[i] == s->fill);
      CHECK(s->p[s->size - 1] == s->fill);
      if (check_rand_below(&rng, 4) == 0) {
        size_t size = pick_size(&rng);
        unsigned char *q = realloc(s->p, size);
        CHECK(q != NULL);
        size_t keep = size < s->size ? size : s->size;
        CHECK(q[keep - 1] == s->fill);
        s->p = q;
        s->size = size;
        memset(q, s->fill, size);
        continue;
      }
      free(s->p);
      s->p = NULL;
    }
    s->size = pick_size(&rng);
    s->fill = (unsigned char)check_rand(&rng);
    switch (check_rand_below(&rng, 3)) {
    case 0:
      s->p = malloc(s->size);
      break;
    case 1:
      s->p = calloc(1, s->size);
      break;
    default: {
      void *q = NULL;
      CHECK(posix_memalign(&q, 64, s->size) == 0);
      s->p = q;
    }
    }
    CHECK(s->p != NULL);
    memset(s->p, s->fill, s->size);
    char *text = NULL;
    CHECK(asprintf(&text, "worker %lu iteration %ld", (unsigned long)index, iterations) > 0);
    free(text);
    unsigned char *b = malloc(4000);
    CHECK(b != NULL);
    memset(b, 0xA5, 4000);
    unsigned char *old = atomic_exchange(&shared_block, b);
    free(old);
    /* worker 0 forks too, every few thousand iterations */
    if (index == 0 && ++iterations % 3000 == 0 && atomic_load(&nforks_from_workers) < NFORKS / 2) {
      int n = atomic_fetch_add(&nforks_from_workers, 1);
      CHECKF(fork_and_wait(1000 + n) == 0, "fork %d from a worker", 1000 + n);
    }
  }
  for (int i = 0; i < NSLOTS; i++) {
    if (slots[i].p) CHECK(slots[i].p[slots[i].size - 1] == slots[i].fill);
    free(slots[i].p);
  }
  return NULL;
}

static void *child_thread(void *arg) {
  (void)arg;
  for (int i = 0; i < 2000; i++) {
    void *p = malloc((size_t)(i % 900) * 13 + 1);
    if (!p) return (void *)1;
    free(p);
  }
  return NULL;
}

static int child_main(int index) {
  alarm(20);
  void *blocks[300];
  for (int i = 0; i < 300; i++) {
    size_t size = i % 3 == 0   ? (size_t)i + 1
                  : i % 3 == 1 ? (size_t)i * 100 + 600
                               : 70000 + (size_t)i;
    blocks[i] = malloc(size);
    if (!blocks[i] || !preload_owns(blocks[i])) return 3;
    memset(blocks[i], 0x5A, size);
  }
  for (int i = 0; i < 300; i++)
    free(blocks[i]);
  unsigned char *inherited = atomic_exchange(&shared_block, NULL);
  if (inherited) {
    for (int i = 0; i < 4000; i++)
      if (inherited[i] != 0xA5) return 4;
    free(inherited); /* a block of a heap whose thread is gone here */
  }
  pthread_t t;
  void *result = (void *)1;
  if (pthread_create(&t, NULL, child_thread, NULL) != 0) return 5;
  if (pthread_join(t, &result) != 0 || result != NULL) return 6;
  char *line = NULL;
  if (asprintf(&line, "child %d of %d", index, (int)getppid()) < 0) return 7;
  FILE *f = fopen("/dev/null", "w");
  if (!f || fprintf(f, "%s\n", line) < 0 || fclose(f) != 0) return 8;
  free(line);
  if (index % 8 == 0) {
    /* exec: the new program starts on the preload too (LD_PRELOAD is inherited) */
    execl("/bin/sh", "sh", "-c", "x=$(echo ok); test \"$x\" = ok", (char *)NULL);
    return 9;
  }
  return 0;
}

/* Forks; the child runs child_main; returns the child's exit status (or 128 + signal). */
static int fork_and_wait(int index) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) _exit(child_main(index));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -2;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

int main(int argc, char **argv) {
  check_seed_init("fork_threads", argc, argv, 1, 7);
  preload_require_obmem();
  pthread_t workers[NWORKERS];
  for (uintptr_t i = 0; i < NWORKERS; i++)
    CHECK(pthread_create(&workers[i], NULL, worker, (void *)i) == 0);
  for (int f = 0; f < NFORKS; f++) {
    usleep(3000);
    int status = fork_and_wait(f);
    CHECKF(status == 0, "child %d exited with status %d", f, status);
  }
  /* let worker 0 make its share of forks, within a bounded time */
  for (int wait_ms = 0; wait_ms < 5000 && atomic_load(&nforks_from_workers) < NFORKS / 2;
       wait_ms += 10)
    usleep(10000);
  atomic_store(&stop, 1);
  for (int i = 0; i < NWORKERS; i++)
    CHECK(pthread_join(workers[i], NULL) == 0);
  CHECKF(atomic_load(&nforks_from_workers) >= 1, "worker 0 never forked");
  free(atomic_exchange(&shared_block, NULL));
  return check_done();
}
