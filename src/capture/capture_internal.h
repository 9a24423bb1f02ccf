/* capture_internal.h — the capture file format, one definition for the writer (src/trace) and
 * the reader (src/capture/reader.c).  docs/capture-format.md describes the same bytes for a
 * person; a change here is a change there and a new OBM_CAPTURE_VERSION.
 *
 *   file   = header (64 bytes) block*
 *   block  = "OBLK" payload_size:u32 crc:u32 stream:u32 base_time_ns:u64 payload
 *            crc = CRC-32 (IEEE) of bytes 12..23 of the block header, then of the payload
 *   stream = 0: definitions and timeline, written by the writer thread;
 *            k >= 1: the events of thread k, in the order that thread made them;
 *            | OBM_CAP_STREAM_ZSTD: the payload is a zstd frame of the records (version 2)
 *   record = tag byte, then varints (LEB128, unsigned; "zz" = zigzag-signed)
 *
 * Event records (stream >= 1) are coded against the block's recent events (obm_cap_delta_t
 * below); every block starts from a zeroed state and base_time_ns, so it decodes on its own.
 */
#ifndef OBM_CAPTURE_INTERNAL_H
#define OBM_CAPTURE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define OBM_CAP_MAGIC             "OBMEMCAP"
#define OBM_CAP_HEADER_SIZE       64
#define OBM_CAP_BLOCK_MAGIC       0x4b4c424fu /* "OBLK" little-endian */
#define OBM_CAP_BLOCK_HEADER_SIZE 24
#define OBM_CAP_BLOCK_MAX         ((size_t)1 << 20) /* largest payload a writer makes */
#define OBM_CAP_ADDRESS_SHIFT     4                 /* obmem blocks are 16-byte aligned */
#define OBM_CAP_NAME_MAX          4096              /* longest thread name or module path */
#define OBM_CAP_BUILD_ID_MAX      64
#define OBM_CAP_PYNAME_MAX        1024              /* longest PYFRAME function name */

/* Event coding state, the same on both sides, reset at every block (obm_cap_delta_t):
 *   mru[0..nmru)   the last 4 distinct (stack, size) pairs allocated, most recent first, each
 *                  with the address of its latest allocation;
 *   recent[8]      the last 8 addresses allocated (a ring; age 0 = the latest);
 *   last_alloc, last_free   the latest allocated and freed addresses;
 *   size_last[c]   (version 2) the latest address allocated with a size of size context c
 *                  (_obm_cap_size_context: 16-byte steps to 1 KiB, then 4 per doubling), 0
 *                  when none: an allocator hands out blocks of one size class from the same
 *                  pools, so the address of a new pair is coded against its size's latest
 *                  (one or two bytes where last_alloc, another size's pool, costs three).
 * Addresses are in units of 1 << OBM_CAP_ADDRESS_SHIFT.  A pair's "block" is
 * ceil(size / 16) units (1 for size 0): consecutive blocks of one size class are one block
 * apart, so allocations that bump through a pool or reuse a nearby block cost one byte.
 *
 * Short forms, the whole record in the tag byte:
 *   01kkqqqq  ALLOC_MRU    pair k; address = mru[k].last + q blocks (q signed 4-bit, -8..7)
 *   10000iii  FREE_RECENT  address = recent[age i]
 *   11dddddd  FREE_NEAR    address = last_free + d units (d signed 6-bit, -32..31)
 * Other forms, 00tttttt or 10001xkk, followed by varints ("zz" = zigzag-signed).  In version
 * 2 the address of ALLOC and ALLOC_MRU_STACK comes last, coded against
 * base = size_last[context(size)], or last_alloc when that is 0; version 1 had it first,
 * against last_alloc: */
