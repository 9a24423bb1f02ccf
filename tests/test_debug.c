/* test_debug.c — debug mode: guard bytes, fill patterns, serial numbers and error reports.
 *
 * An integration test (only obmem.h).  It needs OBMEM_DEBUG=1 from the start of the process
 * (options are read once, possibly by a constructor before main): ctest sets it, and when it
 * is missing main sets it and re-executes itself.  An error handler records every report (code, address, message) and returns, so
 * the operation is abandoned and the test goes on.  Each kind of damage is done to a small,
 * a medium and a large block, the report is checked (code, address, the block's address in
 * the text as a hex number, its serial number as a decimal word), the damage is repaired
 * and the block is then freed normally: that must report nothing, and obm_check() must
 * then find a clean heap.
 * Bytes outside a live block (guards) or inside a freed one are touched only through
 * raw_read/raw_write, which AddressSanitizer does not instrument, in case obmem poisons them.
 *
 * Usage: test_debug [SEED]
 */
#include "obmem.h"

#include "check.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

#if defined(__clang__) || defined(__GNUC__)
#define NO_ASAN __attribute__((no_sanitize_address, noinline))
#else
#define NO_ASAN
#endif

/* Sizes for the three tiers; the large one does not end on a page boundary. */
static const size_t tier_size[3] = {64, 3000, 200 * KiB + 40};
static const char *const tier_name[3] = {"small", "medium", "large"};

/* ---- the recording error handler ---------------------------------------------------------- */

static struct {
  int expecting;
  int ncalls;
  unsigned codes_seen; /* bit per obm_error_t */
  obm_error_t code;    /* last report */
  void *address;
  char message[4096];
} err;

static void on_error(obm_error_t code, void *address, const char *message, void *arg) {
  (void)arg;
  CHECKF(err.expecting > 0, "unexpected error report: code %d at %p: %s", (int)code, address,
         message);
  CHECK(message != NULL);
  err.ncalls++;
  err.codes_seen |= 1u << (unsigned)code;
  err.code = code;
  err.address = address;
  snprintf(err.message, sizeof err.message, "%s", message);
}

static void expect_reports(void) {
  err.expecting = 1;
  err.ncalls = 0;
  err.codes_seen = 0;
  err.code = OBM_OK;
  err.address = NULL;
  err.message[0] = '\0';
}

