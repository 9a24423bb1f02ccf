/* measure.c — runs one command and reports its wall time, CPU time and peak RSS.
 *
 * bench_measure [-p PRELOAD] [-t TIMEOUT_SECONDS] [-o RESULT_FILE] -- COMMAND [ARG...]
 *
 * Forks, sets LD_PRELOAD=PRELOAD in the child only (so this program and the shell that
 * started it keep the system allocator), execs COMMAND and waits for it with wait4(), whose
 * rusage gives the child's own peak resident set (ru_maxrss) and CPU times.  The wall time
 * runs from just before fork to the child's exit.  A child still running after the timeout
 * (default 300 s) is killed with SIGKILL.  The child's stdin is /dev/null; its stdout and
 * stderr are this program's.
 *
 * Appends one line to RESULT_FILE (default: stderr):
 *   status <ok|exit:N|signal:N|timeout> wall <s> user <s> sys <s> maxrss_kb <KiB>
 * Exit status: 0 when the child exited with 0, 1 when it did not, 2 for bad usage or when
 * the command could not be started.
 */
#define _GNU_SOURCE /* wait4 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(const char *why) {
  fprintf(stderr,
          "bench_measure: %s\n"
          "usage: bench_measure [-p PRELOAD] [-t TIMEOUT_SECONDS] [-o RESULT_FILE] -- COMMAND "
          "[ARG...]\n",
          why);
  exit(2);
}

static double seconds_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) * 1e-9;
}

static double timeval_seconds(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
  const char *preload = NULL, *result_path = NULL;
  double timeout = 300.0;
  int opt;
  while ((opt = getopt(argc, argv, "+p:t:o:")) != -1) {
    switch (opt) {
    case 'p':
      preload = optarg;
      break;
    case 't': {
      char *end = NULL;
      timeout = strtod(optarg, &end);
      if (end == optarg || *end != '\0' || !(timeout > 0.0))
        usage("-t needs a positive number of seconds");
      break;
    }
    case 'o':
      result_path = optarg;
      break;
    default:
      usage("unknown option");
    }
  }
  if (optind < argc && strcmp(argv[optind], "--") == 0) optind++;
  if (optind >= argc) usage("no command given");

  /* SIGCHLD stays blocked so sigtimedwait() can wait for it with a timeout. */
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);

  int exec_pipe[2]; /* the child writes errno here if exec fails; closed on exec */
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
    perror("bench_measure: pipe");
    return 2;
  }

  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  pid_t pid = fork();
  if (pid < 0) {
    perror("bench_measure: fork");
    return 2;
  }
  if (pid == 0) {
    close(exec_pipe[0]);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
      dup2(devnull, 0);
      close(devnull);
    }
    if (preload != NULL && preload[0] != '\0') setenv("LD_PRELOAD", preload, 1);
    execvp(argv[optind], &argv[optind]);
    int err = errno;
    ssize_t unused = write(exec_pipe[1], &err, sizeof err);
    (void)unused;
    _exit(127);
  }
  close(exec_pipe[1]);
  int exec_errno = 0;
  if (read(exec_pipe[0], &exec_errno, sizeof exec_errno) == (ssize_t)sizeof exec_errno) {
    fprintf(stderr, "bench_measure: cannot run %s: %s\n", argv[optind], strerror(exec_errno));
    waitpid(pid, NULL, 0);
    return 2;
  }
  close(exec_pipe[0]);

  int timed_out = 0, status = 0;
  struct rusage usage_info;
  for (;;) {
    pid_t done = wait4(pid, &status, WNOHANG, &usage_info);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      perror("bench_measure: wait4");
      return 2;
    }
    double left = timeout - seconds_since(&start);
    if (left <= 0.0) {
      kill(pid, SIGKILL);
      timed_out = 1;
      while (wait4(pid, &status, 0, &usage_info) < 0 && errno == EINTR) {
      }
      break;
    }
    struct timespec wait_for = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
    sigtimedwait(&chld, NULL, &wait_for); /* a SIGCHLD, a timeout or EINTR: check again */
  }
  double wall = seconds_since(&start);

  char what[32];
  if (timed_out)
    snprintf(what, sizeof what, "timeout");
  else if (WIFSIGNALED(status))
    snprintf(what, sizeof what, "signal:%d", WTERMSIG(status));
  else if (WEXITSTATUS(status) != 0)
    snprintf(what, sizeof what, "exit:%d", WEXITSTATUS(status));
  else
    snprintf(what, sizeof what, "ok");

  FILE *out = stderr;
  if (result_path != NULL) {
    out = fopen(result_path, "a");
    if (out == NULL) {
      fprintf(stderr, "bench_measure: cannot open %s: %s\n", result_path, strerror(errno));
      return 2;
    }
  }
  fprintf(out, "status %s wall %.6f user %.6f sys %.6f maxrss_kb %ld\n", what, wall,
          timeval_seconds(usage_info.ru_utime), timeval_seconds(usage_info.ru_stime),
          usage_info.ru_maxrss);
  if (out != stderr) fclose(out);
  return strcmp(what, "ok") == 0 ? 0 : 1;
}
