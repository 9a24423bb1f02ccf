/* family.c — every allocation name of the C family is obmem's under LD_PRELOAD, and behaves.
 *
 * Run with LD_PRELOAD=libobmem-preload.so; built as family_override (OBMEM_TEST_OVERRIDE), it
 * is linked with libobmem-override.a instead and runs without a preload.  Checks:
 *  - resolution: each name the preload must replace (the C family, glibc's __libc_* names,
 *    glibc's malloc extras, the 20 C++ operators — not in the override build of this C
 *    program, which has no C++ runtime) resolves, for the whole process, to the object that
 *    holds obm_owns (dlsym(RTLD_DEFAULT) + dladdr), not to libc or libstdc++;
 *  - each function's contract as glibc documents it: malloc(0), impossible sizes (NULL +
 *    ENOMEM), calloc zeroing and overflow, realloc keeping the prefix, reallocarray overflow,
 *    posix_memalign's EINVAL cases leaving *out untouched, aligned_alloc's power-of-two rule,
 *    memalign rounding a non-power-of-two alignment up, valloc/pvalloc page alignment and
 *    pvalloc's rounding, malloc_usable_size, cfree, the __libc_* aliases, malloc_trim,
 *    mallopt, mallinfo2 and malloc_stats;
 *  - glibc's own allocations (strdup, asprintf, getline, open_memstream, fopen, realpath,
 *    scandir) come from obmem and free() takes them back;
 *  - free preserves errno in every tier;
 *  - a block allocated in a constructor, before main, is obmem's and can be freed in main;
 *  - a thread's allocations and its exit work under the preload.
 * Usage: family
 */
#include "preload_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define KiB ((size_t)1024)

/* glibc exports these but declares only some of them. */
void *__libc_malloc(size_t size);
void __libc_free(void *ptr);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *ptr, size_t size);
void *__libc_memalign(size_t alignment, size_t size);
void *__libc_valloc(size_t size);
void *__libc_pvalloc(size_t size);

/* clang-format off */
static const char *const replaced_names[] = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size",
#ifndef OBMEM_TEST_OVERRIDE
    /* glibc's cfree is a compat symbol: a normal link does not export a replacement of it
     * from an executable, so only the preload replaces it */
    "cfree",
#endif
    "__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc", "__libc_memalign",
    "__libc_valloc", "__libc_pvalloc",
    "malloc_trim", "malloc_stats", "mallopt", "mallinfo", "mallinfo2",
#ifndef OBMEM_TEST_OVERRIDE
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t", "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
#endif
};
/* clang-format on */

static void *before_main_block;
__attribute__((constructor)) static void allocate_before_main(void) {
  before_main_block = malloc(1000);
  if (before_main_block) memset(before_main_block, 0x3C, 1000);
}

static void check_resolution(void) {
  Dl_info obmem_info, info;
  void *owns = dlsym(RTLD_DEFAULT, "obm_owns");
  CHECK(owns != NULL && dladdr(owns, &obmem_info) != 0 && obmem_info.dli_fname != NULL);
  for (size_t i = 0; i < sizeof replaced_names / sizeof replaced_names[0]; i++) {
    void *def = dlsym(RTLD_DEFAULT, replaced_names[i]);
    CHECKF(def != NULL, "%s is not defined in the process", replaced_names[i]);
    CHECK(dladdr(def, &info) != 0 && info.dli_fname != NULL);
    CHECKF(strcmp(info.dli_fname, obmem_info.dli_fname) == 0, "%s resolves to %s, not to %s",
           replaced_names[i], info.dli_fname, obmem_info.dli_fname);
  }
}

/* A C program run on obmem does not load the C++ runtime: the C++ operators reference
 * libstdc++ weakly (src/preload/preload_new.c), because loading it costs every C program
 * about 1 MiB of resident memory. */
static void check_no_cxx_runtime(void) {
  FILE *maps = fopen("/proc/self/maps", "r");
  CHECK(maps != NULL);
  char line[512];
  int found = 0;
  while (fgets(line, sizeof line, maps))
    if (strstr(line, "libstdc++") || strstr(line, "libgcc_s")) found = 1;
  fclose(maps);
  CHECKF(!found, "%s", "libstdc++ or libgcc_s is mapped in a C program");
}

