/* test_rss.c — freed memory goes back to the operating system.
 *
 * An integration test (only obmem.h).  The resident set size comes from /proc/self/statm.
 * Phase 1 holds ~600 MiB of small and medium blocks live at once (every page touched, so
 * resident) over two rounds, frees them all and, WITHOUT obm_trim, expects the RSS back within
 * NO_TRIM_SLACK (16 MiB) of the start: every arena that empties goes back to the OS at once
 * except the spare ones (OBMEM_ARENA_SPARE, default 1 = 1 MiB), and the large-block cache is
 * not involved; the rest of the slack covers page-map nodes and heap metadata that obmem keeps
 * for good, and glibc's own small allocations made by stdio.
 * Phase 2 churns 300 MiB of small blocks, then 300 MiB of medium ones, three rounds each
 * (about 1.2 GiB allocated in the phase), checks the same bound, then calls obm_trim(), which
 * also drops the spares: within TRIM_SLACK (8 MiB).
 * Phase 3 does the same with large blocks, whose freed mappings sit in a cache until
 * obm_trim() empties it.
 * The no-trim bound holds only once the purge delay has passed: arenas beyond the spares
 * stay mapped for OBMEM_PURGE_DELAY_MS (default 100 ms) after they empty, so a burst of
 * frees is not followed by a burst of faults.  To keep the test free of timing, it runs with
 * OBMEM_PURGE_DELAY_MS=0 (unless the environment already sets it; main re-executes itself
 * with the variable set, since obmem may read its options before main).
 * The pointer arrays come from mmap, not malloc, so the test's own bookkeeping leaves no
 * resident trace.  Not run under sanitizers (their shadow memory dominates the RSS).
 *
 * Usage: test_rss [SEED]
 */
#include "obmem.h"

#include "check.h"

#include <fcntl.h>
#include <sys/mman.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define NO_TRIM_SLACK (16 * MiB)
#define TRIM_SLACK (8 * MiB)

static void on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(0, "error report code %d at %p: %s", (int)code, address, message);
}

/* Resident bytes; read with plain syscalls so nothing is allocated. */
static size_t rss_bytes(void) {
  char buf[256];
  int fd = open("/proc/self/statm", O_RDONLY);
  CHECK(fd >= 0);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  CHECK(n > 0);
  buf[n] = '\0';
  unsigned long size = 0, resident = 0;
  CHECK(sscanf(buf, "%lu %lu", &size, &resident) == 2);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void *map_array(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED);
  return p;
}

static void print_state(const char *when, size_t base) {
  static obm_stats_t st;
  obm_stats_get(&st);
  size_t rss = rss_bytes();
  printf("%-34s rss %7.1f MiB (%+7.1f)  mapped %7.1f MiB  arenas %" PRIu64 " (spare %" PRIu64
         ")  large cached %" PRIu64 "\n",
         when, (double)rss / (double)MiB, ((double)rss - (double)base) / (double)MiB,
         (double)st.bytes_mapped / (double)MiB, st.arenas_current, st.arenas_spare,
         st.large_cached_blocks);
  fflush(stdout);
}

enum size_mix { SMALL, MEDIUM, SMALL_AND_MEDIUM, LARGE };

static size_t random_size(uint64_t *rng, enum size_mix mix) {
  switch (mix) {
  case SMALL:
    return 16 + (size_t)check_rand_below(rng, 512 - 16 + 1);
  case MEDIUM:
    return 513 + (size_t)check_rand_below(rng, 64 * KiB - 513 + 1);
  case SMALL_AND_MEDIUM: /* 2 % medium by count, about two thirds of the bytes */
    return random_size(rng, check_rand_below(rng, 50) == 0 ? MEDIUM : SMALL);
  case LARGE:
    return 65 * KiB + (size_t)check_rand_below(rng, 3 * MiB);
  }
  return 0;
}

static size_t mean_size(enum size_mix mix) {
  switch (mix) {
  case SMALL:
    return 264;
  case MEDIUM:
    return 33 * KiB;
  case SMALL_AND_MEDIUM:
    return (49 * 264 + 33 * KiB) / 50;
  case LARGE:
    return 65 * KiB + 3 * MiB / 2;
  }
  return 1;
}

/* Keeps about `live_bytes` live in blocks of the mix, touching every page, for `rounds`
 * rounds (each after the first frees a random half and refills it), then frees all. */
