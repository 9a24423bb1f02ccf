/* stats_report.c — the program of stats_report.sh: OBMEM_STATS, OBMEM_STATS_SIGNAL and
 * OBMEM_STATS_FILE reports in the situations that defeat a printer that uses stdio on stderr
 * from an atexit handler.
 *
 * Usage: stats_report MODE
 *   plain         allocate, print "pid N" on stdout, exit
 *   close-stderr  as gnulib's close_stdout (coreutils): an atexit handler registered in main,
 *                 after the first allocation, fcloses stdout and stderr; it then opens
 *                 /dev/null twice, which takes fds 1 and 2
 *   closefrom     main closes every descriptor above 2, as daemons do, then puts a file of its
 *                 own ("victim", in the working directory) on every number from 3 to 255
 *   signal        raise(OBMEM_TEST_SIGNAL, default SIGUSR2), then wait (up to 20 s) until fd 2,
 *                 a regular file, has grown: the report comes while the program runs
 *   signal-exit   raise the signal and exit at once
 *   _exit         end with _exit(0): exit handlers and destructors do not run
 *   pthread-exit  main ends with pthread_exit while a worker thread runs for 200 ms more
 *   fork          fork; the child allocates, raises SIGUSR2 and exits; the parent waits for
 *                 it, changes directory to /, raises SIGUSR2, waits 20 ms and exits; prints
 *                 "parent P child C" on stdout
 *   epipe         re-executes itself in mode plain with fd 2 a pipe nobody reads; prints the
 *                 child's exit status ("status N")
 * Every mode first allocates small, medium and large blocks and keeps 100 blocks of 100 bytes
 * live until the end (the report shows them).
 *
 * Built twice: on libc's names for the preload (allocation through malloc), and, with
 * STATS_REPORT_OBM defined, linked with libobmem.a and calling obm_malloc (for the sanitizer
 * builds, where no preload is tested).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef STATS_REPORT_OBM
#include <obmem.h>
#define ALLOC(n)   obm_malloc(n)
#define RELEASE(p) obm_free(p)
#else
#define ALLOC(n)   malloc(n)
#define RELEASE(p) free(p)
#endif

#define NLIVE 100
static void *live[NLIVE];

static void die(const char *what) {
  fprintf(stderr, "stats_report: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

static void allocate(void) {
  static const size_t sizes[] = {8, 24, 100, 700, 5000, 40000, 300000};
  for (int round = 0; round < 20; round++)
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      char *p = ALLOC(sizes[i]);
      if (!p) die("allocation");
      memset(p, 1, sizes[i]);
      RELEASE(p);
    }
  for (int i = 0; i < NLIVE; i++)
    if (!(live[i] = ALLOC(100))) die("allocation");
}

static int test_signal(void) {
  const char *s = getenv("OBMEM_TEST_SIGNAL");
  return s && *s ? atoi(s) : SIGUSR2;
}

static void close_stdout_like_gnulib(void) {
  fclose(stdout);
  fclose(stderr); /* closes fd 2 */
  /* new files take fds 1 and 2 */
  if (open("/dev/null", O_WRONLY) != 1 || open("/dev/null", O_WRONLY) != 2) _exit(3);
}

static void *worker(void *arg) {
  (void)arg;
  sleep_ms(200);
  void *p = ALLOC(1000);
  RELEASE(p);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: stats_report plain|close-stderr|closefrom|signal|signal-exit|"
                    "_exit|pthread-exit|fork|epipe\n");
    return 2;
  }
  const char *mode = argv[1];
  allocate();

  if (!strcmp(mode, "plain")) {
    printf("pid %d\n", (int)getpid());
  } else if (!strcmp(mode, "close-stderr")) {
    atexit(close_stdout_like_gnulib);
    printf("pid %d\n", (int)getpid());
  } else if (!strcmp(mode, "closefrom")) {
    for (int fd = 3; fd < 1024; fd++)
      close(fd);
    int victim = open("victim", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (victim < 0) die("victim");
    for (int fd = 3; fd < 256; fd++)
      if (fd != victim && dup2(victim, fd) < 0) die("dup2");
    printf("pid %d\n", (int)getpid());
  } else if (!strcmp(mode, "signal") || !strcmp(mode, "signal-exit")) {
    struct stat before, now;
    if (fstat(2, &before) != 0) die("fstat 2");
    if (raise(test_signal()) != 0) die("raise");
    if (!strcmp(mode, "signal")) {
      int waited_ms = 0;
      while (fstat(2, &now) == 0 && now.st_size == before.st_size && waited_ms < 20000) {
        sleep_ms(10);
        waited_ms += 10;
      }
      printf("%s\n", now.st_size > before.st_size ? "report while running" : "no report");
    }
    printf("pid %d\n", (int)getpid());
  } else if (!strcmp(mode, "_exit")) {
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    _exit(0);
  } else if (!strcmp(mode, "pthread-exit")) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) die("pthread_create");
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    pthread_exit(NULL);
  } else if (!strcmp(mode, "fork")) {
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      allocate();
      raise(SIGUSR2);
      exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) != child) die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "stats_report: child status %d\n", status);
      return 1;
    }
    if (chdir("/") != 0) die("chdir");
    raise(SIGUSR2);
    sleep_ms(20);
    printf("parent %d child %d\n", (int)getpid(), (int)child);
  } else if (!strcmp(mode, "epipe")) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    close(p[0]); /* no reader from the start */
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      dup2(p[1], 2);
      close(p[1]);
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      execl("/proc/self/exe", argv[0], "plain", (char *)NULL);
      _exit(127);
    }
    close(p[1]);
    int status;
    if (waitpid(child, &status, 0) != child) die("waitpid");
    printf("status %d\n", status);
  } else {
    fprintf(stderr, "stats_report: unknown mode %s\n", mode);
    return 2;
  }
  for (int i = 0; i < NLIVE / 2; i++)
    RELEASE(live[i]);
  return 0;
}
