/* capture_internal.h — the capture file format, one definition for the writer (src/trace) and
 * the reader (src/capture/reader.c).  docs/capture-format.md describes the same bytes for a
 * person; a change here is a change there and a new OBM_CAPTURE_VERSION.
 *
 *   file   = header (64 bytes) block*
 *   block  = "OBLK" payload_size:u32 crc:u32 stream:u32 base_time_ns:u64 payload
 *            crc = CRC-32 (IEEE) of bytes 12..23 of the block header, then of the payload
 *   stream = 0: definitions and timeline, written by the writer thread;
 *            k >= 1: the events of thread k, in the order that thread made them
 *   record = tag byte, then varints (LEB128, unsigned; "zz" = zigzag-signed)
 *
 * Event records (stream >= 1) are delta-coded against the block's previous address (in units
 * of 1 << address_shift) and previous allocation; every block starts from address 0, no
 * previous allocation and base_time_ns, so a block decodes on its own.
 */
#ifndef OBM_CAPTURE_INTERNAL_H
#define OBM_CAPTURE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define OBM_CAP_MAGIC "OBMEMCAP"
#define OBM_CAP_HEADER_SIZE 64
#define OBM_CAP_BLOCK_MAGIC 0x4b4c424fu /* "OBLK" little-endian */
#define OBM_CAP_BLOCK_HEADER_SIZE 24
#define OBM_CAP_BLOCK_MAX ((size_t)1 << 20) /* largest payload a writer makes */
#define OBM_CAP_ADDRESS_SHIFT 4             /* obmem blocks are 16-byte aligned */
#define OBM_CAP_NAME_MAX 4096               /* longest thread name or module path */
#define OBM_CAP_BUILD_ID_MAX 64

/* Tags.  Two short forms use the high bits of the tag byte itself:
 *   1ddddddd  FREE_NEAR     address = previous + d (d signed 7-bit, -64..63 units)
 *   01dddddd  ALLOC_REPEAT  same size and stack as the previous ALLOC; address previous + d
 *                           (d signed 6-bit, -32..31 units)
 * All others are 00tttttt: */
enum {
  OBM_CAP_ALLOC = 0x01,             /* zz delta, size, stack */
  OBM_CAP_ALLOC_SAME_STACK = 0x02,  /* zz delta, size (stack of the previous ALLOC) */
  OBM_CAP_ALLOC_REPEAT_FAR = 0x03,  /* zz delta (size and stack of the previous ALLOC) */
  OBM_CAP_FREE = 0x04,              /* zz delta */
  OBM_CAP_ALLOC_RAW = 0x05,         /* address, size, stack: an unaligned address; no delta */
  OBM_CAP_FREE_RAW = 0x06,          /* address */
  OBM_CAP_TIME = 0x07,              /* microseconds since the previous time of this block */
  OBM_CAP_FRAME = 0x10,             /* address (return address); id = next frame id (from 1) */
  OBM_CAP_STACK = 0x11,             /* parent stack, frame; id = next stack id (from 1) */
  OBM_CAP_THREAD = 0x12,            /* index, os tid, name length, name */
  OBM_CAP_MODULE = 0x13,            /* load address, path length, path, id length, build id */
  OBM_CAP_SAMPLE = 0x14,            /* time us, heap, rss, arenas, pools, fragmentation 1/1000 */
  OBM_CAP_END = 0x15,               /* nevents, nlost */
};
#define OBM_CAP_TAG_FREE_NEAR 0x80u
#define OBM_CAP_TAG_ALLOC_REPEAT 0x40u
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
__attribute__((visibility("hidden"))) void _obm_cap_header_encode(uint8_t out[OBM_CAP_HEADER_SIZE],
                                                                  uint32_t flags,
                                                                  uint64_t sample_mean_bytes,
                                                                  uint32_t pid, uint32_t page_size,
                                                                  uint64_t start_time_ns);
/* Fills the 24-byte block header for payload (computing its checksum). */
__attribute__((visibility("hidden"))) void
_obm_cap_block_header_encode(uint8_t out[OBM_CAP_BLOCK_HEADER_SIZE], const uint8_t *payload,
                             uint32_t payload_size, uint32_t stream, uint64_t base_time_ns);

#endif /* OBM_CAPTURE_INTERNAL_H */