static int is_aligned(const void *p, size_t alignment) {
  return ((uintptr_t)p & (alignment - 1)) == 0;
}

static void check_malloc_calloc_realloc(void) {
  void *p = malloc(0);
  CHECK(p != NULL && preload_owns(p));
  free(p);
  errno = 0;
  CHECK(preload_sink(malloc(preload_opaque(SIZE_MAX))) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(preload_sink(malloc(preload_opaque(SIZE_MAX / 2))) == NULL && errno == ENOMEM);

  /* calloc zeroes memory that was just dirtied, in every tier */
  const size_t sizes[] = {1, 24, 500, 3000, 40 * KiB, 300 * KiB, 3 * 1024 * KiB};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *d = malloc(sizes[i]);
    CHECK(d != NULL);
    memset(d, 0xAB, sizes[i]);
    free(d);
    unsigned char *z = calloc(1, sizes[i]);
    CHECK(z != NULL && preload_owns(z));
    for (size_t k = 0; k < sizes[i]; k += (k < 4096 ? 1 : 509))
      CHECK(z[k] == 0);
    CHECK(z[sizes[i] - 1] == 0);
    free(z);
  }
  errno = 0;
  CHECK(preload_sink(calloc(preload_opaque(SIZE_MAX / 8), 16)) == NULL && errno == ENOMEM);

  /* realloc through every tier keeps the prefix */
  unsigned char *r = realloc(NULL, 10);
  CHECK(r != NULL && preload_owns(r));
  for (size_t k = 0; k < 10; k++)
    r[k] = (unsigned char)(k * 7 + k / 251);
  size_t prev = 10;
  const size_t grow[] = {100, 513, 5000, 70 * KiB, 2 * 1024 * KiB, 30, 8};
  for (size_t g = 0; g < sizeof grow / sizeof grow[0]; g++) {
    r = realloc(r, grow[g]);
    CHECK(r != NULL && preload_owns(r));
    size_t keep = prev < grow[g] ? prev : grow[g];
    for (size_t k = 0; k < keep; k++)
      CHECKF(r[k] == (unsigned char)(k * 7 + k / 251), "%zu", k);
    for (size_t k = 0; k < grow[g]; k++)
      r[k] = (unsigned char)(k * 7 + k / 251);
    prev = grow[g];
  }
  free(r);

  /* a failed realloc leaves the block alone */
  unsigned char *keep = malloc(64);
  CHECK(keep != NULL);
  memset(keep, 0x11, 64);
  errno = 0;
  CHECK(realloc(keep, preload_opaque(SIZE_MAX / 2)) == NULL && errno == ENOMEM);
  for (int i = 0; i < 64; i++)
    CHECK(keep[i] == 0x11);

  /* reallocarray */
  errno = 0;
  CHECK(reallocarray(keep, preload_opaque(SIZE_MAX / 2), 4) == NULL && errno == ENOMEM);
  CHECK(keep[63] == 0x11);
  keep = reallocarray(keep, 100, 40);
  CHECK(keep != NULL && preload_owns(keep) && malloc_usable_size(keep) >= 4000);
  CHECK(keep[0] == 0x11 && keep[63] == 0x11);
  free(keep);
}

