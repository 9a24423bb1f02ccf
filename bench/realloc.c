/* realloc.c — growing buffers: string builders and dynamic arrays extended with realloc.
 *
 * Measures: realloc in place versus move-and-copy.  Keeps 1000 buffers; each step appends
 * 1..64 bytes to a random buffer (a string builder that reallocs to the exact new length,
 * as naive C code does), or, for one buffer in four, grows it by doubling its capacity (a
 * vector).  A buffer that passes its target length (64 B..256 KiB, log-uniform) is checked
 * and freed and starts again empty.  The appended bytes are verified when the buffer ends.
 * Usage: bench_realloc [scale]
 */
#include "common.h"

#define NBUFFERS   1000
#define BASE_STEPS 1500000

typedef struct buffer_s {
  unsigned char *data; /* capacity bytes; data == NULL <=> capacity == 0 */
  size_t length;       /* bytes appended; length <= capacity */
  size_t capacity;
  size_t target;      /* the buffer is retired once length >= target */
  int doubling;       /* vector-style growth instead of exact */
  unsigned char next; /* the byte value the next append starts with */
} buffer_t;

static void start_buffer(buffer_t *b, rng_t *rng) {
  b->data = NULL;
  b->length = b->capacity = 0;
  b->target = rng_log_range(rng, 64, 256 * 1024);
  b->doubling = rng_below(rng, 4) == 0;
  b->next = (unsigned char)rng_next(rng);
}

/* Verifies the bytes appended so far (value i + the start value) and frees the buffer. */
static uint64_t finish_buffer(buffer_t *b, unsigned char start) {
  uint64_t h = b->length;
  for (size_t i = 0; i < b->length; i++)
    if (b->data[i] != (unsigned char)(start + i)) bench_fail("realloc lost a buffer's contents");
  if (b->length > 0) h = mix64(h, b->data[b->length - 1]);
  free(b->data);
  return h;
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nsteps = scaled(BASE_STEPS, scale);
  static buffer_t buffers[NBUFFERS];
  static unsigned char starts[NBUFFERS];
  rng_t rng = rng_make(5);
  uint64_t sum = 0;

  for (size_t i = 0; i < NBUFFERS; i++) {
    start_buffer(&buffers[i], &rng);
    starts[i] = buffers[i].next;
  }
  for (size_t step = 0; step < nsteps; step++) {
    size_t i = rng_below(&rng, NBUFFERS);
    buffer_t *b = &buffers[i];
    size_t add = rng_range(&rng, 1, 64);
    size_t need = b->length + add;
    if (need > b->capacity) {
      size_t cap = need;
      if (b->doubling) {
        cap = b->capacity < 16 ? 16 : b->capacity;
        while (cap < need)
          cap *= 2;
      }
      unsigned char *p = realloc(b->data, cap);
      if (p == NULL) bench_fail("realloc returned NULL");
      b->data = p;
      b->capacity = cap;
    }
    for (size_t k = 0; k < add; k++)
      b->data[b->length + k] = (unsigned char)(b->next + k);
    b->length = need;
    b->next = (unsigned char)(b->next + add);
    if (b->length >= b->target) {
      sum = mix64(sum, finish_buffer(b, starts[i]));
      start_buffer(b, &rng);
      starts[i] = b->next;
    }
  }
  for (size_t i = 0; i < NBUFFERS; i++)
    sum = mix64(sum, finish_buffer(&buffers[i], starts[i]));
  print_checksum(sum);
  return 0;
}
