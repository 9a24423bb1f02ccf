/* main.c — the obmem command: `obmem report|diff|run|exec|help`.
 *
 * Each command parses its own options (every one has --help); an unknown option or a bad
 * value is named in the message and exits with status 2, as does a capture the reader
 * refuses (its message names the file and the offset).  `run` and `exec` start a program with
 * libobmem-preload.so in LD_PRELOAD; `run` also sets OBMEM_TRACE (docs/tracer.md), which makes
 * the preload library start tracing from its constructor (src/trace/autostart.c).
 */
#define _GNU_SOURCE
#include "obmem_tool.h"

#include <errno.h>
#include <obmem.h>
#include <obmem/trace.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef OBMEM_PRELOAD_PATH
#define OBMEM_PRELOAD_PATH "libobmem-preload.so"
#endif
#ifndef OBMEM_PYTHON_PATH
#define OBMEM_PYTHON_PATH "python3"
#endif

static const char usage_main[] =
    "usage: obmem COMMAND [OPTIONS] ...\n"
    "\n"
    "See where memory goes.  Commands:\n"
    "  report FILE        summary of a capture: peak and when, totals, leaks, temporary\n"
    "                     allocations, top sites, size histogram (--json for machines)\n"
    "  diff A B           compare two captures by allocation site\n"
    "  run -- PROG ARGS   run PROG on obmem with the tracer: every allocation and free,\n"
    "                     with its stack, into a capture file\n"
    "  run script.py ARGS the same for a Python program, with its Python stacks\n"
    "  exec -- PROG ARGS  run PROG on obmem (LD_PRELOAD of libobmem-preload.so), untraced\n"
    "  help [COMMAND]     this text, or a command's\n"
    "\n"
    "Every command takes --help.  Exit status: 0 done, 1 a budget was exceeded (run), 2 bad\n"
    "input (an unknown option, a missing or damaged capture).\n";

static const char usage_report[] =
    "usage: obmem report [--json] [--top N] [--salvage] [--no-progress] FILE\n"
    "\n"
    "Reads the capture FILE and prints: the peak of live bytes and when it happened, the total\n"
    "allocated, the number of allocations, what was still live at exit (leaks), temporary\n"
    "allocations (freed by their thread before it allocated again), the top sites by bytes at\n"
    "the peak, by total bytes, by count, by leaks, and a size histogram.  A site is the\n"
    "innermost frame outside the allocator, shown as function (file:line) when the program has\n"
    "debug information.\n"
    "\n"
    "  --json         one JSON object instead of the text\n"
    "  --top N        rows per table (default 10)\n"
    "  --salvage      read a capture whose last block is incomplete (a program killed while\n"
    "                 writing) up to that block instead of refusing it\n"
    "  --no-progress  no progress line on a terminal\n";

static const char usage_diff[] =
    "usage: obmem diff [--json] [--top N] [--salvage] A B\n"
    "\n"
    "Compares two captures by allocation site: peak, total and leaked bytes of each, then the\n"
    "sites whose total bytes changed most (sites present in only one capture included).\n";

static const char usage_run[] =
    "usage: obmem run [-o FILE] [--sample BYTES] [--native] [--max-peak SIZE]\n"
    "                 [--max-leak SIZE] -- PROG [ARGS...]\n"
    "       obmem run [OPTIONS] script.py [ARGS...]     (or -m MODULE [ARGS...])\n"
    "\n"
    "Runs PROG with libobmem-preload.so in LD_PRELOAD and OBMEM_TRACE=FILE in its environment\n"
    "(default obmem-%p.cap in the current directory; %p becomes each process's pid), then\n"
    "prints where the capture went.  A PROG ending in .py (or -m MODULE) is a Python program:\n"
    "it runs as `python3 -m obmem run` (the CPython module: CPython's allocations with their\n"
    "Python stacks, function (file:line)); OBMEM_PYTHON_EXECUTABLE names the interpreter.\n"
    "  -o FILE          the capture path (OBMEM_TRACE)\n"
    "  --sample BYTES   sampled mode, one sample per BYTES on average (OBMEM_TRACE_SAMPLE);\n"
    "                   sizes take K, M, G suffixes\n"
    "  --native         record native stacks (the default for PROG, OBMEM_TRACE_STACKS=auto;\n"
    "                   for Python, C frames merged with the Python frames)\n"
    "  --max-peak SIZE  exit 1 with a message when the peak exceeds SIZE\n"
    "  --max-leak SIZE  exit 1 with a message when more than SIZE is live at exit\n"
    "The preload library is OBMEM_PRELOAD_LIBRARY if set, else the one this obmem was built "
    "with.\n";

