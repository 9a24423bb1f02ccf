/* zstd.c — zstd compression of capture blocks (capture_internal.h), for the writer thread and
 * the reader.
 *
 * libzstd (Debian libzstd1, which every Debian system has: dpkg depends on it) is found with
 * dlopen on first use, as the tracer finds libunwind: libobmem-preload.so gets no link
 * dependency, and a program that never traces never loads it.  zstd.h (Debian libzstd-dev)
 * gives the functions' types at build time; a build without it (a bare `pip install .`)
 * writes uncompressed blocks and refuses compressed ones with a message that says why.
 * Loaded once per process (pthread_once); dlopen allocates, so the writer loads it when it
 * starts, outside any hook (_obm_trace_writer_start, muted), never from the allocation path.
 */
#define _GNU_SOURCE
#include "capture/capture_internal.h"

#include <dlfcn.h>
#include <pthread.h>

#if __has_include(<zstd.h>)
#include <zstd.h>
#define HAVE_ZSTD 1
#else
#define HAVE_ZSTD 0
#endif

#if HAVE_ZSTD
static struct {
  pthread_once_t once;
  int loaded;
  __typeof__(ZSTD_createCCtx) *create_cctx;
  __typeof__(ZSTD_freeCCtx) *free_cctx;
  __typeof__(ZSTD_compressCCtx) *compress;
  __typeof__(ZSTD_createDCtx) *create_dctx;
  __typeof__(ZSTD_freeDCtx) *free_dctx;
  __typeof__(ZSTD_decompressDCtx) *decompress;
  __typeof__(ZSTD_getFrameContentSize) *content_size;
  __typeof__(ZSTD_isError) *is_error;
  __typeof__(ZSTD_getErrorName) *error_name;
} z = {.once = PTHREAD_ONCE_INIT};

static void load(void) {
  void *lib = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return;
  z.create_cctx = (__typeof__(z.create_cctx))dlsym(lib, "ZSTD_createCCtx");
  z.free_cctx = (__typeof__(z.free_cctx))dlsym(lib, "ZSTD_freeCCtx");
  z.compress = (__typeof__(z.compress))dlsym(lib, "ZSTD_compressCCtx");
  z.create_dctx = (__typeof__(z.create_dctx))dlsym(lib, "ZSTD_createDCtx");
  z.free_dctx = (__typeof__(z.free_dctx))dlsym(lib, "ZSTD_freeDCtx");
  z.decompress = (__typeof__(z.decompress))dlsym(lib, "ZSTD_decompressDCtx");
  z.content_size = (__typeof__(z.content_size))dlsym(lib, "ZSTD_getFrameContentSize");
  z.is_error = (__typeof__(z.is_error))dlsym(lib, "ZSTD_isError");
  z.error_name = (__typeof__(z.error_name))dlsym(lib, "ZSTD_getErrorName");
  z.loaded = z.create_cctx && z.free_cctx && z.compress && z.create_dctx && z.free_dctx &&
             z.decompress && z.content_size && z.is_error && z.error_name;
  if (!z.loaded) dlclose(lib);
}

static int loaded(void) {
  pthread_once(&z.once, load);
  return z.loaded;
}

void *_obm_cap_zstd_compressor(void) {
  return loaded() ? z.create_cctx() : NULL;
}

void _obm_cap_zstd_compressor_free(void *cctx) {
  if (cctx && loaded()) z.free_cctx(cctx);
}

size_t _obm_cap_zstd_compress(void *cctx, void *dst, size_t capacity, const void *src, size_t size,
                              int level) {
  size_t n = z.compress(cctx, dst, capacity, src, size, level);
  return z.is_error(n) ? 0 : n;
}

void *_obm_cap_zstd_decompressor(void) {
  return loaded() ? z.create_dctx() : NULL;
}

void _obm_cap_zstd_decompressor_free(void *dctx) {
  if (dctx && loaded()) z.free_dctx(dctx);
}

const char *_obm_cap_zstd_decompress(void *dctx, void *dst, size_t capacity, const void *src,
                                     size_t size, size_t *out) {
  unsigned long long content = z.content_size(src, size);
  if (content == ZSTD_CONTENTSIZE_ERROR) return "not a zstd frame";
  if (content == ZSTD_CONTENTSIZE_UNKNOWN) return "a zstd frame without its content size";
  if (content > capacity) return "a zstd frame whose content exceeds the largest block";
  size_t n = z.decompress(dctx, dst, capacity, src, size);
  if (z.is_error(n)) return z.error_name(n);
  if (n != content) return "a zstd frame shorter than its content size";
  *out = n;
  return NULL;
}

const char *_obm_cap_zstd_missing(void) {
  return loaded() ? NULL : "libzstd.so.1 (Debian libzstd1) cannot be loaded";
}

#else /* built without zstd.h */

void *_obm_cap_zstd_compressor(void) {
  return NULL;
}
void _obm_cap_zstd_compressor_free(void *cctx) {
  (void)cctx;
}
size_t _obm_cap_zstd_compress(void *cctx, void *dst, size_t capacity, const void *src, size_t size,
                              int level) {
  (void)cctx, (void)dst, (void)capacity, (void)src, (void)size, (void)level;
  return 0;
}
void *_obm_cap_zstd_decompressor(void) {
  return NULL;
}
void _obm_cap_zstd_decompressor_free(void *dctx) {
  (void)dctx;
}
const char *_obm_cap_zstd_decompress(void *dctx, void *dst, size_t capacity, const void *src,
                                     size_t size, size_t *out) {
  (void)dctx, (void)dst, (void)capacity, (void)src, (void)size, (void)out;
  return "this obmem was built without zstd.h (Debian libzstd-dev)";
}
const char *_obm_cap_zstd_missing(void) {
  return "this obmem was built without zstd.h (Debian libzstd-dev)";
}

#endif