static void expect_no_reports(void) {
  err.expecting = 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static NO_ASAN unsigned char raw_read(const unsigned char *p) {
  return *(const volatile unsigned char *)p;
}

static NO_ASAN void raw_write(unsigned char *p, unsigned char v) {
  *(volatile unsigned char *)p = v;
}

/* First offset in [from, to) whose byte is not v, or to. */
static NO_ASAN size_t raw_first_not(const unsigned char *p, size_t from, size_t to,
                                    unsigned char v) {
  for (size_t i = from; i < to; i++)
    if (((const volatile unsigned char *)p)[i] != v)
      return i;
  return to;
}

/* Whether the page holding p is mapped (msync fails with ENOMEM on unmapped memory). */
static bool is_mapped(const void *p) {
  uintptr_t page = (uintptr_t)p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
  return msync((void *)page, 1, MS_ASYNC) == 0;
}

/* Whether the message names address a as a hex number (any width, with or without 0x). */
static bool message_has_address(const char *msg, const void *a) {
  for (const char *s = msg; *s != '\0'; s++) {
    if (!isxdigit((unsigned char)*s) || (s > msg && isalnum((unsigned char)s[-1])))
      continue;
    const char *start = s;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
      start = s + 2;
    char *end = NULL;
    unsigned long long v = strtoull(start, &end, 16);
    if (end != start && !isalnum((unsigned char)*end) && v == (unsigned long long)(uintptr_t)a)
      return true;
  }
  return false;
}

/* Whether the message holds the serial as a decimal word (e.g. "serial 42", "#42"). */
static bool message_has_serial(const char *msg, uint64_t serial) {
  char want[32];
  snprintf(want, sizeof want, "%" PRIu64, serial);
  size_t len = strlen(want);
  for (const char *s = msg; (s = strstr(s, want)) != NULL; s++) {
    bool left_ok = s == msg || !isalnum((unsigned char)s[-1]);
    bool right_ok = !isalnum((unsigned char)s[len]);
    if (left_ok && right_ok)
      return true;
  }
  return false;
}

static void check_one_report(obm_error_t want, const void *block, const char *what) {
  CHECKF(err.ncalls == 1, "%s: %d reports (last code %d: %s)", what, err.ncalls, (int)err.code,
         err.message);
  CHECKF(err.code == want, "%s: code %d, wanted %d; message: %s", what, (int)err.code,
         (int)want, err.message);
  CHECKF(message_has_address(err.message, block), "%s: the message does not name %p: %s", what,
         block, err.message);
}

static void check_clean(const char *when) {
  expect_no_reports();
  size_t problems = obm_check();
  CHECKF(problems == 0, "%s: obm_check() found %zu problems", when, problems);
}

/* ---- fill patterns and serials ------------------------------------------------------------ */

static void test_fill_patterns(void) {
  const size_t sizes[] = {1,     16,    100,       512,       513,    3000,
                          65536, 65537, 200 * KiB, 3 * MiB + 7};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    size_t n = sizes[s];
    for (int round = 0; round < 3; round++) {
      unsigned char *p = obm_malloc(n);
      CHECK(p != NULL);
      size_t bad = raw_first_not(p, 0, n, 0xCD);
      CHECKF(bad == n, "malloc(%zu) round %d: byte %zu is 0x%02x, not 0xCD", n, round, bad,
             bad < n ? p[bad] : 0);
      size_t usable = obm_usable_size(p);
      CHECKF(usable >= n, "usable_size %zu < %zu", usable, n);
      memset(p, 0x11, usable); /* all of the usable size is the caller's: no overrun */
      obm_free(p);

      unsigned char *q = obm_calloc(1, n);
      CHECK(q != NULL);
      bad = raw_first_not(q, 0, n, 0);
      CHECKF(bad == n, "calloc(1, %zu) round %d: byte %zu is 0x%02x", n, round, bad,
             bad < n ? q[bad] : 0);
      memset(q, 0x22, n);
      obm_free(q);
    }
  }

  /* Freed memory reads 0xDD (past the first 16 bytes, which may hold a free-list link);
   * an anchor keeps the pool alive so the freed block stays mapped. */
  for (int t = 0; t < 2; t++) {
    size_t n = tier_size[t];
    unsigned char *anchor = obm_malloc(n);
    unsigned char *p = obm_malloc(n);
    CHECK(anchor != NULL && p != NULL);
    memset(p, 0x33, n);
    obm_free(p);
    size_t bad = raw_first_not(p, 16, n, 0xDD);
    CHECKF(bad == n, "freed %s block %p: byte %zu is 0x%02x, not 0xDD", tier_name[t],
           (void *)p, bad, raw_read(p + (bad < n ? bad : 0)));
    obm_free(anchor);
  }

  /* realloc keeps the old bytes and fills the new ones with 0xCD. */
  const size_t from[] = {10, 100, 600, 3000, 70000};
  const size_t to[] = {100, 3000, 5000, 100000, 300000};
  for (int i = 0; i < 5; i++) {
    unsigned char *p = obm_malloc(from[i]);
    CHECK(p != NULL);
    memset(p, 0x44, from[i]);
    unsigned char *q = obm_realloc(p, to[i]);
    CHECK(q != NULL);
    CHECK(raw_first_not(q, 0, from[i], 0x44) == from[i]);
    size_t bad = raw_first_not(q, from[i], to[i], 0xCD);
    CHECKF(bad == to[i], "realloc %zu -> %zu: new byte %zu is 0x%02x, not 0xCD", from[i], to[i],
           bad, bad < to[i] ? q[bad] : 0);
    /* The guard moved with the size: a byte past the new end is an overrun. */
    unsigned char saved = raw_read(q + to[i]);
    raw_write(q + to[i], (unsigned char)(saved ^ 0x5A));
    expect_reports();
    obm_free(q);
    check_one_report(OBM_ERR_OVERRUN, q, "overrun after realloc");
    raw_write(q + to[i], saved);
    expect_no_reports();
    obm_free(q);
  }
  check_clean("after fill patterns");
}

