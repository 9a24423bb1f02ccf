/* trace_fork_target.c — a process tree for `obmem run` (test_trace fork): the parent leaks 7
 * blocks of 7001 bytes, a forked child 5 of 5003, and a forked child that execs this program
 * again ("exec") 3 of 3001; each prints its role and pid ("pid ROLE N") so that the test finds
 * each process's capture (a path with %p) and checks that it holds its own blocks only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) static void leak(int n, size_t size) {
  for (int i = 0; i < n; i++) {
    char *p = malloc(size);
    memset(p, 1, size);
    sink = p;
  }
}

static void say(const char *role) {
  printf("pid %s %d\n", role, (int)getpid());
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "exec") == 0) {
    leak(3, 3001);
    say("exec");
    return 0;
  }
  leak(7, 7001);
  say("parent");
  pid_t a = fork();
  if (a == 0) {
    leak(5, 5003);
    say("fork");
    exit(0); /* exit handlers: the child's capture is stopped and complete */
  }
  pid_t b = fork();
  if (b == 0) {
    execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
    _exit(3);
  }
  int status_a = 0, status_b = 0;
  waitpid(a, &status_a, 0);
  waitpid(b, &status_b, 0);
  return WIFEXITED(status_a) && WEXITSTATUS(status_a) == 0 && WIFEXITED(status_b) &&
                 WEXITSTATUS(status_b) == 0
             ? 0
             : 1;
}