enum {
  OBM_CAP_ALLOC = 0x01,           /* zz(address - last_alloc), size, stack: a new pair
                                     (version 2: size, stack, zz(address - base)) */
  OBM_CAP_FREE = 0x04,            /* zz(address - last_free) */
  OBM_CAP_ALLOC_RAW = 0x05,       /* address, size, stack: an unaligned address; state untouched */
  OBM_CAP_FREE_RAW = 0x06,        /* address; state untouched */
  OBM_CAP_TIME = 0x07,            /* microseconds since the previous time of this block */
  OBM_CAP_FRAME = 0x10,           /* address (return address); id = next frame id (from 1) */
  OBM_CAP_STACK = 0x11,           /* parent stack, frame; id = next stack id (from 1) */
  OBM_CAP_THREAD = 0x12,          /* index, os tid, name length, name */
  OBM_CAP_MODULE = 0x13,          /* load address, path length, path, id length, build id */
  OBM_CAP_SAMPLE = 0x14,          /* time us, heap, rss, arenas, pools, fragmentation 1/1000 */
  OBM_CAP_END = 0x15,             /* nevents, nlost */
  OBM_CAP_PYFRAME = 0x16,         /* line, function length, function, file length, file: an
                                     interpreter's frame (Python); id = next frame id */
  OBM_CAP_ALLOC_MRU_FAR = 0x88,   /* + k (0..3): zz(address - mru[k].last) in units */
  OBM_CAP_ALLOC_MRU_STACK = 0x8c, /* + k (0..3): zz(address - last_alloc), size; the stack of
                                     pair k with a new size: a new pair (version 2: size,
                                     zz(address - base)) */
};
#define OBM_CAP_TAG_ALLOC_MRU   0x40u
#define OBM_CAP_TAG_FREE_RECENT 0x80u
#define OBM_CAP_TAG_FREE_NEAR   0xc0u
#define OBM_CAP_NMRU            4
#define OBM_CAP_NRECENT         8
#define OBM_CAP_NSIZES          160 /* size contexts */

typedef struct obm_cap_pair_s {
  uint64_t size;
  uint64_t last; /* units */
  uint32_t stack;
} obm_cap_pair_t;

/* Invariants: nmru <= OBM_CAP_NMRU; mru pairs distinct; recent[(head - 1 - i) % 8] = age i. */
typedef struct obm_cap_delta_s {
  uint64_t last_alloc, last_free;
  uint64_t recent[OBM_CAP_NRECENT];
  uint32_t recent_head, nmru;
  obm_cap_pair_t mru[OBM_CAP_NMRU];
  uint64_t size_last[OBM_CAP_NSIZES];
} obm_cap_delta_t;

/* The size context of an allocation of size bytes: its 16-byte units up to 64 (1 KiB), then
 * four contexts per doubling, the largest shared by everything from 8 GiB up. */
static inline uint32_t _obm_cap_size_context(uint64_t size) {
  uint64_t units = size ? (size + 15) >> 4 : 1;
  if (units <= 64) return (uint32_t)units;
  uint32_t b = 63u - (uint32_t)__builtin_clzll(units); /* >= 6 */
  uint32_t c = 64 + (b - 6) * 4 + (uint32_t)((units >> (b - 2)) & 3);
  return c < OBM_CAP_NSIZES ? c : OBM_CAP_NSIZES - 1;
}
/* The base a new pair's address is coded against (version 2). */
static inline uint64_t _obm_cap_alloc_base(const obm_cap_delta_t *d, uint64_t size) {
  uint64_t last = d->size_last[_obm_cap_size_context(size)];
  return last ? last : d->last_alloc;
}

static inline uint64_t _obm_cap_block_units(uint64_t size) {
  return size ? (size + 15) >> 4 : 1;
}
static inline int _obm_cap_mru_find(const obm_cap_delta_t *d, uint64_t size, uint32_t stack) {
  for (uint32_t k = 0; k < d->nmru; k++)
    if (d->mru[k].size == size && d->mru[k].stack == stack) return (int)k;
  return -1;
}
static inline int _obm_cap_mru_find_stack(const obm_cap_delta_t *d, uint32_t stack) {
  for (uint32_t k = 0; k < d->nmru; k++)
    if (d->mru[k].stack == stack) return (int)k;
  return -1;
}
static inline uint64_t _obm_cap_recent(const obm_cap_delta_t *d, uint32_t age) {
  return d->recent[(d->recent_head - 1 - age) & (OBM_CAP_NRECENT - 1)];
}
/* After an aligned allocation at units of pair k (-1: a new pair). */
static inline void _obm_cap_note_alloc(obm_cap_delta_t *d, int k, uint64_t units, uint64_t size,
                                       uint32_t stack) {
  if (k < 0) k = d->nmru < OBM_CAP_NMRU ? (int)d->nmru++ : OBM_CAP_NMRU - 1;
  /* moved one place down, each a struct copy (the loop was a call of memmove) */
  _Static_assert(OBM_CAP_NMRU == 4, "the cases below");
  switch (k) {
  case 3:
    d->mru[3] = d->mru[2];
    /* fall through */
  case 2:
    d->mru[2] = d->mru[1];
    /* fall through */
  case 1:
    d->mru[1] = d->mru[0];
    /* fall through */
  default:
    break;
  }
  d->mru[0] = (obm_cap_pair_t){size, units, stack};
  d->recent[d->recent_head++ & (OBM_CAP_NRECENT - 1)] = units;
  d->last_alloc = units;
  d->size_last[_obm_cap_size_context(size)] = units;
}

