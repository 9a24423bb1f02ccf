/* cxx_operators.cpp — every C++ operator new/delete is obmem's, with the standard's failure
 * rules, under LD_PRELOAD=libobmem-preload.so (and, built as cxx_operators_override, when
 * linked with libobmem-override.a).
 *
 * Checks:
 *  - the 8 forms of new (plain, array, nothrow, aligned, each for objects and arrays) return
 *    obmem's memory, aligned as asked (16 B up to 2 MiB), and the 12 forms of delete take it
 *    back; new-expressions of an over-aligned type use the aligned forms;
 *  - allocations made inside libstdc++ (a string built by an ostringstream, a locale's facets,
 *    containers) are obmem's;
 *  - failure: an impossible request throws std::bad_alloc when no new-handler is set; an
 *    installed handler is called in a loop until it removes itself (then bad_alloc), or until
 *    it makes room: under an address-space limit (RLIMIT_AS) a 256 MiB request fails, the
 *    handler raises the limit, and the retried allocation succeeds;
 *  - the nothrow forms return nullptr instead of throwing, also when the handler throws.
 * Usage: cxx_operators
 */
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <locale>
#include <map>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <vector>

static long npassed;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n%ld passed, 1 failed\n", __FILE__, __LINE__,  \
                   #cond, npassed);                                                                \
      std::exit(1);                                                                                \
    }                                                                                              \
    npassed++;                                                                                     \
  } while (0)

#ifdef OBMEM_TEST_OVERRIDE
/* linked with libobmem-override.a: obmem's API is in the program itself */
extern "C" int obm_owns(const void *ptr);
static int owns(const void *p) {
  return obm_owns(p);
}
static void require_obmem() {}
#else
static int (*owns_fn)(const void *);
static int owns(const void *p) {
  return owns_fn(p);
}
static void require_obmem() {
  owns_fn = reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "obm_owns"));
  if (owns_fn == nullptr) {
    std::fprintf(stderr, "obm_owns not found: run with LD_PRELOAD=libobmem-preload.so\n");
    std::exit(1);
  }
}
#endif

static void *volatile sink;
static bool aligned(const void *p, std::size_t alignment) {
  return (reinterpret_cast<std::uintptr_t>(p) & (alignment - 1)) == 0;
}

struct alignas(256) Overaligned {
  char bytes[300];
};

static void check_every_form() {
  void *p = ::operator new(100);
  CHECK(p != nullptr && owns(p));
  ::operator delete(p);
  p = ::operator new[](1000);
  CHECK(owns(p));
  ::operator delete[](p);
  p = ::operator new(40, std::nothrow);
  CHECK(owns(p));
  ::operator delete(p, std::nothrow);
  p = ::operator new[](4000, std::nothrow);
  CHECK(owns(p));
  ::operator delete[](p, std::nothrow);
  p = ::operator new(70000);
  CHECK(owns(p));
  ::operator delete(p, std::size_t(70000));
  p = ::operator new[](24);
  CHECK(owns(p));
  ::operator delete[](p, std::size_t(24));
  p = ::operator new(0);
  CHECK(p != nullptr && owns(p));
  ::operator delete(p);

  for (std::size_t a = 16; a <= (std::size_t(2) << 20); a *= 2) {
    const std::size_t sizes[] = {1, a - 1, a + 1, 3 * a, 200000};
    for (std::size_t size : sizes) {
      std::align_val_t al{a};
      void *q = ::operator new(size, al);
      CHECK(owns(q) && aligned(q, a));
      std::memset(q, 0x5C, size);
      ::operator delete(q, al);
      q = ::operator new[](size, al);
      CHECK(owns(q) && aligned(q, a));
      ::operator delete[](q, al);
      q = ::operator new(size, al, std::nothrow);
      CHECK(owns(q) && aligned(q, a));
      ::operator delete(q, al, std::nothrow);
      q = ::operator new[](size, al, std::nothrow);
      CHECK(owns(q) && aligned(q, a));
      ::operator delete[](q, al, std::nothrow);
      q = ::operator new(size, al);
      ::operator delete(q, size, al);
      q = ::operator new[](size, al);
      ::operator delete[](q, size, al);
    }
  }

  /* new-expressions: an over-aligned type goes through the aligned forms */
  Overaligned *o = new Overaligned;
  CHECK(owns(o) && aligned(o, 256));
  delete o;
  Overaligned *oa = new Overaligned[7];
  CHECK(owns(oa) && aligned(oa, 256));
  delete[] oa;
  int *ints = new int[1000]();
  CHECK(owns(ints) && ints[999] == 0);
  delete[] ints;
}

