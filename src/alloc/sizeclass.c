/* sizeclass.c — the 60 size classes and the pool geometry of each.
 *
 * small  (CPython 3.12's 32 classes, ALIGNMENT 16): 16, 32, ..., 512; pools of one 16 KiB slot.
 * medium: 4 classes per doubling above 512 (640, 768, 896, 1024, 1280, ..., 65536): the step is
 *         12.5 %..25 % of the size, so rounding loses 12.5 % on average at most.  A medium pool
 *         spans the fewest slots (1..16) that hold at least 8 blocks with at most 1/8 of the
 *         pool lost to its tail; the classes from 40 KiB up cannot, and get 14..16 slots
 *         holding 4..6 blocks.
 */
#include "alloc/alloc_internal.h"

#define M(k) (5u << (k)), (6u << (k)), (7u << (k)), (8u << (k))
const uint32_t _obm_class_size[OBM_NCLASSES] = {
    16,  32,  48,  64,  80,  96,  112,  128,  144,  160,   176,   192,   208,
    224, 240, 256, 272, 288, 304, 320,  336,  352,  368,   384,   400,   416,
    432, 448, 464, 480, 496, 512, M(7), M(8), M(9), M(10), M(11), M(12), M(13),
};
#undef M

const uint8_t _obm_small_class[OBM_NSMALL_CLASSES + 1] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
};

uint8_t _obm_medium_class[OBM_MEDIUM_MAX >> 7];
uint8_t _obm_class_slots[OBM_NCLASSES];
uint32_t _obm_class_capacity[OBM_NCLASSES];
uint8_t _obm_aligned_class[OBM_ALIGNED_CLASS_SHIFTS][OBM_NCLASSES];
obm_class_div_t _obm_class_div[OBM_NCLASSES];

void _obm_sizeclass_init(void) {
  for (int c = 0; c < OBM_NCLASSES; c++) {
    uint32_t b = _obm_class_size[c];
    unsigned best = OBM_MAX_POOL_SLOTS;
    uint32_t max_blocks = OBM_MAX_POOL_SLOTS * OBM_POOL_SIZE / b;
    uint32_t want = max_blocks < 8 ? max_blocks : 8;
    for (unsigned k = 1; k <= OBM_MAX_POOL_SLOTS; k++) {
      uint32_t bytes = k * OBM_POOL_SIZE;
      uint32_t n = bytes / b;
      if (n >= want && (bytes - n * b) * 8 <= bytes) {
        best = k;
        break;
      }
    }
    _obm_class_slots[c] = (uint8_t)best;
    _obm_class_capacity[c] = best * OBM_POOL_SIZE / b;
    unsigned shift = (unsigned)__builtin_ctz(b);
    uint32_t d = b >> shift, inv = d; /* Newton: each step doubles the correct low bits */
    for (int i = 0; i < 4; i++)
      inv *= 2 - d * inv;
    _obm_class_div[c] = (obm_class_div_t){inv, shift};
  }
  for (unsigned i = 0; i < OBM_ALIGNED_CLASS_SHIFTS; i++) {
    uint32_t mask = ((uint32_t)32 << i) - 1;
    unsigned next = OBM_NCLASSES; /* scanning down: the nearest aligned class above */
    for (int c = OBM_NCLASSES - 1; c >= 0; c--) {
      if ((_obm_class_size[c] & mask) == 0) next = (unsigned)c;
      _obm_aligned_class[i][c] = (uint8_t)next;
    }
  }
  /* Entry i serves sizes 128 * i + 1 .. 128 * (i + 1): the first class that holds the last. */
  unsigned c = OBM_NSMALL_CLASSES;
  for (unsigned i = OBM_SMALL_MAX >> 7; i < (OBM_MEDIUM_MAX >> 7); i++) {
    while (_obm_class_size[c] < 128 * (i + 1))
      c++;
    _obm_medium_class[i] = (uint8_t)c;
  }
}

size_t obm_class_block_size(int class_index) {
  if (class_index < 0 || class_index >= OBM_NCLASSES) return 0;
  return _obm_class_size[class_index];
}

int obm_size_class(size_t size) {
  if (size > OBM_MEDIUM_MAX) return -1;
  _obm_ensure_init();
  return (int)_obm_size_to_class(size);
}