static const char usage_exec[] =
    "usage: obmem exec -- PROG [ARGS...]\n"
    "\n"
    "Runs PROG with libobmem-preload.so in LD_PRELOAD (every malloc on obmem), untraced.\n";

static int bad_usage(const char *command, const char *fmt, const char *arg) {
  fprintf(stderr, "obmem %s: ", command);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (obmem %s --help)\n", command);
  return TOOL_EXIT_BAD_INPUT;
}

static int parse_size(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *s == '-') return -1;
  uint64_t m = 1;
  if (*end == 'k' || *end == 'K')
    m = 1024, end++;
  else if (*end == 'm' || *end == 'M')
    m = 1024 * 1024, end++;
  else if (*end == 'g' || *end == 'G')
    m = 1024ull * 1024 * 1024, end++;
  if ((*end == 'i' || *end == 'I') && m > 1) end++;
  if (*end == 'b' || *end == 'B') end++;
  if (*end) return -1;
  *out = v * m;
  return 0;
}

/* Parses report/diff options; returns the index of the first operand or -1 (message printed). */
static int parse_report_options(const char *command, int argc, char **argv, tool_options_t *o,
                                int *help) {
  o->top = 10;
  o->progress = isatty(2);
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) return i + 1;
    if (a[0] != '-' || a[1] == 0) break;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      *help = 1;
    else if (strcmp(a, "--json") == 0)
      o->json = 1;
    else if (strcmp(a, "--salvage") == 0)
      o->salvage = 1;
    else if (strcmp(a, "--no-progress") == 0)
      o->progress = 0;
    else if (strcmp(a, "--top") == 0 || strncmp(a, "--top=", 6) == 0) {
      const char *v = a[5] == '=' ? a + 6 : (i + 1 < argc ? argv[++i] : NULL);
      char *end;
      long n = v ? strtol(v, &end, 10) : 0;
      if (!v || *end || n <= 0 || n > 1000000) {
        bad_usage(command, "--top needs a positive number, not '%s'", v ? v : "");
        return -1;
      }
      o->top = (int)n;
    } else {
      bad_usage(command, "unknown option '%s'", a);
      return -1;
    }
  }
  return i;
}

static int cmd_report(int argc, char **argv) {
  tool_options_t o = {0};
  int help = 0, first = parse_report_options("report", argc, argv, &o, &help);
  if (first < 0) return TOOL_EXIT_BAD_INPUT;
  if (help) {
    fputs(usage_report, stdout);
    return 0;
  }
  if (first != argc - 1)
    return bad_usage("report", "%s", first >= argc ? "needs one capture FILE" : "takes one FILE");
  if (o.json) o.progress = 0;
  tool_report_t r;
  int st = tool_analyse(argv[first], &o, &r);
  if (st) return st;
  tool_report_print(stdout, &r, &o);
  tool_report_free(&r);
  return 0;
}

static int cmd_diff(int argc, char **argv) {
  tool_options_t o = {0};
  int help = 0, first = parse_report_options("diff", argc, argv, &o, &help);
  if (first < 0) return TOOL_EXIT_BAD_INPUT;
  if (help) {
    fputs(usage_diff, stdout);
    return 0;
  }
  if (first != argc - 2) return bad_usage("diff", "%s", "needs two captures, A and B");
  tool_report_t a, b;
  int st = tool_analyse(argv[first], &o, &a);
  if (st) return st;
  st = tool_analyse(argv[first + 1], &o, &b);
  if (st) {
    tool_report_free(&a);
    return st;
  }
  tool_diff_print(stdout, &a, &b, &o);
  tool_report_free(&a);
  tool_report_free(&b);
  return 0;
}