static void check_library_allocations() {
  std::ostringstream out;
  for (int i = 0; i < 1000; i++)
    out << "line " << i << '\n';
  std::string s = out.str(); /* built inside libstdc++ */
  CHECK(s.size() > 5000 && owns(s.data()));
  std::vector<std::string> v;
  for (int i = 0; i < 1000; i++)
    v.push_back(std::string(40, char('a' + i % 26)));
  CHECK(owns(v.data()) && owns(v[500].data()));
  std::map<int, std::unique_ptr<int>> m;
  for (int i = 0; i < 1000; i++)
    m[i] = std::make_unique<int>(i);
  CHECK(owns(m[77].get()) && *m[77] == 77);
  auto shared = std::make_shared<std::vector<double>>(10000, 1.5);
  CHECK(owns(shared.get()) && owns(shared->data()));
  std::locale loc(std::locale::classic(), new std::numpunct<char>);
  CHECK(std::has_facet<std::numpunct<char>>(loc));
}

static const std::size_t impossible = std::size_t(1) << 62;
static int handler_calls;

static void handler_gives_up_after_three() {
  if (++handler_calls == 3) std::set_new_handler(nullptr);
}
static void handler_throws() {
  handler_calls++;
  throw std::bad_alloc();
}

static rlim_t saved_as_limit;
static void handler_raises_limit() {
  handler_calls++;
  struct rlimit rl;
  getrlimit(RLIMIT_AS, &rl);
  rl.rlim_cur = saved_as_limit;
  setrlimit(RLIMIT_AS, &rl);
}

static std::size_t mapped_bytes() {
  std::FILE *f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f) {
    if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  return pages * 4096;
}

static void check_failure() {
  /* no handler: bad_alloc, for every throwing form */
  std::set_new_handler(nullptr);
  bool thrown = false;
  try {
    sink = ::operator new(impossible);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown);
  thrown = false;
  try {
    sink = ::operator new[](impossible, std::align_val_t{64});
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown);
  CHECK(::operator new(impossible, std::nothrow) == nullptr);
  CHECK(::operator new[](impossible, std::nothrow) == nullptr);
  CHECK(::operator new (impossible, std::align_val_t{4096}, std::nothrow) == nullptr);
  CHECK(::operator new[](impossible, std::align_val_t{32}, std::nothrow) == nullptr);

  /* a handler is called in a loop until it removes itself */
  handler_calls = 0;
  std::set_new_handler(handler_gives_up_after_three);
  thrown = false;
  try {
    sink = ::operator new(impossible);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown && handler_calls == 3);
  handler_calls = 0;
  std::set_new_handler(handler_gives_up_after_three);
  CHECK(::operator new (impossible, std::align_val_t{128}, std::nothrow) == nullptr);
  CHECK(handler_calls == 3);

  /* nothrow: a handler that throws bad_alloc gives nullptr */
  handler_calls = 0;
  std::set_new_handler(handler_throws);
  CHECK(::operator new[](impossible, std::nothrow) == nullptr &&handler_calls == 1);
  thrown = false;
  try {
    sink = ::operator new(impossible);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown && handler_calls == 2);

  /* a handler that makes room: the retried allocation succeeds */
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_AS, &rl) == 0);
  saved_as_limit = rl.rlim_cur;
  rl.rlim_cur = mapped_bytes() + (std::size_t(64) << 20);
  CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
  handler_calls = 0;
  std::set_new_handler(handler_raises_limit);
  const std::size_t big = std::size_t(256) << 20;
  char *p = static_cast<char *>(::operator new(big));
  CHECK(handler_calls >= 1 && p != nullptr && owns(p));
  p[0] = 1;
  p[big - 1] = 2;
  ::operator delete(p, big);
  CHECK(getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur == saved_as_limit);
  std::set_new_handler(nullptr);
}

int main() {
  require_obmem();
  check_every_form();
  check_library_allocations();
  check_failure();
  std::printf("cxx_operators: %ld passed, 0 failed\n", npassed);
  return 0;
}