static void check_aligned(void) {
  for (size_t a = sizeof(void *); a <= 4 * 1024 * KiB; a *= 2) {
    const size_t sizes[] = {1, a / 2 + 1, 3 * a + 5, 100 * KiB};
    for (size_t i = 0; i < 4; i++) {
      void *p = (void *)0x1;
      CHECK(posix_memalign(&p, a, sizes[i]) == 0);
      CHECKF(p != NULL && is_aligned(p, a) && preload_owns(p), "posix_memalign(%zu, %zu)", a,
             sizes[i]);
      CHECK(malloc_usable_size(p) >= sizes[i]);
      memset(p, 0x77, sizes[i]);
      free(p);
      void *q = aligned_alloc(a, sizes[i]);
      CHECKF(q != NULL && is_aligned(q, a) && preload_owns(q), "aligned_alloc(%zu, %zu)", a,
             sizes[i]);
      memset(q, 0x78, sizes[i]);
      free(q);
      void *m = memalign(a, sizes[i]);
      CHECKF(m != NULL && is_aligned(m, a) && preload_owns(m), "memalign(%zu, %zu)", a, sizes[i]);
      memset(m, 0x79, sizes[i]);
      free(m);
    }
  }
  /* posix_memalign: EINVAL for a non-power of two or less than sizeof(void *); *out kept */
  const size_t bad[] = {0, 1, 2, 4, 24, 48, 4097};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    void *p = (void *)0x1234;
    CHECKF(posix_memalign(&p, bad[i], 16) == EINVAL && p == (void *)0x1234, "alignment %zu",
           bad[i]);
  }
  void *p = (void *)0x1234;
  CHECK(posix_memalign(&p, 64, preload_opaque(SIZE_MAX / 2)) == ENOMEM && p == (void *)0x1234);
  /* aligned_alloc: a non-power of two is EINVAL (C17) */
  errno = 0;
  CHECK(preload_sink(aligned_alloc(48, 96)) == NULL && errno == EINVAL);
  /* memalign rounds a non-power of two up, as glibc does; small ones are malloc's */
  void *m = memalign(48, 100);
  CHECK(m != NULL && is_aligned(m, 64));
  free(m);
  m = memalign(3000, 10);
  CHECK(m != NULL && is_aligned(m, 4096));
  free(m);
  m = memalign(1, 10);
  CHECK(m != NULL && is_aligned(m, 16));
  free(m);

  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  void *v = valloc(10);
  CHECK(v != NULL && is_aligned(v, page) && preload_owns(v));
  free(v);
  void *pv = pvalloc(1);
  CHECK(pv != NULL && is_aligned(pv, page) && malloc_usable_size(pv) >= page);
  memset(pv, 1, page);
  free(pv);
  pv = pvalloc(page + 1);
  CHECK(pv != NULL && is_aligned(pv, page) && malloc_usable_size(pv) >= 2 * page);
  memset(pv, 1, 2 * page);
  free(pv);
  errno = 0;
  CHECK(preload_sink(pvalloc(preload_opaque(SIZE_MAX - 10))) == NULL && errno == ENOMEM);
}

static void check_glibc_names(void) {
  CHECK(malloc_usable_size(NULL) == 0);
  void *p = malloc(100);
  CHECK(malloc_usable_size(p) >= 100);
#ifndef OBMEM_TEST_OVERRIDE
  void (*cfree_fn)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
  CHECK(cfree_fn != NULL);
  cfree_fn(p);
#else
  free(p);
#endif

  p = __libc_malloc(300);
  CHECK(p != NULL && preload_owns(p));
  p = __libc_realloc(p, 30000);
  CHECK(p != NULL && preload_owns(p));
  free(p); /* mixing the names is fine: they are one allocator */
  unsigned char *c = __libc_calloc(10, 10);
  CHECK(c != NULL && preload_owns(c) && c[99] == 0);
  __libc_free(c);
  p = __libc_memalign(256, 10);
  CHECK(p != NULL && is_aligned(p, 256) && preload_owns(p));
  free(p);
  p = __libc_valloc(10);
  CHECK(p != NULL && is_aligned(p, 4096) && preload_owns(p));
  free(p);
  p = __libc_pvalloc(10);
  CHECK(p != NULL && is_aligned(p, 4096) && preload_owns(p));
  free(p);

  /* the extras report on obmem's heap */
  struct mallinfo2 before = mallinfo2();
  void *big[8];
  for (int i = 0; i < 8; i++) {
    big[i] = malloc(1024 * KiB);
    CHECK(big[i] != NULL);
    memset(big[i], 1, 1024 * KiB);
  }
  struct mallinfo2 during = mallinfo2();
  CHECKF(during.uordblks >= before.uordblks + 8 * 1024 * KiB, "uordblks %zu -> %zu",
         before.uordblks, during.uordblks);
  CHECK(during.hblks >= 8);
  for (int i = 0; i < 8; i++)
    free(big[i]);
  CHECK(malloc_trim(0) == 1);
  CHECK(mallopt(M_ARENA_MAX, 1) == 1);

  /* malloc_stats prints obmem's table on stderr */
  char path[] = "/tmp/obmem-family-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  fflush(stderr);
  int saved = dup(2);
  CHECK(saved >= 0 && dup2(fd, 2) == 2);
  malloc_stats();
  fflush(stderr);
  CHECK(dup2(saved, 2) == 2);
  close(saved);
  off_t length = lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path);
  CHECKF(length > 100, "malloc_stats printed %ld bytes", (long)length);
}