#define OBM_CAP_EVENT_MAX 32 /* longest event record in bytes (tag + 3 varints of <= 10) */

static inline uint8_t *_obm_cap_put_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}
static inline uint64_t _obm_cap_zigzag(int64_t v) {
  return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}
static inline int64_t _obm_cap_unzigzag(uint64_t v) {
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}
static inline void _obm_cap_put_u32(uint8_t *p, uint32_t v) {
  memcpy(p, &v, 4); /* the format is little-endian, as is every machine obmem runs on */
}
static inline void _obm_cap_put_u64(uint8_t *p, uint64_t v) {
  memcpy(p, &v, 8);
}
static inline uint32_t _obm_cap_get_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t _obm_cap_get_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32): crc = _obm_cap_crc32(0, data, n), and
 * chained as _obm_cap_crc32(previous, more, m).  Table-driven, 8 bytes a step. */
__attribute__((visibility("hidden"))) uint32_t _obm_cap_crc32(uint32_t crc, const void *data,
                                                              size_t size);

/* Fills the 64-byte file header. */
__attribute__((visibility("hidden"))) void
_obm_cap_header_encode(uint8_t out[OBM_CAP_HEADER_SIZE], uint32_t flags, uint64_t sample_mean_bytes,
                       uint32_t pid, uint32_t page_size, uint64_t start_time_ns);
/* Fills the 24-byte block header for payload (computing its checksum). */
__attribute__((visibility("hidden"))) void
_obm_cap_block_header_encode(uint8_t out[OBM_CAP_BLOCK_HEADER_SIZE], const uint8_t *payload,
                             uint32_t payload_size, uint32_t stream, uint64_t base_time_ns);

/* zstd-compressed blocks (zstd.c; libzstd found with dlopen).  A block whose stream word has
 * OBM_CAP_STREAM_ZSTD (version 2 files) holds one zstd frame with its content size, at most
 * OBM_CAP_BLOCK_MAX bytes: that content is the block's records.  The checksum covers the
 * stored (compressed) bytes.  The writer compresses a block when that makes it smaller. */
#define OBM_CAP_STREAM_ZSTD 0x80000000u
#define OBM_CAP_ZSTD_LEVEL  1 /* the default: ~500 MB/s here, 15-20 % off already coded events */
/* A compression context (reused for every block of one thread), or NULL: no libzstd. */
__attribute__((visibility("hidden"))) void *_obm_cap_zstd_compressor(void);
__attribute__((visibility("hidden"))) void _obm_cap_zstd_compressor_free(void *cctx);
/* The frame's size in dst, or 0 when it does not fit in capacity (or zstd failed). */
__attribute__((visibility("hidden"))) size_t _obm_cap_zstd_compress(void *cctx, void *dst,
                                                                    size_t capacity,
                                                                    const void *src, size_t size,
                                                                    int level);
__attribute__((visibility("hidden"))) void *_obm_cap_zstd_decompressor(void);
__attribute__((visibility("hidden"))) void _obm_cap_zstd_decompressor_free(void *dctx);
/* Decompresses one whole frame of size bytes into dst (capacity bytes): NULL and *out = the
 * content's size, or what was wrong with the frame. */
__attribute__((visibility("hidden"))) const char *
_obm_cap_zstd_decompress(void *dctx, void *dst, size_t capacity, const void *src, size_t size,
                         size_t *out);
/* NULL when libzstd is usable, else why not. */
__attribute__((visibility("hidden"))) const char *_obm_cap_zstd_missing(void);

#endif /* OBM_CAPTURE_INTERNAL_H */
