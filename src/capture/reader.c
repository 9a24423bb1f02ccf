/* reader.c — the one reader of capture files (include/obmem/capture.h).
 *
 * The file is mapped read-only (or given as memory) and decoded block by block: a block's
 * header is checked (magic, size within the file and OBM_CAP_BLOCK_MAX, CRC-32) before any of
 * its records is looked at, and every varint read is bounded by the block's end, so no input
 * makes the reader read outside the data.  Definitions are checked as they arrive: a stack's
 * parent is an earlier stack and its frame an earlier frame (FRAME or PYFRAME: one id
 * sequence), an allocation's stack is defined, a thread's block comes after its THREAD record,
 * a PYFRAME's names are within their bounds and hold no NUL byte.  The first fault stops the reader with
 * "FILE: offset N: what" in obm_capture_error.
 *
 * Invariants: nstacks >= 1 (stack 0 = empty), nframes >= 1 (frame 0 unused);
 *             stacks[i].parent < i; 1 <= stacks[i].frame < nframes for i >= 1;
 *             pyframes[i] != NULL (i < pyframes_cap) only for the ids of PYFRAME records;
 *             pos <= size; in_block => block_start + OBM_CAP_BLOCK_HEADER_SIZE + block_size <=
 * size. After a rewind the tables stay and re-read definitions are counted (*_seen) but not added.
 */
#define _GNU_SOURCE
#include "capture/capture_internal.h"
#include "obmem/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DROP_BEHIND ((size_t)64 << 20) /* bytes read between two MADV_DONTNEED of the mapping */

typedef struct cap_stack_s {
  uint32_t parent;
  uint32_t frame;
} cap_stack_t;

typedef struct cap_thread_s {
  uint64_t tid;
  char *name; /* NULL until a THREAD record names the index */
} cap_thread_t;

/* An interpreter frame's names (PYFRAME): one allocation, function then file, NUL-terminated. */
typedef struct cap_pyframe_s {
  uint32_t line;
  const char *file;
  char function[]; /* then the file */
} cap_pyframe_t;

typedef struct cap_module_s {
  uint64_t load_address;
  char *path;
  uint8_t build_id[OBM_CAP_BUILD_ID_MAX];
  uint32_t build_id_size;
} cap_module_t;

struct obm_capture_s {
  char *name;
  const uint8_t *data;
  size_t size;
  int mapped;
  size_t dropped; /* mapped: the pages below this offset were given back (MADV_DONTNEED) */
  obm_capture_header_t header;
  size_t pos; /* offset of the next block header */
  /* the block being decoded: its records are bytes[payload .. block_end), at their offsets in
   * the file for a stored block, in unzipped (from 0) for a zstd-compressed one */
  int in_block, zipped;
  const uint8_t *bytes;
  size_t block_start, payload, block_end; /* header (file offset), first record byte, past end */
  size_t next_block;                      /* file offset past the block */
  size_t rec;                             /* the next record */
  uint8_t *unzipped;                      /* OBM_CAP_BLOCK_MAX bytes, on first use */
  void *dctx;                             /* zstd's decompression context, on first use */
  uint32_t stream;
  uint64_t time_ns;
  obm_cap_delta_t delta; /* event coding state of the block (capture_internal.h) */
  /* tables */
  uint64_t *frames;
  uint32_t nframes, frames_cap, frames_seen;
  cap_pyframe_t **pyframes; /* per frame id: NULL (native) or its names; pyframes_cap entries */
  uint32_t pyframes_cap;
  cap_stack_t *stacks;
  uint32_t nstacks, stacks_cap, stacks_seen;
  cap_thread_t *threads;
  uint32_t nthreads, threads_cap;
  cap_module_t *modules;
  uint32_t nmodules, modules_cap, modules_seen;
  int complete, salvage, failed;
  char error[640];
  char warning[640];
};

