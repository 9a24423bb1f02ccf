/* os.c — the only code that talks to the kernel about memory, threads and time (Linux).
 *
 * Aligned mappings are tried first just below the last one (aligned_hint), else made by
 * over-mapping size + alignment and unmapping the unaligned head and the tail, so that every
 * segment obmem owns starts on a 1 MiB boundary and the page map can work on whole 1 MiB
 * chunks.  A test hook fails the N-th mapping (fault injection).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic long fail_countdown; /* > 0: the mapping that brings it to 0 fails */
static _Atomic(uint64_t) map_calls, unmap_calls;

void _obm_os_fail_map_after(long n) {
  atomic_store(&fail_countdown, n < 0 ? 0 : n);
}
uint64_t _obm_os_map_calls(void) {
  return atomic_load_explicit(&map_calls, memory_order_relaxed);
}
uint64_t _obm_os_unmap_calls(void) {
  return atomic_load_explicit(&unmap_calls, memory_order_relaxed);
}

static int injected_failure(void) {
  long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
  while (c > 0) {
    if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) return c == 1;
  }
  return 0;
}

/* Threads may race to the first call: a relaxed atomic cache (they all store the same value). */
size_t _obm_os_page_size(void) {
  static size_t page;
  size_t value = __atomic_load_n(&page, __ATOMIC_RELAXED);
  if (value == 0) {
    long p = sysconf(_SC_PAGESIZE);
    value = p > 0 ? (size_t)p : 4096;
    __atomic_store_n(&page, value, __ATOMIC_RELAXED);
  }
  return value;
}

static void *map_raw(size_t size) {
  atomic_fetch_add_explicit(&map_calls, 1, memory_order_relaxed);
  void *p =
      mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    if (_obm_option(OBM_OPTION_VERBOSE))
      _obm_warning("mmap of %zu bytes failed (errno %d)", size, errno);
    errno = ENOMEM;
    return NULL;
  }
  return p;
}

static void unmap_raw(void *addr, size_t size) {
  if (size == 0) return;
  int saved = errno; /* free() must preserve errno */
  atomic_fetch_add_explicit(&unmap_calls, 1, memory_order_relaxed);
  if (munmap(addr, size) != 0 && _obm_option(OBM_OPTION_VERBOSE))
    _obm_warning("munmap(%p, %zu) failed (errno %d)", addr, size, errno);
  errno = saved;
}

/* Where the next aligned mapping is tried first: the start of the last one.  The kernel fills
 * the address space top down, so the span just below a fresh mapping is usually free, and
 * one mmap there (MAP_FIXED_NOREPLACE: it fails rather than move or clobber anything) saves
 * the over-mapping's second mmap and two munmaps (the FIFO benchmark mapped each of its
 * arenas with 2 mmap and 3 munmap calls). */
static _Atomic(uintptr_t) aligned_hint;

/* size bytes mapped at addr exactly, or NULL (the range is taken, or the kernel predates
 * MAP_FIXED_NOREPLACE and put the mapping elsewhere, which is undone). */
static void *map_at(uintptr_t addr, size_t size) {
  atomic_fetch_add_explicit(&map_calls, 1, memory_order_relaxed);
  int saved = errno;
  void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  errno = saved;
  if (p == (void *)addr) return p;
  if (p != MAP_FAILED) unmap_raw(p, size);
  return NULL;
}

void *_obm_os_map(size_t size, size_t alignment) {
  if (injected_failure()) {
    errno = ENOMEM;
    return NULL;
  }
  size_t page = _obm_os_page_size();
  if (alignment < page) alignment = page;
  if (size == 0 || size > ((size_t)1 << 46)) {
    errno = ENOMEM;
    return NULL;
  }
  if (alignment == page) return map_raw(size);
  size_t span = (size + alignment - 1) & ~(alignment - 1);
  uintptr_t hint = atomic_load_explicit(&aligned_hint, memory_order_relaxed);
  if (span >= size && hint > span + alignment) {
    uintptr_t addr = (hint - span) & ~(uintptr_t)(alignment - 1);
    void *p = map_at(addr, size);
    if (p) {
      atomic_store_explicit(&aligned_hint, addr, memory_order_relaxed);
      return p;
    }
  }
  /* Then the plain size: the kernel often places it aligned (e.g. after a previous aligned
   * mapping); else over-mapping. */
  void *p = map_raw(size);
  if (p == NULL) return NULL;
  if (((uintptr_t)p & (alignment - 1)) == 0) {
    atomic_store_explicit(&aligned_hint, (uintptr_t)p, memory_order_relaxed);
    return p;
  }
  unmap_raw(p, size);
  if (size + alignment < size) {
    errno = ENOMEM;
    return NULL;
  }
  uint8_t *q = map_raw(size + alignment);
  if (q == NULL) return NULL;
  uintptr_t aligned = ((uintptr_t)q + alignment - 1) & ~(uintptr_t)(alignment - 1);
  size_t head = aligned - (uintptr_t)q;
  size_t tail = alignment - head;
  unmap_raw(q, head);
  unmap_raw((uint8_t *)aligned + size, tail);
  atomic_store_explicit(&aligned_hint, aligned, memory_order_relaxed);
  return (void *)aligned;
}

void _obm_os_unmap(void *addr, size_t size) {
  unmap_raw(addr, size);
}

void _obm_os_decommit(void *addr, size_t size) {
  int saved = errno;
  if (size) (void)madvise(addr, size, MADV_DONTNEED);
  errno = saved;
}

int _obm_os_remap_inplace(void *addr, size_t old_size, size_t new_size) {
  if (new_size < old_size) {
    unmap_raw((uint8_t *)addr + new_size, old_size - new_size);
    return 0;
  }
  if (injected_failure()) return ENOMEM;
  void *p = mremap(addr, old_size, new_size, 0);
  return p == MAP_FAILED ? ENOMEM : 0;
}

void *_obm_os_remap_move(void *addr, size_t old_size, size_t new_size, size_t alignment) {
  /* Reserve an aligned destination, then move the pages onto it: no byte is copied. */
  uint8_t *dest = _obm_os_map(new_size, alignment);
  if (dest == NULL) return NULL;
  void *p = mremap(addr, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, dest);
  if (p == MAP_FAILED) {
    unmap_raw(dest, new_size);
    errno = ENOMEM;
    return NULL;
  }
  return p;
}

uint64_t _obm_os_thread_id(void) {
  return (uint64_t)syscall(SYS_gettid);
}

uint64_t _obm_os_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t _obm_os_clock_coarse_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int _obm_os_thread_start(pthread_t *thread, const char *name, size_t stack_size, int joinable,
                         void *(*fn)(void *)) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_size);
  if (!joinable) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* the thread inherits this mask */
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  int err = pthread_create(thread, &attr, fn, NULL);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  pthread_attr_destroy(&attr);
  if (err == 0) pthread_setname_np(*thread, name);
  return err;
}

size_t _obm_os_rss_bytes(void) {
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *s = buf;
  while (*s && *s != ' ')
    s++; /* skip total size */
  size_t pages = 0;
  while (*s == ' ')
    s++;
  while (*s >= '0' && *s <= '9')
    pages = pages * 10 + (size_t)(*s++ - '0');
  return pages * _obm_os_page_size();
}
