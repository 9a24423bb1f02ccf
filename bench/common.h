/* common.h — helpers shared by the benchmark workloads (header-only, every function static).
 *
 * Every workload is a plain C11 + pthreads program that uses only the standard malloc API, so
 * bench/run.sh can swap the allocator under test in with LD_PRELOAD.  The rules they follow:
 *   - argv[1] is an optional scale factor (default 1.0) that multiplies the amount of work;
 *   - all randomness comes from rng_t with fixed seeds, so the work never depends on timing;
 *   - the program prints "checksum <16 hex digits>" computed from the *contents* of blocks,
 *     never from addresses, so every allocator must print the same value (run.sh checks);
 *     multi-threaded workloads combine per-thread results with a commutative sum;
 *   - an allocation failure or a corrupted block ends the program with exit status 3.
 * Include this header first: it sets the POSIX feature level.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- deterministic random numbers (xorshift64*, seeded through splitmix64) --------------- */

typedef struct rng_s {
  uint64_t state; /* never 0 */
} rng_t;

static inline rng_t rng_make(uint64_t seed) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  rng_t r = {z ? z : 1};
  return r;
}

static inline uint64_t rng_next(rng_t *r) {
  uint64_t x = r->state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->state = x;
  return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform in [0, n), n > 0 (the tiny modulo bias does not matter here). */
static inline size_t rng_below(rng_t *r, size_t n) {
  return (size_t)(rng_next(r) % n);
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi) {
  return lo + rng_below(r, hi - lo + 1);
}

/* Log-uniform in [lo, hi] (lo >= 1): as many requests between 1 and 2 KiB as between
 * 32 and 64 KiB, which is closer to real size distributions than a uniform draw. */
static inline size_t rng_log_range(rng_t *r, size_t lo, size_t hi) {
  size_t lo_bits = 0, hi_bits = 0;
  while (((size_t)2 << lo_bits) <= lo)
    lo_bits++;
  while (((size_t)2 << hi_bits) <= hi)
    hi_bits++;
  size_t bits = rng_range(r, lo_bits, hi_bits); /* pick a power-of-two bucket */
  size_t base = (size_t)1 << bits;
  size_t size = base + rng_below(r, base);
  if (size < lo) size = lo;
  if (size > hi) size = hi;
  return size;
}

/* The size mix most workloads use: mostly small (8..512 B, skewed to the low end), some
 * medium (513 B..64 KiB), a few large (64 KiB..max_large; 0 = none). */
static inline size_t rng_mixed_size(rng_t *r, size_t max_large) {
  uint64_t p = rng_below(r, 1000);
  if (p < 550) return rng_range(r, 8, 64);
  if (p < 880) return rng_range(r, 65, 512);
  if (p < 995 || max_large == 0) return rng_log_range(r, 513, 64 * 1024);
  return rng_log_range(r, 64 * 1024 + 1, max_large);
}

/* ---- arguments ----------------------------------------------------------------------------- */

/* The scale factor from argv[1] (default 1.0); exits with status 2 on a bad argument. */
static inline double bench_scale(int argc, char **argv) {
  if (argc < 2) return 1.0;
  char *end = NULL;
  errno = 0;
  double s = strtod(argv[1], &end);
  if (errno != 0 || end == argv[1] || *end != '\0' || !(s > 0.0) || s > 1e6) {
    fprintf(stderr, "%s: scale must be a positive number, not '%s'\n", argv[0], argv[1]);
    exit(2);
  }
  return s;
}

/* base * scale, at least 1. */
static inline size_t scaled(size_t base, double scale) {
  double v = (double)base * scale;
  return v < 1.0 ? 1 : (size_t)v;
}

/* ---- checking and checksums ---------------------------------------------------------------- */

static inline void bench_fail(const char *what) {
  fprintf(stderr, "bench: %s\n", what);
  exit(3);
}

static inline void *xmalloc(size_t size) {
  void *p = malloc(size);
  if (p == NULL) bench_fail("malloc returned NULL");
  return p;
}

static inline uint64_t mix64(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0x100000001b3ULL;
}

/* Writes a tag into the first 8 bytes and the last byte of a block of `size` bytes (size >= 8),
 * as a program initialising a header and a trailer would. */
static inline void tag_block(void *p, size_t size, uint64_t tag) {
  memcpy(p, &tag, sizeof tag);
  ((unsigned char *)p)[size - 1] = (unsigned char)tag;
}

/* Reads the tag back and checks both ends; a mismatch means the allocator corrupted memory. */
static inline uint64_t check_block(const void *p, size_t size) {
  uint64_t tag;
  memcpy(&tag, p, sizeof tag);
  if (((const unsigned char *)p)[size - 1] != (unsigned char)tag)
    bench_fail("block contents changed while it was allocated");
  return tag;
}

/* Keeps the compiler from removing a malloc/free pair whose block is otherwise unused. */
static inline void *escape(void *p) {
#if defined(__GNUC__)
  __asm__ volatile("" : : "r"(p) : "memory");
#endif
  return p;
}

static inline void print_checksum(uint64_t h) {
  printf("checksum %016llx\n", (unsigned long long)h);
}

static inline double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif /* BENCH_COMMON_H */