__attribute__((format(printf, 3, 4))) static int fail(obm_capture_t *cap, size_t offset,
                                                      const char *fmt, ...) {
  char what[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (cap->in_block && cap->zipped) /* offset: in the block's content */
    snprintf(cap->error, sizeof cap->error,
             "%s: offset %zu (a zstd-compressed block), byte %zu of its content: %s", cap->name,
             cap->block_start, offset, what);
  else
    snprintf(cap->error, sizeof cap->error, "%s: offset %zu: %s", cap->name, offset, what);
  cap->failed = 1;
  return -1;
}

static int grow(void **array, uint32_t *capacity, uint32_t need, size_t item) {
  if (need <= *capacity) return 0;
  uint32_t n = *capacity ? *capacity : 64;
  while (n < need)
    n *= 2;
  void *p = realloc(*array, (size_t)n * item);
  if (!p) return ENOMEM;
  *array = p;
  *capacity = n;
  return 0;
}

static obm_capture_t *open_common(obm_capture_t *cap, char *err, size_t err_size) {
  const uint8_t *h = cap->data;
  const char *what = NULL;
  size_t at = 0;
  uint16_t version = 0, header_size = 0;
  if (cap->size < OBM_CAP_HEADER_SIZE && (cap->size < 8 || memcmp(h, OBM_CAP_MAGIC, 8) == 0)) {
    what = cap->size == 0 ? "empty file, not an obmem capture"
                          : "truncated: the 64-byte header is incomplete";
    at = cap->size;
  } else if (memcmp(h, OBM_CAP_MAGIC, 8) != 0) {
    what = "not an obmem capture (the file does not start with \"OBMEMCAP\")";
  } else {
    memcpy(&version, h + 8, 2);
    memcpy(&header_size, h + 10, 2);
    if (version < 1 || version > OBM_CAPTURE_VERSION) {
      at = 8;
      snprintf(cap->error, sizeof cap->error,
               "%s: offset 8: capture version %u, this reader "
               "reads versions 1 to %u",
               cap->name, version, OBM_CAPTURE_VERSION);
    } else if (header_size != OBM_CAP_HEADER_SIZE) {
      at = 10;
      what = "header size is not 64";
    } else if (_obm_cap_crc32(0, h, 60) != _obm_cap_get_u32(h + 60)) {
      at = 60;
      what = "header checksum mismatch (damaged header)";
    } else if (_obm_cap_get_u32(h + 40) != OBM_CAP_ADDRESS_SHIFT) {
      at = 40;
      what = "unsupported address shift";
    }
  }
  if (what) snprintf(cap->error, sizeof cap->error, "%s: offset %zu: %s", cap->name, at, what);
  if (what || cap->error[0]) {
    if (err && err_size) snprintf(err, err_size, "%s", cap->error);
    obm_capture_close(cap);
    return NULL;
  }
  cap->header.version = version;
  cap->header.flags = _obm_cap_get_u32(h + 12);
  cap->header.sample_mean_bytes = _obm_cap_get_u64(h + 16);
  cap->header.pid = _obm_cap_get_u32(h + 24);
  cap->header.page_size = _obm_cap_get_u32(h + 28);
  cap->header.start_time_ns = _obm_cap_get_u64(h + 32);
  cap->header.address_shift = OBM_CAP_ADDRESS_SHIFT;
  cap->nstacks = 1;
  cap->nframes = 1;
  cap->nthreads = 1;
  if (grow((void **)&cap->stacks, &cap->stacks_cap, 1, sizeof(cap_stack_t)) ||
      grow((void **)&cap->frames, &cap->frames_cap, 1, sizeof(uint64_t))) {
    if (err && err_size) snprintf(err, err_size, "%s: out of memory", cap->name);
    obm_capture_close(cap);
    return NULL;
  }
  cap->stacks[0] = (cap_stack_t){0, 0};
  cap->frames[0] = 0;
  obm_capture_rewind(cap);
  return cap;
}

obm_capture_t *obm_capture_open_memory(const void *data, size_t size, const char *name, char *err,
                                       size_t err_size) {
  obm_capture_t *cap = calloc(1, sizeof *cap);
  if (cap) cap->name = strdup(name ? name : "<memory>");
  if (!cap || !cap->name) {
    free(cap);
    if (err && err_size) snprintf(err, err_size, "%s: out of memory", name ? name : "<memory>");
    return NULL;
  }
  cap->data = data;
  cap->size = size;
  return open_common(cap, err, err_size);
}

obm_capture_t *obm_capture_open(const char *path, char *err, size_t err_size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (err && err_size) snprintf(err, err_size, "%s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    if (err && err_size) snprintf(err, err_size, "%s: not a regular file", path);
    close(fd);
    return NULL;
  }
  static const uint8_t empty[1];
  const uint8_t *data = empty;
  size_t size = (size_t)st.st_size;
  if (size > 0) {
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      if (err && err_size) snprintf(err, err_size, "%s: mmap: %s", path, strerror(errno));
      close(fd);
      return NULL;
    }
    madvise(m, size, MADV_SEQUENTIAL);
    data = m;
  }
  close(fd);
  obm_capture_t *cap = obm_capture_open_memory(data, size, path, err, err_size);
  if (!cap) {
    if (size > 0) munmap((void *)data, size);
    return NULL;
  }
  cap->mapped = size > 0;
  return cap;
}

