/* format.c — the pieces of the capture format that the writer and the reader share: CRC-32 and
 * the encoding of the file and block headers (capture_internal.h lists the layout).
 *
 * CRC-32 is the IEEE polynomial (0xEDB88320 reflected), computed slice-by-8: eight 256-entry
 * tables built once, eight input bytes per step (about 1 byte per cycle).
 *
 * File header (64 bytes, little-endian):
 *   0 magic "OBMEMCAP" | 8 version:u16 | 10 header_size:u16 (64) | 12 flags:u32
 *   16 sample_mean_bytes:u64 | 24 pid:u32 | 28 page_size:u32 | 32 start_time_ns:u64
 *   40 address_shift:u32 | 44..59 zero | 60 crc:u32 of bytes 0..59
 */
#include "capture/capture_internal.h"
#include "obmem/capture.h"

#include <pthread.h>

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t _obm_cap_crc32(uint32_t crc, const void *data, size_t size) {
  pthread_once(&crc_once, crc_init);
  const uint8_t *p = data;
  crc = ~crc;
  while (size >= 8) {
    uint32_t lo = _obm_cap_get_u32(p) ^ crc, hi = _obm_cap_get_u32(p + 4);
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
          crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
          crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--)
    crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

void _obm_cap_header_encode(uint8_t out[OBM_CAP_HEADER_SIZE], uint32_t flags,
                            uint64_t sample_mean_bytes, uint32_t pid, uint32_t page_size,
                            uint64_t start_time_ns) {
  memset(out, 0, OBM_CAP_HEADER_SIZE);
  memcpy(out, OBM_CAP_MAGIC, 8);
  uint16_t version = OBM_CAPTURE_VERSION, header_size = OBM_CAP_HEADER_SIZE;
  memcpy(out + 8, &version, 2);
  memcpy(out + 10, &header_size, 2);
  _obm_cap_put_u32(out + 12, flags);
  _obm_cap_put_u64(out + 16, sample_mean_bytes);
  _obm_cap_put_u32(out + 24, pid);
  _obm_cap_put_u32(out + 28, page_size);
  _obm_cap_put_u64(out + 32, start_time_ns);
  _obm_cap_put_u32(out + 40, OBM_CAP_ADDRESS_SHIFT);
  _obm_cap_put_u32(out + 60, _obm_cap_crc32(0, out, 60));
}

void _obm_cap_block_header_encode(uint8_t out[OBM_CAP_BLOCK_HEADER_SIZE], const uint8_t *payload,
                                  uint32_t payload_size, uint32_t stream, uint64_t base_time_ns) {
  _obm_cap_put_u32(out, OBM_CAP_BLOCK_MAGIC);
  _obm_cap_put_u32(out + 4, payload_size);
  _obm_cap_put_u32(out + 12, stream);
  _obm_cap_put_u64(out + 16, base_time_ns);
  uint32_t crc = _obm_cap_crc32(0, out + 12, 12);
  _obm_cap_put_u32(out + 8, _obm_cap_crc32(crc, payload, payload_size));
}