static const char *preload_library(void) {
  const char *p = getenv("OBMEM_PRELOAD_LIBRARY");
  return p && *p ? p : OBMEM_PRELOAD_PATH;
}

static int set_preload(const char *command) {
  const char *lib = preload_library();
  if (access(lib, R_OK) != 0) {
    fprintf(stderr, "obmem %s: the preload library %s: %s (set OBMEM_PRELOAD_LIBRARY)\n", command,
            lib, strerror(errno));
    return TOOL_EXIT_BAD_INPUT;
  }
  const char *old = getenv("LD_PRELOAD");
  char *value;
  if (asprintf(&value, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "") < 0)
    return TOOL_EXIT_BAD_INPUT;
  setenv("LD_PRELOAD", value, 1);
  free(value);
  return 0;
}

static int cmd_exec(int argc, char **argv) {
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(usage_exec, stdout);
      return 0;
    }
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    }
    if (argv[i][0] == '-') return bad_usage("exec", "unknown option '%s'", argv[i]);
    break;
  }
  if (i >= argc) return bad_usage("exec", "%s", "needs a program to run");
  int st = set_preload("exec");
  if (st) return st;
  execvp(argv[i], argv + i);
  fprintf(stderr, "obmem exec: %s: %s\n", argv[i], strerror(errno));
  return 127;
}