void obm_capture_close(obm_capture_t *cap) {
  if (!cap) return;
  if (cap->mapped) munmap((void *)cap->data, cap->size);
  for (uint32_t i = 0; i < cap->nthreads && cap->threads; i++)
    free(cap->threads[i].name);
  for (uint32_t i = 0; i < cap->nmodules; i++)
    free(cap->modules[i].path);
  free(cap->threads);
  free(cap->modules);
  free(cap->unzipped);
  _obm_cap_zstd_decompressor_free(cap->dctx);
  for (uint32_t i = 0; i < cap->nframes && cap->pyframes && i < cap->pyframes_cap; i++)
    free(cap->pyframes[i]);
  free(cap->pyframes);
  free(cap->frames);
  free(cap->stacks);
  free(cap->name);
  free(cap);
}

void obm_capture_rewind(obm_capture_t *cap) {
  cap->pos = OBM_CAP_HEADER_SIZE;
  cap->dropped = 0;
  cap->in_block = 0;
  cap->frames_seen = cap->stacks_seen = cap->modules_seen = 0;
  cap->complete = 0;
  cap->failed = 0;
  cap->error[0] = 0;
  cap->warning[0] = 0;
}

/* Reads a varint of the current block at cap->rec; -1 (and the error) past the block's end. */
static int get_varint(obm_capture_t *cap, size_t record, uint64_t *out) {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (cap->rec >= cap->block_end)
      return fail(cap, record, "record runs past the end of its block (block at offset %zu)",
                  cap->block_start);
    uint8_t b = cap->bytes[cap->rec++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return fail(cap, record, "varint longer than 10 bytes");
}

/* Reads a length-prefixed string of at most max bytes into a fresh NUL-terminated copy. */
static int get_bytes(obm_capture_t *cap, size_t record, uint64_t max, const uint8_t **bytes,
                     uint64_t *len) {
  if (get_varint(cap, record, len)) return -1;
  if (*len > max)
    return fail(cap, record, "length %llu exceeds %llu", (unsigned long long)*len,
                (unsigned long long)max);
  if (*len > cap->block_end - cap->rec)
    return fail(cap, record, "string runs past the end of its block (block at offset %zu)",
                cap->block_start);
  *bytes = cap->bytes + cap->rec;
  cap->rec += (size_t)*len;
  return 0;
}

static int start_block(obm_capture_t *cap) {
  size_t at = cap->pos, left = cap->size - at;
  const uint8_t *b = cap->data + at;
  if (left < OBM_CAP_BLOCK_HEADER_SIZE ||
      left < OBM_CAP_BLOCK_HEADER_SIZE + (size_t)_obm_cap_get_u32(b + 4)) {
    int header_ok = left >= 4 && _obm_cap_get_u32(b) == OBM_CAP_BLOCK_MAGIC;
    if (!header_ok && left >= 4)
      return fail(cap, at, "not a block (bad magic 0x%08x): damaged file", _obm_cap_get_u32(b));
    if (left >= 8 && _obm_cap_get_u32(b + 4) > OBM_CAP_BLOCK_MAX)
      return fail(cap, at, "block size %u exceeds the maximum %zu: damaged file",
                  _obm_cap_get_u32(b + 4), OBM_CAP_BLOCK_MAX);
    if (cap->salvage) {
      snprintf(cap->warning, sizeof cap->warning,
               "%s: offset %zu: truncated: the last %zu bytes are an incomplete block, ignored "
               "(--salvage)",
               cap->name, at, left);
      cap->pos = cap->size;
      return 1;
    }
    return fail(cap, at,
                "truncated: an incomplete block (%zu bytes left of %zu announced); the program "
                "was probably killed while writing: salvage reads the whole blocks before it",
                left,
                left >= 8 ? OBM_CAP_BLOCK_HEADER_SIZE + (size_t)_obm_cap_get_u32(b + 4)
                          : (size_t)OBM_CAP_BLOCK_HEADER_SIZE);
  }
  uint32_t size = _obm_cap_get_u32(b + 4);
  if (_obm_cap_get_u32(b) != OBM_CAP_BLOCK_MAGIC)
    return fail(cap, at, "not a block (bad magic 0x%08x): damaged file", _obm_cap_get_u32(b));
  if (size > OBM_CAP_BLOCK_MAX)
    return fail(cap, at, "block size %u exceeds the maximum %zu: damaged file", size,
                OBM_CAP_BLOCK_MAX);
  uint32_t crc = _obm_cap_crc32(_obm_cap_crc32(0, b + 12, 12), b + OBM_CAP_BLOCK_HEADER_SIZE, size);
  if (crc != _obm_cap_get_u32(b + 8))
    return fail(cap, at, "damaged block: checksum mismatch (%u payload bytes)", size);
  uint32_t stream = _obm_cap_get_u32(b + 12);
  int zipped = (stream & OBM_CAP_STREAM_ZSTD) != 0;
  stream &= ~OBM_CAP_STREAM_ZSTD;
  if (zipped && cap->header.version < 2)
    return fail(cap, at, "a zstd-compressed block in a version %u capture: damaged file",
                cap->header.version);
  if (stream != 0 && (stream >= cap->nthreads || !cap->threads[stream].name))
    return fail(cap, at, "block of thread %u before that thread's THREAD record", stream);
  if (cap->complete) return fail(cap, at, "data after the END record");
  /* what was read is never read again (records are copied out; a rewind faults the pages back
   * from the page cache), so a long capture keeps a bounded window of the file mapped */
  if (cap->mapped && at - cap->dropped >= DROP_BEHIND) {
    size_t end = at & ~(size_t)4095;
    madvise((void *)(cap->data + cap->dropped), end - cap->dropped, MADV_DONTNEED);
    cap->dropped = end;
  }
  cap->bytes = cap->data;
  cap->payload = at + OBM_CAP_BLOCK_HEADER_SIZE;
  cap->block_end = cap->payload + size;
  if (zipped) {
    const char *why = _obm_cap_zstd_missing();
    if (!why && !cap->unzipped) cap->unzipped = malloc(OBM_CAP_BLOCK_MAX);
    if (!why && !cap->dctx) cap->dctx = _obm_cap_zstd_decompressor();
    if (!why && (!cap->unzipped || !cap->dctx)) why = "out of memory";
    size_t n = 0;
    if (!why)
      why = _obm_cap_zstd_decompress(cap->dctx, cap->unzipped, OBM_CAP_BLOCK_MAX,
                                     cap->data + cap->payload, size, &n);
    if (why) return fail(cap, at, "cannot read a zstd-compressed block: %s", why);
    cap->bytes = cap->unzipped;
    cap->payload = 0;
    cap->block_end = n;
  }
  cap->in_block = 1;
  cap->zipped = zipped;
  cap->block_start = at;
  cap->next_block = at + OBM_CAP_BLOCK_HEADER_SIZE + size;
  cap->rec = cap->payload;
  cap->stream = stream;
  cap->time_ns = _obm_cap_get_u64(b + 16);
  memset(&cap->delta, 0, sizeof cap->delta);
  return 0;
}

/* A new pair's fields (ALLOC's, with stack; ALLOC_MRU_STACK's, stack NULL): the size, the
 * stack and the address (units), in version 2 in that order with the address against the
 * size's base, in version 1 the address first, against last_alloc. */
static int get_new_pair(obm_capture_t *cap, size_t at, uint64_t *units, uint64_t *size,
                        uint64_t *stack) {
  uint64_t delta = 0;
  if (cap->header.version >= 2) {
    if (get_varint(cap, at, size) || (stack && get_varint(cap, at, stack)) ||
        get_varint(cap, at, &delta))
      return -1;
    *units = _obm_cap_alloc_base(&cap->delta, *size) + (uint64_t)_obm_cap_unzigzag(delta);
  } else {
    if (get_varint(cap, at, &delta) || get_varint(cap, at, size) ||
        (stack && get_varint(cap, at, stack)))
      return -1;
    *units = cap->delta.last_alloc + (uint64_t)_obm_cap_unzigzag(delta);
  }
  return 0;
}

/* Decodes one record of the current block.  1 = a record for the caller in *out, 0 = a
 * definition absorbed, -1 = error. */
static int decode(obm_capture_t *cap, obm_capture_record_t *out) {
  size_t at = cap->rec;
  uint8_t tag = cap->bytes[cap->rec++];
  uint64_t a = 0, b = 0, c = 0;
  unsigned shift = OBM_CAP_ADDRESS_SHIFT;
  memset(out, 0, sizeof *out);
  out->offset = cap->zipped ? cap->block_start : at;
  out->thread = cap->stream;
  int event = (tag & 0xc0) || tag <= OBM_CAP_TIME;
  if (event && cap->stream == 0)
    return fail(cap, at, "event record (tag 0x%02x) in the definitions stream", tag);
  if (!event && cap->stream != 0)
    return fail(cap, at, "definition record (tag 0x%02x) in thread %u's stream", tag, cap->stream);
  out->time_ns = cap->time_ns;
  obm_cap_delta_t *d = &cap->delta;
  uint64_t units;
  int k = -1;
  if ((tag & 0xc0) == OBM_CAP_TAG_FREE_NEAR) {
    units = d->last_free + (uint64_t)((int64_t)(tag & 0x3f) - ((tag & 0x20) ? 64 : 0));
    goto free_at;
  }
  if ((tag & 0xf8) == OBM_CAP_TAG_FREE_RECENT) {
    units = _obm_cap_recent(d, tag & 7u);
    goto free_at;
  }
  if ((tag & 0xc0) == OBM_CAP_TAG_ALLOC_MRU || (tag & 0xfc) == OBM_CAP_ALLOC_MRU_FAR) {
    int near = (tag & 0xc0) == OBM_CAP_TAG_ALLOC_MRU;
    k = near ? (tag >> 4) & 3 : tag & 3;
    if ((uint32_t)k >= d->nmru)
      return fail(cap, at, "allocation of recent pair %d, but only %u pairs seen in this block", k,
                  d->nmru);
    if (near) {
      int64_t q = (int64_t)(tag & 0xf) - ((tag & 0x8) ? 16 : 0);
      units = d->mru[k].last + (uint64_t)q * _obm_cap_block_units(d->mru[k].size);
    } else {
      if (get_varint(cap, at, &a)) return -1;
      units = d->mru[k].last + (uint64_t)_obm_cap_unzigzag(a);
    }
    b = d->mru[k].size;
    c = d->mru[k].stack;
    goto alloc_at;
  }
  if ((tag & 0xfc) == OBM_CAP_ALLOC_MRU_STACK) {
    if ((tag & 3u) >= d->nmru)
      return fail(cap, at,
                  "allocation with the stack of recent pair %u, but only %u pairs seen "
                  "in this block",
                  tag & 3u, d->nmru);
    if (get_new_pair(cap, at, &units, &b, NULL)) return -1;
    c = d->mru[tag & 3u].stack;
    k = _obm_cap_mru_find(d, b, (uint32_t)c);
    goto alloc_at;
  }
  switch (tag) {
  case OBM_CAP_ALLOC:
    if (get_new_pair(cap, at, &units, &b, &c)) return -1;
    if (c >= cap->nstacks)
      return fail(cap, at, "allocation with undefined stack id %llu", (unsigned long long)c);
    k = _obm_cap_mru_find(d, b, (uint32_t)c);
    goto alloc_at;
  case OBM_CAP_FREE:
    if (get_varint(cap, at, &a)) return -1;
    units = d->last_free + (uint64_t)_obm_cap_unzigzag(a);
    goto free_at;
  case OBM_CAP_ALLOC_RAW:
    if (get_varint(cap, at, &a) || get_varint(cap, at, &b) || get_varint(cap, at, &c)) return -1;
    if (c >= cap->nstacks)
      return fail(cap, at, "allocation with undefined stack id %llu", (unsigned long long)c);
    out->kind = OBM_CAPTURE_ALLOC;
    out->address = a;
    out->size = b;
    out->stack = (uint32_t)c;
    return 1;
  case OBM_CAP_FREE_RAW:
    if (get_varint(cap, at, &a)) return -1;
    out->kind = OBM_CAPTURE_FREE;
    out->address = a;
    return 1;
  case OBM_CAP_TIME:
    if (get_varint(cap, at, &a)) return -1;
    cap->time_ns += a * 1000;
    return 0;
  case OBM_CAP_FRAME:
    if (get_varint(cap, at, &a)) return -1;
    if (++cap->frames_seen >= cap->nframes) {
      if (grow((void **)&cap->frames, &cap->frames_cap, cap->nframes + 1, sizeof(uint64_t)))
        return fail(cap, at, "out of memory");
      cap->frames[cap->nframes++] = a;
    }
    return 0;
  case OBM_CAP_PYFRAME: {
    const uint8_t *function, *file;
    uint64_t function_len, file_len;
    if (get_varint(cap, at, &a)) return -1;
    if (a > UINT32_MAX)
      return fail(cap, at, "Python frame line %llu out of range", (unsigned long long)a);
    if (get_bytes(cap, at, OBM_CAP_PYNAME_MAX, &function, &function_len) ||
        get_bytes(cap, at, OBM_CAP_NAME_MAX, &file, &file_len))
      return -1;
    if (memchr(function, 0, (size_t)function_len) || memchr(file, 0, (size_t)file_len))
      return fail(cap, at, "Python frame name holds a NUL byte");
    if (++cap->frames_seen >= cap->nframes) {
      uint32_t id = cap->nframes;
      if (grow((void **)&cap->frames, &cap->frames_cap, id + 1, sizeof(uint64_t)))
        return fail(cap, at, "out of memory");
      if (id >= cap->pyframes_cap) {
        uint32_t old = cap->pyframes_cap;
        if (grow((void **)&cap->pyframes, &cap->pyframes_cap, id + 1, sizeof(cap_pyframe_t *)))
          return fail(cap, at, "out of memory");
        memset(cap->pyframes + old, 0, (cap->pyframes_cap - old) * sizeof(cap_pyframe_t *));
      }
      cap_pyframe_t *f = malloc(sizeof *f + (size_t)function_len + (size_t)file_len + 2);
      if (!f) return fail(cap, at, "out of memory");
      f->line = (uint32_t)a;
      memcpy(f->function, function, (size_t)function_len);
      f->function[function_len] = 0;
      char *file_copy = f->function + function_len + 1;
      memcpy(file_copy, file, (size_t)file_len);
      file_copy[file_len] = 0;
      f->file = file_copy;
      cap->pyframes[id] = f;
      cap->frames[cap->nframes++] = 0;
    }
    return 0;
  }
  case OBM_CAP_STACK: {
    if (get_varint(cap, at, &a) || get_varint(cap, at, &b)) return -1;
    uint32_t id = cap->stacks_seen + 1;
    if (a >= id)
      return fail(cap, at, "stack %u's parent %llu is not an earlier stack", id,
                  (unsigned long long)a);
    if (b == 0 || b > cap->frames_seen)
      return fail(cap, at, "stack %u's frame %llu is not defined", id, (unsigned long long)b);
    cap->stacks_seen = id;
    if (id >= cap->nstacks) {
      if (grow((void **)&cap->stacks, &cap->stacks_cap, id + 1, sizeof(cap_stack_t)))
        return fail(cap, at, "out of memory");
      cap->stacks[id] = (cap_stack_t){(uint32_t)a, (uint32_t)b};
      cap->nstacks = id + 1;
    }
    return 0;
  }
  case OBM_CAP_THREAD: {
    const uint8_t *name;
    if (get_varint(cap, at, &a) || get_varint(cap, at, &b)) return -1;
    if (a == 0 || a > (1u << 20))
      return fail(cap, at, "thread index %llu out of range", (unsigned long long)a);
    if (get_bytes(cap, at, OBM_CAP_NAME_MAX, &name, &c)) return -1;
    int first = cap->threads == NULL;
    if (grow((void **)&cap->threads, &cap->threads_cap, (uint32_t)a + 1, sizeof(cap_thread_t)))
      return fail(cap, at, "out of memory");
    if (first) cap->threads[0] = (cap_thread_t){0, NULL}; /* index 0: the writer, unnamed */
    while (cap->nthreads <= a)
      cap->threads[cap->nthreads++] = (cap_thread_t){0, NULL};
    char *copy = strndup((const char *)name, (size_t)c);
    if (!copy) return fail(cap, at, "out of memory");
    free(cap->threads[a].name);
    cap->threads[a] = (cap_thread_t){b, copy};
    out->kind = OBM_CAPTURE_THREAD;
    out->thread = (uint32_t)a;
    return 1;
  }
  case OBM_CAP_MODULE: {
    const uint8_t *path, *id;
    uint64_t id_size;
    if (get_varint(cap, at, &a) || get_bytes(cap, at, OBM_CAP_NAME_MAX, &path, &b) ||
        get_bytes(cap, at, OBM_CAP_BUILD_ID_MAX, &id, &id_size))
      return -1;
    if (++cap->modules_seen > cap->nmodules) {
      if (grow((void **)&cap->modules, &cap->modules_cap, cap->nmodules + 1, sizeof(cap_module_t)))
        return fail(cap, at, "out of memory");
      cap_module_t *m = &cap->modules[cap->nmodules];
      m->path = strndup((const char *)path, (size_t)b);
      if (!m->path) return fail(cap, at, "out of memory");
      m->load_address = a;
      m->build_id_size = (uint32_t)id_size;
      memcpy(m->build_id, id, (size_t)id_size);
      cap->nmodules++;
    }
    out->kind = OBM_CAPTURE_MODULE;
    out->address = a;
    return 1;
  }
  case OBM_CAP_SAMPLE: {
    uint64_t v[6];
    for (int i = 0; i < 6; i++)
      if (get_varint(cap, at, &v[i])) return -1;
    out->kind = OBM_CAPTURE_SAMPLE;
    out->time_ns = v[0] * 1000;
    out->sample.heap_bytes = v[1];
    out->sample.rss_bytes = v[2];
    out->sample.arenas = v[3];
    out->sample.pools = v[4];
    out->sample.fragmentation_pct10 = v[5] > 1000 ? 1000 : (uint32_t)v[5];
    return 1;
  }
  case OBM_CAP_END:
    if (get_varint(cap, at, &a) || get_varint(cap, at, &b)) return -1;
    out->kind = OBM_CAPTURE_END;
    out->nevents = a;
    out->nlost = b;
    cap->complete = 1;
    return 1;
  default:
    return fail(cap, at, "unknown record tag 0x%02x", tag);
  }
alloc_at:
  _obm_cap_note_alloc(d, k, units, b, (uint32_t)c);
  out->kind = OBM_CAPTURE_ALLOC;
  out->address = units << shift;
  out->size = b;
  out->stack = (uint32_t)c;
  return 1;
free_at:
  d->last_free = units;
  out->kind = OBM_CAPTURE_FREE;
  out->address = units << shift;
  return 1;
}

int obm_capture_next(obm_capture_t *cap, obm_capture_record_t *out) {
  if (cap->failed) return -1;
  for (;;) {
    if (!cap->in_block) {
      if (cap->pos >= cap->size) return 0;
      int r = start_block(cap);
      if (r < 0) return -1;
      if (r > 0) return 0; /* salvaged: the rest is ignored */
    }
    if (cap->rec >= cap->block_end) {
      cap->in_block = 0;
      cap->pos = cap->next_block;
      continue;
    }
    int r = decode(cap, out);
    if (r != 0) return r;
  }
}

void obm_capture_set_salvage(obm_capture_t *cap, int salvage) {
  cap->salvage = salvage;
}
const obm_capture_header_t *obm_capture_header(const obm_capture_t *cap) {
  return &cap->header;
}
const char *obm_capture_error(const obm_capture_t *cap) {
  return cap->error;
}
const char *obm_capture_warning(const obm_capture_t *cap) {
  return cap->warning[0] ? cap->warning : NULL;
}
int obm_capture_complete(const obm_capture_t *cap) {
  return cap->complete;
}
uint64_t obm_capture_file_size(const obm_capture_t *cap) {
  return cap->size;
}
uint64_t obm_capture_offset(const obm_capture_t *cap) {
  return cap->in_block && !cap->zipped ? cap->rec : cap->in_block ? cap->block_start : cap->pos;
}
uint32_t obm_capture_nstacks(const obm_capture_t *cap) {
  return cap->nstacks;
}
int obm_capture_stack(const obm_capture_t *cap, uint32_t stack, uint32_t *parent, uint32_t *frame) {
  if (stack >= cap->nstacks) return EINVAL;
  *parent = cap->stacks[stack].parent;
  *frame = cap->stacks[stack].frame;
  return 0;
}
uint32_t obm_capture_nframes(const obm_capture_t *cap) {
  return cap->nframes;
}
uint64_t obm_capture_frame_address(const obm_capture_t *cap, uint32_t frame) {
  return frame < cap->nframes ? cap->frames[frame] : 0;
}
int obm_capture_frame_python(const obm_capture_t *cap, uint32_t frame, const char **function,
                             const char **file, uint32_t *line) {
  if (frame >= cap->nframes || frame >= cap->pyframes_cap || !cap->pyframes[frame]) return 0;
  const cap_pyframe_t *f = cap->pyframes[frame];
  if (function) *function = f->function;
  if (file) *file = f->file;
  if (line) *line = f->line;
  return 1;
}
uint32_t obm_capture_nthreads(const obm_capture_t *cap) {
  return cap->nthreads;
}
const char *obm_capture_thread_name(const obm_capture_t *cap, uint32_t thread) {
  /* nthreads counts stream 0 from the start, the table exists from the first THREAD record */
  return thread < cap->nthreads && cap->threads && cap->threads[thread].name
             ? cap->threads[thread].name
             : "";
}
uint64_t obm_capture_thread_tid(const obm_capture_t *cap, uint32_t thread) {
  return thread < cap->nthreads && cap->threads ? cap->threads[thread].tid : 0;
}
uint32_t obm_capture_nmodules(const obm_capture_t *cap) {
  return cap->nmodules;
}
int obm_capture_module(const obm_capture_t *cap, uint32_t index, obm_capture_module_t *out) {
  if (index >= cap->nmodules) return EINVAL;
  const cap_module_t *m = &cap->modules[index];
  out->load_address = m->load_address;
  out->path = m->path;
  out->build_id = m->build_id;
  out->build_id_size = m->build_id_size;
  return 0;
}