static int select_all(const struct dirent *entry) {
  (void)entry;
  return 1;
}

static void check_glibc_internal_allocations(void) {
  char *s = strdup("a string");
  CHECK(s != NULL && preload_owns(s));
  free(s);
  s = strndup("another string", 7);
  CHECK(s != NULL && preload_owns(s) && strcmp(s, "another") == 0);
  free(s);
  char *a = NULL;
  CHECK(asprintf(&a, "%0*d", 5000, 7) == 5000);
  CHECK(preload_owns(a) && a[4999] == '7');
  free(a);

  char *buf = NULL;
  size_t bufsize = 0;
  FILE *mem = open_memstream(&buf, &bufsize);
  CHECK(mem != NULL && preload_owns(mem));
  for (int i = 0; i < 20000; i++)
    fprintf(mem, "%d,", i);
  CHECK(fclose(mem) == 0);
  CHECK(buf != NULL && preload_owns(buf) && bufsize > 50000 && strncmp(buf, "0,1,2,", 6) == 0);

  FILE *f = fmemopen(buf, bufsize, "r");
  CHECK(f != NULL && preload_owns(f));
  char *line = NULL;
  size_t linesize = 0;
  ssize_t n = getdelim(&line, &linesize, ';', f); /* no ';': reads the whole buffer */
  CHECK(n == (ssize_t)bufsize && preload_owns(line));
  free(line);
  fclose(f);
  free(buf);

  char *real = realpath("/proc/self/exe", NULL);
  CHECK(real != NULL && preload_owns(real));
  free(real);

  struct dirent **entries = NULL;
  int count = scandir("/proc/self", &entries, select_all, alphasort);
  CHECK(count > 2 && preload_owns(entries) && preload_owns(entries[0]));
  for (int i = 0; i < count; i++)
    free(entries[i]);
  free(entries);
}

static void check_errno_preserved(void) {
  const size_t sizes[] = {8, 400, 9000, 200 * KiB, 5 * 1024 * KiB};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    void *p = malloc(sizes[i]);
    CHECK(p != NULL);
    errno = 1234;
    free(p);
    CHECKF(errno == 1234, "free of %zu bytes changed errno to %d", sizes[i], errno);
  }
  errno = 4321;
  free(NULL);
  CHECK(errno == 4321);
  malloc_trim(0); /* large cached blocks go back: free's unmapping paths too */
  for (int round = 0; round < 4; round++) {
    void *p = malloc(6 * 1024 * KiB);
    CHECK(p != NULL);
    errno = 99;
    free(p);
    CHECK(errno == 99);
    malloc_trim(0);
  }
}

static void *thread_main(void *arg) {
  size_t n = (size_t)(uintptr_t)arg;
  char **v = malloc(n * sizeof *v);
  if (!v) return NULL;
  for (size_t i = 0; i < n; i++) {
    v[i] = malloc(i % 3000 + 1);
    if (!v[i] || !preload_owns(v[i])) return NULL;
  }
  for (size_t i = 0; i < n; i += 2)
    free(v[i]);
  return v; /* half the blocks outlive the thread, freed by main */
}

static void check_threads(void) {
  for (int t = 0; t < 8; t++) {
    pthread_t th;
    void *result = NULL;
    const size_t n = 5000;
    CHECK(pthread_create(&th, NULL, thread_main, (void *)(uintptr_t)n) == 0);
    CHECK(pthread_join(th, &result) == 0);
    CHECK(result != NULL);
    char **v = result;
    for (size_t i = 1; i < n; i += 2)
      free(v[i]);
    free(v);
  }
}

int main(int argc, char **argv) {
  check_seed_init("family", argc, argv, 1, 1);
  preload_require_obmem();
  CHECK(before_main_block != NULL && preload_owns(before_main_block));
  CHECK(((unsigned char *)before_main_block)[999] == 0x3C);
  free(before_main_block);
  check_resolution();
  check_no_cxx_runtime();
  check_malloc_calloc_realloc();
  check_aligned();
  check_glibc_names();
  check_glibc_internal_allocations();
  check_errno_preserved();
  check_threads();
  return check_done();
}