static void test_serials(void) {
  CHECK(obm_debug_serial(NULL) == 0);
  void *blocks[8];
  blocks[0] = obm_malloc(10);
  blocks[1] = obm_malloc(1000);
  blocks[2] = obm_malloc(100 * KiB);
  blocks[3] = obm_calloc(1, 10);
  blocks[4] = obm_aligned_alloc(4096, 10);
  void *out = NULL;
  CHECK(obm_posix_memalign(&out, 64, 3000) == 0);
  blocks[5] = out;
  blocks[6] = obm_realloc(NULL, 20);
  blocks[7] = obm_malloc(0);
  uint64_t prev = 0;
  for (int i = 0; i < 8; i++) {
    CHECK(blocks[i] != NULL);
    uint64_t s = obm_debug_serial(blocks[i]);
    CHECKF(s > prev, "block %d: serial %" PRIu64 " after %" PRIu64, i, s, prev);
    prev = s;
  }
  /* A block that realloc moves or keeps still has a serial; later blocks count on. */
  blocks[0] = obm_realloc(blocks[0], 5000);
  CHECK(blocks[0] != NULL && obm_debug_serial(blocks[0]) > 0);
  void *later = obm_malloc(24);
  CHECK(later != NULL && obm_debug_serial(later) > prev);
  obm_free(later);
  for (int i = 0; i < 8; i++)
    obm_free(blocks[i]);
  check_clean("after serials");
}

/* ---- damage and its reports -------------------------------------------------------------- */

static void test_overrun_underrun(void) {
  for (int t = 0; t < 3; t++) {
    const size_t sizes[2] = {tier_size[t], t == 0 ? 1 : tier_size[t] + 1};
    for (int k = 0; k < 2; k++) {
      size_t n = sizes[k];
      char what[96];

      /* Overrun: the byte right after the request. */
      unsigned char *p = obm_malloc(n);
      CHECK(p != NULL);
      uint64_t serial = obm_debug_serial(p);
      CHECK(serial > 0);
      unsigned char saved = raw_read(p + n);
      raw_write(p + n, (unsigned char)(saved ^ 0x5A));
      snprintf(what, sizeof what, "%s overrun (%zu bytes) at free", tier_name[t], n);
      expect_reports();
      obm_free(p);
      check_one_report(OBM_ERR_OVERRUN, p, what);
      CHECKF(err.address == p || err.address == p + n, "%s: reported address %p for block %p",
             what, err.address, (void *)p);
      CHECKF(message_has_serial(err.message, serial), "%s: serial %" PRIu64 " not in: %s", what,
             serial, err.message);
      /* obm_check finds it too, and realloc refuses the block. */
      expect_reports();
      CHECK(obm_check() >= 1);
      CHECK(err.codes_seen & (1u << OBM_ERR_OVERRUN));
      expect_reports();
      errno = 0;
      void *q = obm_realloc(p, n * 2);
      CHECKF(q == NULL && errno == EINVAL, "%s: realloc of the damaged block = %p errno %d", what,
             q, errno);
      CHECK(err.ncalls == 1 && err.code == OBM_ERR_OVERRUN);
      raw_write(p + n, saved);
      expect_no_reports();
      obm_free(p); /* repaired: a normal free */
      check_clean(what);

      /* Underrun: the byte right before the block. */
      p = obm_malloc(n);
      CHECK(p != NULL);
      serial = obm_debug_serial(p);
      saved = raw_read(p - 1);
      raw_write(p - 1, (unsigned char)(saved ^ 0xA5));
      snprintf(what, sizeof what, "%s underrun (%zu bytes) at free", tier_name[t], n);
      expect_reports();
      obm_free(p);
      check_one_report(OBM_ERR_UNDERRUN, p, what);
      CHECKF(err.address == p || err.address == p - 1, "%s: reported address %p for block %p",
             what, err.address, (void *)p);
      CHECKF(message_has_serial(err.message, serial), "%s: serial %" PRIu64 " not in: %s", what,
             serial, err.message);
      raw_write(p - 1, saved);
      expect_no_reports();
      obm_free(p);
      check_clean(what);
    }
  }
}

static void test_double_free(void) {
  for (int t = 0; t < 3; t++) {
    size_t n = tier_size[t];
    unsigned char *anchor = obm_malloc(n); /* keeps the pool, so the block stays obmem's */
    unsigned char *p = obm_malloc(n);
    CHECK(anchor != NULL && p != NULL);
    obm_free(p);
    char what[64];
    snprintf(what, sizeof what, "%s double free", tier_name[t]);
    expect_reports();
    obm_free(p);
    CHECKF(err.ncalls == 1, "%s: %d reports", what, err.ncalls);
    if (t < 2)
      check_one_report(OBM_ERR_DOUBLE_FREE, p, what);
    else /* a freed large block may already be unmapped: then it is simply not obmem's */
      CHECKF(err.code == OBM_ERR_DOUBLE_FREE || err.code == OBM_ERR_FOREIGN_POINTER,
             "%s: code %d: %s", what, (int)err.code, err.message);
    CHECK(err.address == p);
    /* The heap is not damaged by the abandoned second free: two fresh blocks differ. */
    expect_no_reports();
    void *x = obm_malloc(n);
    void *y = obm_malloc(n);
    CHECK(x != NULL && y != NULL && x != y);
    obm_free(x);
    obm_free(y);
    obm_free(anchor);
    check_clean(what);
  }
}

