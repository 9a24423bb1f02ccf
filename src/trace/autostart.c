/* autostart.c — tracing from a program's start: OBMEM_TRACE=PATH (what `obmem run` sets).
 *
 * A library constructor starts the tracer into PATH (%p: the pid) with obm_trace_start, as
 * any program may at run time, with OBMEM_TRACE_SAMPLE=BYTES for sampled mode,
 * OBMEM_TRACE_COMPRESS=LEVEL (zstd, 0 = none) and OBMEM_TRACE_STACKS=auto|fp|unwind|none, and a
 * destructor stops it at exit, after the program's own exit handlers.  Allocations made before the
 * constructor runs (by ld.so and earlier constructors) are not recorded, nor are their frees.  A
 * forked child starts its own capture when PATH has %p (trace.c); a program started by exec reads
 * the variables again and traces into its own PATH.  Without %p a second process would write the
 * first one's capture: this one takes OBMEM_TRACE out of its environment, so that the programs it
 * starts do not trace, and a program that gets the variable anyway (from a shell, which passes on
 * its own copy of the environment) finds the file locked (obm_trace_start: EWOULDBLOCK) and
 * says so instead of tracing.  With OBMEM_DEBUG nothing is recorded (debug blocks have their own
 * format).  OBMEM_TEST_TRACE_PARTS=dispatch|events leaves parts of exact mode out, for the
 * benchmark's decomposition of its cost (trace_internal.h, _obm_trace_test_parts).
 * Only in shared libraries: a static link does not pull this file in.
 */
#define _GNU_SOURCE
#include "obmem/trace.h"
#include "trace/trace_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* OBMEM_TRACE_SAMPLE, OBMEM_TRACE_COMPRESS and OBMEM_TRACE_STACKS into *o; a bad value is
 * named and ignored. */
static void options_from_environment(obm_trace_options_t *o) {
  const char *sample = getenv("OBMEM_TRACE_SAMPLE");
  if (sample && *sample) {
    char *end = NULL;
    errno = 0;
    unsigned long long mean = strtoull(sample, &end, 10);
    if (errno || end == sample || *end || mean == 0)
      _obm_warning("OBMEM_TRACE_SAMPLE=%s is not a positive number of bytes; tracing every "
                   "allocation",
                   sample);
    else {
      o->mode = OBM_TRACE_SAMPLED;
      o->sample_mean_bytes = mean;
    }
  }
  const char *level = getenv("OBMEM_TRACE_COMPRESS");
  if (level && *level) {
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(level, &end, 10);
    if (errno || end == level || *end || v > 19)
      _obm_warning("OBMEM_TRACE_COMPRESS=%s is not a zstd level from 0 (none) to 19; using %u",
                   level, o->compress_level);
    else
      o->compress_level = (uint32_t)v;
  }
  const char *stacks = getenv("OBMEM_TRACE_STACKS");
  if (stacks && *stacks) {
    static const char *const names[] = {"auto", "fp", "unwind", "none"};
    int found = 0;
    for (int i = 0; i < 4; i++)
      if (strcmp(stacks, names[i]) == 0) {
        o->stacks = (obm_trace_stacks_t)i;
        found = 1;
      }
    if (!found)
      _obm_warning("OBMEM_TRACE_STACKS=%s is not auto, fp, unwind or none; using auto", stacks);
  }
  const char *parts = getenv("OBMEM_TEST_TRACE_PARTS");
  if (parts && *parts) {
    if (strcmp(parts, "dispatch") == 0)
      _obm_trace_test_parts(OBM_TRACE_PARTS_DISPATCH);
    else if (strcmp(parts, "events") == 0)
      _obm_trace_test_parts(OBM_TRACE_PARTS_EVENTS);
    else
      _obm_warning("OBMEM_TEST_TRACE_PARTS=%s is not dispatch or events; tracing whole", parts);
  }
}

static int started;

__attribute__((constructor)) static void trace_from_start(void) {
  const char *path = _obm_option_string(OBM_STRING_OPTION_TRACE);
  if (path == NULL) return;
  if (!strstr(path, "%p")) unsetenv("OBMEM_TRACE");
  obm_trace_options_t options;
  obm_trace_options_init(&options);
  options_from_environment(&options);
  int err = obm_trace_start(path, &options);
  if (err == EWOULDBLOCK)
    _obm_warning("OBMEM_TRACE=%s: not tracing this process (pid %d): another process is writing "
                 "that capture; put %%p in the path for one capture per process",
                 path, (int)getpid());
  else if (err)
    _obm_warning("OBMEM_TRACE=%s: cannot trace: %s", path, strerror(err));
  else
    started = 1;
}

/* A forked child that started its own capture stops it here too (started is inherited). */
__attribute__((destructor)) static void trace_until_exit(void) {
  if (started) obm_trace_stop(); /* EINVAL when it was not running: nothing to do */
}
