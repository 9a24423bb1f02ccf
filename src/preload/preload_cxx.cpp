/* preload_cxx.cpp — every C++ replaceable allocation operator on obmem ([new.delete]):
 * new and new[] (plain, nothrow, aligned, aligned + nothrow) and delete and delete[] (plain,
 * sized, nothrow, aligned, sized + aligned, aligned + nothrow): 8 + 12 functions, exported
 * from libobmem-preload.so and libobmem-override.a next to the C family in preload.c.
 *
 * The throwing forms follow [new.delete.single]/4: on failure call the installed new-handler
 * (std::get_new_handler) and try again, in a loop; with no handler, throw std::bad_alloc.
 * The nothrow forms return nullptr where the throwing form would throw (also when the
 * new-handler itself throws bad_alloc).  The fast path is one obmem call; the loop lives in a
 * cold function.  Sizes given to the sized deletes are not needed (obmem finds a block's size
 * from its address), and an alignment given to delete is implied by the block.
 *
 * new_handler and bad_alloc belong to libstdc++, so the preloaded library depends on
 * libstdc++.so.6 (as Debian's libjemalloc and libtcmalloc do): the handler a program installs
 * is then the one read here.
 */
#include "obmem.h"

#include <cstddef>
#include <new>

#define EXPORT __attribute__((visibility("default")))

/* Defined in preload.c: this reference makes a static link that takes the operators from
 * libobmem-override.a take the C family too, so that no program mixes two allocators. */
extern "C" __attribute__((visibility("hidden"))) const char _obm_preload_c_family[];

namespace {

__attribute__((used)) const char *const keep_c_family = _obm_preload_c_family;

void *allocate(std::size_t size, std::size_t alignment) noexcept {
  if (alignment <= OBM_ALIGNMENT) return obm_malloc(size);
  return obm_aligned_alloc(alignment, size);
}

/* The new-handler loop, reached only after a failed allocation. */
__attribute__((noinline, cold)) void *allocate_or_throw_slow(std::size_t size,
                                                             std::size_t alignment) {
  for (;;) {
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
    void *p = allocate(size, alignment);
    if (p != nullptr) return p;
  }
}

inline void *allocate_or_throw(std::size_t size, std::size_t alignment) {
  void *p = allocate(size, alignment);
  if (__builtin_expect(p != nullptr, 1)) return p;
  return allocate_or_throw_slow(size, alignment);
}

__attribute__((noinline, cold)) void *allocate_nothrow_slow(std::size_t size,
                                                            std::size_t alignment) noexcept {
  try {
    return allocate_or_throw_slow(size, alignment);
  } catch (...) {
    return nullptr;
  }
}

inline void *allocate_nothrow(std::size_t size, std::size_t alignment) noexcept {
  void *p = allocate(size, alignment);
  if (__builtin_expect(p != nullptr, 1)) return p;
  return allocate_nothrow_slow(size, alignment);
}

inline std::size_t align_of(std::align_val_t alignment) {
  return static_cast<std::size_t>(alignment);
}

} // namespace

/* ---- new ------------------------------------------------------------------------------ */

EXPORT void *operator new(std::size_t size) {
  return allocate_or_throw(size, 0);
}
EXPORT void *operator new[](std::size_t size) {
  return allocate_or_throw(size, 0);
}
EXPORT void *operator new(std::size_t size, const std::nothrow_t &) noexcept {
  return allocate_nothrow(size, 0);
}
EXPORT void *operator new[](std::size_t size, const std::nothrow_t &) noexcept {
  return allocate_nothrow(size, 0);
}
EXPORT void *operator new(std::size_t size, std::align_val_t alignment) {
  return allocate_or_throw(size, align_of(alignment));
}
EXPORT void *operator new[](std::size_t size, std::align_val_t alignment) {
  return allocate_or_throw(size, align_of(alignment));
}
EXPORT void *operator new(std::size_t size, std::align_val_t alignment,
                          const std::nothrow_t &) noexcept {
  return allocate_nothrow(size, align_of(alignment));
}
EXPORT void *operator new[](std::size_t size, std::align_val_t alignment,
                            const std::nothrow_t &) noexcept {
  return allocate_nothrow(size, align_of(alignment));
}

/* ---- delete --------------------------------------------------------------------------- */

EXPORT void operator delete(void *p) noexcept {
  obm_free(p);
}
EXPORT void operator delete[](void *p) noexcept {
  obm_free(p);
}
EXPORT void operator delete(void *p, std::size_t) noexcept {
  obm_free(p);
}
EXPORT void operator delete[](void *p, std::size_t) noexcept {
  obm_free(p);
}
EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept {
  obm_free(p);
}
EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept {
  obm_free(p);
}
EXPORT void operator delete(void *p, std::align_val_t) noexcept {
  obm_free(p);
}
EXPORT void operator delete[](void *p, std::align_val_t) noexcept {
  obm_free(p);
}
EXPORT void operator delete(void *p, std::size_t, std::align_val_t) noexcept {
  obm_free(p);
}
EXPORT void operator delete[](void *p, std::size_t, std::align_val_t) noexcept {
  obm_free(p);
}
EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept {
  obm_free(p);
}
EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept {
  obm_free(p);
}
