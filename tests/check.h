/* check.h — the tiny assertion helper shared by obmem's tests.
 *
 * CHECK(cond) counts a pass, or prints file:line, the condition and the test's seed and
 * exits with status 1 (from any thread: _exit, so no other thread runs on after a failure).
 * CHECKF(cond, fmt, ...) adds a printf-style explanation.  check_seed_init() takes the seed
 * from an argument or from OBMEM_TEST_SEED so any failure can be replayed; check_rand() is
 * splitmix64, the same sequence on every machine.  check_done() prints the summary line.
 * Each test is one translation unit, so everything here is static.
 */
#ifndef OBMEM_TESTS_CHECK_H
#define OBMEM_TESTS_CHECK_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t check_seed;            /* printed with every failure */
static const char *check_name = "test"; /* program name for messages */
static atomic_long check_npassed;

static void check_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5), unused));
static void check_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
  fflush(stdout);
  fprintf(stderr, "%s:%d: CHECK failed: %s  [%s seed=%" PRIu64 "]\n", file, line, cond,
          check_name, check_seed);
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    fputs("  ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
  fprintf(stderr, "%ld passed, 1 failed (replay with OBMEM_TEST_SEED=%" PRIu64 ")\n",
          atomic_load(&check_npassed), check_seed);
  fflush(stderr);
  _exit(1);
}

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (__builtin_expect(!(cond), 0))                                                         \
      check_fail(__FILE__, __LINE__, #cond, NULL);                                            \
    atomic_fetch_add_explicit(&check_npassed, 1, memory_order_relaxed);                       \
  } while (0)

#define CHECKF(cond, ...)                                                                     \
  do {                                                                                        \
    if (__builtin_expect(!(cond), 0))                                                         \
      check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                     \
    atomic_fetch_add_explicit(&check_npassed, 1, memory_order_relaxed);                       \
  } while (0)

/* Seed: argv[index] when present and not "-", else $OBMEM_TEST_SEED, else `fallback`.
 * (ctest registrations pass "-" so that OBMEM_TEST_SEED=... ctest replays a failure.) */
static __attribute__((unused)) void check_seed_init(const char *name, int argc, char **argv,
                                                    int index, uint64_t fallback) {
  const char *s = NULL;
  check_name = name;
  if (index > 0 && index < argc && strcmp(argv[index], "-") != 0)
    s = argv[index];
  else
    s = getenv("OBMEM_TEST_SEED");
  check_seed = (s != NULL && *s != '\0') ? strtoull(s, NULL, 0) : fallback;
}

/* A long option from argv[index], else $env, else fallback. */
static __attribute__((unused)) long check_arg_long(int argc, char **argv, int index,
                                                   const char *env, long fallback) {
  const char *s = NULL;
  if (index > 0 && index < argc)
    s = argv[index];
  else if (env != NULL)
    s = getenv(env);
  return (s != NULL && *s != '\0') ? strtol(s, NULL, 0) : fallback;
}

/* Makes sure the environment variable `name` is `value` from the very start of the process:
 * obmem may read its options before main (a constructor), so when it is not already set
 * (or differs and `overwrite`), this sets it and re-executes the program with the same
 * arguments.  Returns only when the variable already had the wanted value. */
static __attribute__((unused)) void check_env_reexec(char **argv, const char *name,
                                                     const char *value, int overwrite) {
  const char *cur = getenv(name);
  if (cur != NULL && (strcmp(cur, value) == 0 || !overwrite))
    return;
  if (setenv(name, value, 1) != 0) {
    perror("setenv");
    _exit(1);
  }
  fflush(NULL);
  execv("/proc/self/exe", argv);
  perror("execv /proc/self/exe");
  _exit(1);
}

/* splitmix64: state advances by a constant, output is well mixed. */
static inline uint64_t check_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t check_rand_below(uint64_t *state, uint64_t n) {
  return check_rand(state) % n;
}

/* The byte a block with this id holds at offset i (never all-zero for a run of bytes). */
static inline unsigned char check_pattern_byte(uint64_t id, size_t i) {
  uint64_t x = (id * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)i * 0x2545F4914F6CDD1Dull);
  return (unsigned char)((x >> 29) ^ (x >> 7) ^ 0x5A);
}

static __attribute__((unused)) int check_done(void) {
  printf("%s: %ld passed, 0 failed (seed=%" PRIu64 ")\n", check_name,
         atomic_load(&check_npassed), check_seed);
  fflush(stdout);
  return 0;
}

#endif /* OBMEM_TESTS_CHECK_H */