static int cmd_run(int argc, char **argv) {
  const char *out = "obmem-%p.cap";
  uint64_t sample = 0, max_peak = 0, max_leak = 0;
  int have_peak = 0, have_leak = 0, native = 0, python_module = 0, i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_run, stdout);
      return 0;
    }
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (a[0] != '-') break;
    if (strcmp(a, "--native") == 0) {
      native = 1;
      continue;
    }
    if (strcmp(a, "-m") == 0) { /* a Python module: -m MODULE ARGS */
      python_module = 1;
      break;
    }
    int takes = strcmp(a, "-o") == 0 || strcmp(a, "--sample") == 0 ||
                strcmp(a, "--max-peak") == 0 || strcmp(a, "--max-leak") == 0;
    if (!takes) return bad_usage("run", "unknown option '%s'", a);
    if (i + 1 >= argc) return bad_usage("run", "%s needs a value", a);
    const char *v = argv[++i];
    if (strcmp(a, "-o") == 0) {
      out = v;
      continue;
    }
    uint64_t *dst = strcmp(a, "--sample") == 0     ? &sample
                    : strcmp(a, "--max-peak") == 0 ? &max_peak
                                                   : &max_leak;
    if (parse_size(v, dst) != 0 || (dst == &sample && sample == 0))
      return bad_usage("run", "bad size '%s' (bytes, or with K, M, G)", v);
    have_peak |= dst == &max_peak;
    have_leak |= dst == &max_leak;
  }
  if (i >= argc) return bad_usage("run", "%s", "needs a program to run (obmem run -- PROG ARGS)");
  if (python_module && i + 1 >= argc) return bad_usage("run", "%s", "-m needs a module name");
  size_t len = strlen(argv[i]);
  int python = python_module || (len > 3 && strcmp(argv[i] + len - 3, ".py") == 0);
  char **child = argv + i;
  char sample_text[32];
  snprintf(sample_text, sizeof sample_text, "%llu", (unsigned long long)sample);
  if (python) {
    /* python3 -m obmem run -o OUT [--native] [--sample N] -- script.py ARGS (the budgets are
     * checked here, from the capture, as for any program) */
    const char *interpreter = getenv("OBMEM_PYTHON_EXECUTABLE");
    if (!interpreter || !*interpreter) interpreter = OBMEM_PYTHON_PATH;
    child = calloc((size_t)(argc - i) + 12, sizeof *child);
    if (!child) return TOOL_EXIT_BAD_INPUT;
    size_t k = 0;
    child[k++] = (char *)interpreter;
    child[k++] = "-m";
    child[k++] = "obmem";
    child[k++] = "run";
    child[k++] = "-o";
    child[k++] = (char *)out;
    if (native) child[k++] = "--native";
    if (sample) {
      child[k++] = "--sample";
      child[k++] = sample_text;
    }
    if (!python_module) child[k++] = "--";
    for (int j = i; j < argc; j++)
      child[k++] = argv[j];
#ifdef OBMEM_PYTHON_MODULE_DIR
    const char *old = getenv("PYTHONPATH");
    char *value;
    if (asprintf(&value, "%s%s%s", OBMEM_PYTHON_MODULE_DIR, old && *old ? ":" : "",
                 old && *old ? old : "") < 0)
      return TOOL_EXIT_BAD_INPUT;
    setenv("PYTHONPATH", value, 1);
    free(value);
#endif
  } else {
    int st = set_preload("run");
    if (st) return st;
    setenv("OBMEM_TRACE", out, 1);
    if (sample) setenv("OBMEM_TRACE_SAMPLE", sample_text, 1);
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "obmem run: fork: %s\n", strerror(errno));
    return TOOL_EXIT_BAD_INPUT;
  }
  if (pid == 0) {
    execvp(child[0], child);
    fprintf(stderr, "obmem run: %s: %s\n", child[0], strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  /* the capture of the process we started (children write their own, by pid) */
  char path[4096];
  size_t n = 0;
  for (const char *s = out; *s && n + 24 < sizeof path; s++) {
    if (s[0] == '%' && s[1] == 'p') {
      n += (size_t)snprintf(path + n, sizeof path - n, "%d", (int)pid);
      s++;
    } else {
      path[n++] = *s;
    }
  }
  path[n] = 0;
  struct stat sb;
  if (python) free(child);
  if (stat(path, &sb) != 0) {
    fprintf(stderr, "obmem run: no capture at %s (%s)\n", path,
            python ? "see the Python program's messages above"
                   : "the program was not dynamically linked, or it failed before its first "
                     "allocation, or OBMEM_DEBUG was set");
    return code;
  }
  if (!python) /* python -m obmem run said it already */
    fprintf(stderr, "obmem run: capture written to %s (obmem report %s)\n", path, path);
  if (have_peak || have_leak) {
    tool_options_t o = {.top = 10};
    tool_report_t r;
    int st = tool_analyse(path, &o, &r);
    if (st) return st;
    int over = 0;
    if (have_peak && r.peak_bytes > (double)max_peak) {
      fprintf(stderr, "obmem run: peak %.0f bytes exceeds --max-peak %llu\n", r.peak_bytes,
              (unsigned long long)max_peak);
      over = 1;
    }
    if (have_leak && r.leak_bytes > (double)max_leak) {
      fprintf(stderr, "obmem run: %.0f bytes leaked exceeds --max-leak %llu\n", r.leak_bytes,
              (unsigned long long)max_leak);
      over = 1;
    }
    tool_report_free(&r);
    if (over) return 1;
  }
  return code;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_main, stderr);
    return TOOL_EXIT_BAD_INPUT;
  }
  const char *c = argv[1];
  if (strcmp(c, "report") == 0) return cmd_report(argc - 1, argv + 1);
  if (strcmp(c, "diff") == 0) return cmd_diff(argc - 1, argv + 1);
  if (strcmp(c, "run") == 0) return cmd_run(argc - 1, argv + 1);
  if (strcmp(c, "exec") == 0) return cmd_exec(argc - 1, argv + 1);
  if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0 || strcmp(c, "help") == 0) {
    const char *t = argc > 2 ? argv[2] : "";
    fputs(strcmp(t, "report") == 0 ? usage_report
          : strcmp(t, "diff") == 0 ? usage_diff
          : strcmp(t, "run") == 0  ? usage_run
          : strcmp(t, "exec") == 0 ? usage_exec
                                   : usage_main,
          stdout);
    return 0;
  }
  if (strcmp(c, "--version") == 0) {
    printf("obmem %s\n", OBM_VERSION_STRING);
    return 0;
  }
  fprintf(stderr, "obmem: unknown command '%s' (obmem --help)\n", c);
  return TOOL_EXIT_BAD_INPUT;
}
