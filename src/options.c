/* options.c — the table of runtime options, read once from OBMEM_* environment variables.
 * Numeric options in one table (the public obm_option_t), text options (paths) in a second
 * one, copied at reading.  An unknown OBMEM_ variable, or a value that is not a number, gets
 * a warning naming it.
 * Reading uses no allocation (it may run inside the first malloc of a process).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

typedef struct option_desc_s {
  const char *name;
  long default_value;
  long min, max;
  const char *help;
} option_desc_t;

/* The README's option table mirrors this one. */
static const option_desc_t option_table[OBM_OPTION_COUNT] = {
    [OBM_OPTION_STATS] = {"OBMEM_STATS", 0, 0, 2, "print statistics at exit: 1 text, 2 JSON"},
    [OBM_OPTION_STATS_SIGNAL] = {"OBMEM_STATS_SIGNAL", 0, 0, 64,
                                 "print statistics on a signal: 1 SIGUSR2, n > 1 signal n"},
    [OBM_OPTION_DEBUG] = {"OBMEM_DEBUG", OBM_DEBUG_DEFAULT, 0, 1,
                          "guard bytes, fill patterns and serials around every block"},
    [OBM_OPTION_ARENA_SPARE] = {"OBMEM_ARENA_SPARE", 1, 0, 1024,
                                "empty 1 MiB arenas kept mapped for reuse"},
    [OBM_OPTION_LARGE_CACHE_MB] = {"OBMEM_LARGE_CACHE_MB", 64, 0, 1 << 20,
                                   "MiB of freed large blocks kept mapped for reuse"},
    [OBM_OPTION_VERBOSE] = {"OBMEM_VERBOSE", 0, 0, 2, "warn about OS failures"},
    [OBM_OPTION_PURGE_DELAY_MS] = {"OBMEM_PURGE_DELAY_MS", 10, 0, 1000000,
                                   "ms before free pool slots, empty arenas (and, 10x, cached "
                                   "large blocks) go back to the OS"},
    [OBM_OPTION_PURGE_THREAD] = {"OBMEM_PURGE_THREAD", 1, 0, 1,
                                 "a thread purges on schedule while the program does not "
                                 "allocate"},
};

/* Options with a text value (a path): copied at reading, so that a later setenv or
 * clearenv of the program does not change them, and read with secure_getenv: a set-user-ID
 * program does not write where its caller's environment says (as glibc's MALLOC_TRACE). */
static const char *const string_option_names[OBM_STRING_OPTION_COUNT] = {
    [OBM_STRING_OPTION_STATS_FILE] = "OBMEM_STATS_FILE",
    [OBM_STRING_OPTION_TRACE] = "OBMEM_TRACE",
};
enum { STRING_OPTION_MAX = 4096 }; /* bytes with the final 0, like PATH_MAX */
static char string_options[OBM_STRING_OPTION_COUNT][STRING_OPTION_MAX];

/* Names other layers and front ends read themselves (no warning for them). */
static const char *const other_known[] = {
    "OBMEM_PYTHON",         "OBMEM_TRACE_SAMPLE", "OBMEM_TRACE_STACKS",
    "OBMEM_TRACE_COMPRESS", "OBMEM_OUTPUT",       NULL,
};

long _obm_options[OBM_OPTION_COUNT];
static int options_read; /* 0 unread, 1 being read, 2 read */

long obm_option_get(obm_option_t option) {
  _obm_options_init();
  if ((unsigned)option >= OBM_OPTION_COUNT) return 0;
  return _obm_options[option];
}

const char *obm_option_name(obm_option_t option) {
  if ((unsigned)option >= OBM_OPTION_COUNT) return NULL;
  return option_table[option].name;
}

const char *_obm_option_string(obm_string_option_t option) {
  _obm_options_init();
  if ((unsigned)option >= OBM_STRING_OPTION_COUNT || !string_options[option][0]) return NULL;
  return string_options[option];
}

static int parse_long(const char *s, long *out) {
  if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) return *out = 1, 1;
  if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) return *out = 0, 1;
  if (!strcmp(s, "json")) return *out = 2, 1;
  long v = 0;
  int neg = 0;
  if (*s == '-') neg = 1, s++;
  if (!*s) return 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return 0;
    if (v > (1L << 40)) return 0;
    v = v * 10 + (*s - '0');
  }
  *out = neg ? -v : v;
  return 1;
}

void _obm_options_init(void) {
  if (__atomic_load_n(&options_read, __ATOMIC_ACQUIRE) == 2) return;
  int expected = 0;
  if (!__atomic_compare_exchange_n(&options_read, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(&options_read, __ATOMIC_ACQUIRE) != 2)
      sched_yield();
    return;
  }
  for (int i = 0; i < OBM_OPTION_COUNT; i++) {
    const option_desc_t *d = &option_table[i];
    long v = d->default_value;
    const char *s = getenv(d->name);
    if (s && *s) {
      long parsed;
      if (!parse_long(s, &parsed)) {
        _obm_warning("%s=%s is not a number; using %ld", d->name, s, v);
      } else if (parsed < d->min || parsed > d->max) {
        _obm_warning("%s=%s is outside %ld..%ld; using %ld", d->name, s, d->min, d->max, v);
      } else {
        v = parsed;
      }
    }
    _obm_options[i] = v;
  }
  for (int i = 0; i < OBM_STRING_OPTION_COUNT; i++) {
    const char *s = secure_getenv(string_option_names[i]);
    if (!s || !*s) continue;
    size_t len = strlen(s);
    if (len >= STRING_OPTION_MAX)
      _obm_warning("%s is longer than %d bytes; ignored", string_option_names[i],
                   STRING_OPTION_MAX - 1);
    else
      memcpy(string_options[i], s, len + 1);
  }
  extern char **environ;
  for (char **e = environ; e && *e; e++) {
    if (strncmp(*e, "OBMEM_", 6) != 0) continue;
    if (strncmp(*e, "OBMEM_TEST_", 11) == 0) continue; /* the test suite's own settings */
    size_t len = strcspn(*e, "=");
    int known = 0;
    for (int i = 0; i < OBM_OPTION_COUNT && !known; i++)
      known = strlen(option_table[i].name) == len && !strncmp(*e, option_table[i].name, len);
    for (int i = 0; i < OBM_STRING_OPTION_COUNT && !known; i++)
      known = strlen(string_option_names[i]) == len && !strncmp(*e, string_option_names[i], len);
    for (int i = 0; other_known[i] && !known; i++)
      known = strlen(other_known[i]) == len && !strncmp(*e, other_known[i], len);
    if (!known) {
      char name[64];
      size_t n = len < sizeof name - 1 ? len : sizeof name - 1;
      memcpy(name, *e, n);
      name[n] = 0;
      _obm_warning("unknown option %s ignored (see the README's option table)", name);
    }
  }
  __atomic_store_n(&options_read, 2, __ATOMIC_RELEASE);
}