static void test_not_block_start(void) {
  int stack_var = 0;
  for (int t = 0; t < 3; t++) {
    size_t n = tier_size[t];
    unsigned char *p = obm_malloc(n);
    CHECK(p != NULL);
    memset(p, 0x66, n);
    char what[64];
    snprintf(what, sizeof what, "%s free(p + 16)", tier_name[t]);
    expect_reports();
    obm_free(p + 16);
    check_one_report(OBM_ERR_NOT_BLOCK_START, p + 16, what);
    CHECK(err.address == p + 16);
    expect_reports();
    CHECK(obm_usable_size(p + 16) == 0);
    CHECK(err.ncalls == 1 && err.code == OBM_ERR_NOT_BLOCK_START);
    expect_reports();
    errno = 0;
    CHECK(obm_realloc(p + 32, 10) == NULL && errno == EINVAL);
    CHECK(err.ncalls == 1 && err.code == OBM_ERR_NOT_BLOCK_START);
    expect_no_reports();
    CHECK(raw_first_not(p, 0, n, 0x66) == n);
    obm_free(p);
    check_clean(what);
  }
  expect_reports();
  obm_free(&stack_var);
  check_one_report(OBM_ERR_FOREIGN_POINTER, &stack_var, "free(stack address)");
  CHECK(err.address == &stack_var);
  void *g = malloc(64);
  CHECK(g != NULL);
  expect_reports();
  obm_free(g);
  check_one_report(OBM_ERR_FOREIGN_POINTER, g, "free(glibc block)");
  expect_no_reports();
  free(g);
}

static void test_write_after_free(void) {
  for (int t = 0; t < 3; t++) {
    size_t n = tier_size[t];
    char what[64];
    snprintf(what, sizeof what, "%s write after free", tier_name[t]);
    unsigned char *anchor = obm_malloc(n);
    unsigned char *p = obm_malloc(n);
    CHECK(anchor != NULL && p != NULL);
    obm_free(p);
    unsigned char *target = p + n / 2;
    if (t == 2 && (!is_mapped(target) || raw_read(target) != 0xDD)) {
      /* The freed large mapping went back to the OS (or was decommitted): nothing left
       * to write to, which is the best outcome. */
      printf("%s: freed large block %s; not applicable\n", what,
             is_mapped(target) ? "decommitted" : "unmapped");
      obm_free(anchor);
      continue;
    }
    CHECKF(raw_read(target) == 0xDD, "%s: freed byte is 0x%02x", what, raw_read(target));
    raw_write(target, 0x42);
    expect_reports();
    size_t problems = obm_check();
    CHECKF(problems >= 1, "%s: obm_check() found nothing", what);
    CHECKF(err.codes_seen & (1u << OBM_ERR_WRITE_AFTER_FREE), "%s: codes seen 0x%x, last: %s",
           what, err.codes_seen, err.message);
    CHECKF((unsigned char *)err.address >= p - 64 && (unsigned char *)err.address <= p + n,
           "%s: reported address %p, block %p", what, err.address, (void *)p);
    CHECKF(message_has_address(err.message, err.address) || message_has_address(err.message, p),
           "%s: the message names neither %p nor %p: %s", what, err.address, (void *)p,
           err.message);
    /* Checking again finds it again; repairing the byte makes the heap clean. */
    expect_reports();
    CHECK(obm_check() >= 1);
    raw_write(target, 0xDD);
    check_clean(what);
    obm_free(anchor);
    check_clean(what);
  }
}

int main(int argc, char **argv) {
  check_env_reexec(argv, "OBMEM_DEBUG", "1", 1);
  check_seed_init("test_debug", argc, argv, 1, 1);
  obm_set_error_handler(on_error, NULL);
  CHECKF(obm_debug_enabled(), "OBMEM_DEBUG=1 did not turn debug mode on");
  CHECK(obm_option_get(OBM_OPTION_DEBUG) == 1);
  check_clean("at start");

  test_fill_patterns();
  test_serials();
  test_overrun_underrun();
  test_double_free();
  test_not_block_start();
  test_write_after_free();

  check_clean("at the end");
  return check_done();
}