static void churn(uint64_t *rng, size_t live_bytes, enum size_mix mix, int rounds,
                  size_t *peak_rss) {
  size_t nblocks = live_bytes / mean_size(mix);
  size_t array_bytes = (nblocks * sizeof(void *) + 4095) & ~(size_t)4095;
  unsigned char **blocks = map_array(array_bytes);
  size_t *sizes = map_array(array_bytes);
  for (int round = 0; round < rounds; round++) {
    for (size_t i = 0; i < nblocks; i++) {
      if (blocks[i] != NULL) {
        if (check_rand_below(rng, 2) == 0)
          continue;
        CHECK(blocks[i][0] == (unsigned char)i && blocks[i][sizes[i] - 1] == (unsigned char)i);
        obm_free(blocks[i]);
      }
      size_t n = random_size(rng, mix);
      unsigned char *p = obm_malloc(n);
      CHECKF(p != NULL, "malloc(%zu) failed in round %d", n, round);
      for (size_t off = 0; off < n; off += 4096)
        p[off] = (unsigned char)i; /* make every page resident */
      p[n - 1] = (unsigned char)i;
      blocks[i] = p;
      sizes[i] = n;
    }
    size_t rss = rss_bytes();
    if (rss > *peak_rss)
      *peak_rss = rss;
  }
  for (size_t i = 0; i < nblocks; i++) {
    CHECK(blocks[i][0] == (unsigned char)i);
    obm_free(blocks[i]);
  }
  munmap(blocks, array_bytes);
  munmap(sizes, array_bytes);
}

int main(int argc, char **argv) {
  check_env_reexec(argv, "OBMEM_PURGE_DELAY_MS", "0", 0);
  check_seed_init("test_rss", argc, argv, 1, 7);
  obm_set_error_handler(on_error, NULL);
  uint64_t rng = check_seed;

  /* Warm up: obmem initialized, stdio buffers allocated, the first arena touched. */
  void *warm = obm_malloc(100);
  CHECK(warm != NULL);
  obm_free(warm);
  obm_trim();
  printf("test_rss: seed %" PRIu64 ", purge delay %ld ms, %ld spare arenas\n", check_seed,
         obm_option_get(OBM_OPTION_PURGE_DELAY_MS), obm_option_get(OBM_OPTION_ARENA_SPARE));
  print_state("start", rss_bytes());
  size_t base = rss_bytes();
  size_t peak = base;

  /* Phase 1: ~600 MiB of small and medium live at once, freed, no trim. */
  churn(&rng, 600 * MiB, SMALL_AND_MEDIUM, 2, &peak);
  print_state("600 MiB mixed, freed (no trim)", base);
  CHECKF(peak >= base + 500 * MiB, "peak RSS %zu MiB over a %zu MiB start: nothing was resident",
         peak / MiB, base / MiB);
  size_t rss = rss_bytes();
  CHECKF(rss <= base + NO_TRIM_SLACK,
         "without obm_trim RSS stayed %.1f MiB above the start (allowed %zu MiB)",
         ((double)rss - (double)base) / (double)MiB, NO_TRIM_SLACK / MiB);

  /* Phase 2: small only, then medium only, several rounds, then obm_trim. */
  churn(&rng, 300 * MiB, SMALL, 3, &peak);
  print_state("300 MiB small, freed (no trim)", base);
  churn(&rng, 300 * MiB, MEDIUM, 3, &peak);
  print_state("300 MiB medium, freed (no trim)", base);
  rss = rss_bytes();
  CHECKF(rss <= base + NO_TRIM_SLACK,
         "without obm_trim RSS stayed %.1f MiB above the start (allowed %zu MiB)",
         ((double)rss - (double)base) / (double)MiB, NO_TRIM_SLACK / MiB);
  obm_trim();
  print_state("after obm_trim", base);
  rss = rss_bytes();
  CHECKF(rss <= base + TRIM_SLACK,
         "after obm_trim RSS stayed %.1f MiB above the start (allowed %zu MiB)",
         ((double)rss - (double)base) / (double)MiB, TRIM_SLACK / MiB);
  static obm_stats_t st;
  obm_stats_get(&st);
  CHECK(st.arenas_spare == 0);

  /* Phase 3: large blocks (their freed mappings are cached until obm_trim). */
  churn(&rng, 300 * MiB, LARGE, 3, &peak);
  print_state("large churn, freed", base);
  obm_trim();
  print_state("after obm_trim", base);
  rss = rss_bytes();
  CHECKF(rss <= base + TRIM_SLACK,
         "after large churn and obm_trim RSS stayed %.1f MiB above the start (allowed %zu MiB)",
         ((double)rss - (double)base) / (double)MiB, TRIM_SLACK / MiB);
  obm_stats_get(&st);
  CHECK(st.large_blocks == 0 && st.large_cached_blocks == 0);
  uint64_t in_use = 0;
  for (int c = 0; c < OBM_NCLASSES; c++)
    in_use += st.classes[c].blocks_in_use;
  CHECK(in_use == 0);
  return check_done();
}
