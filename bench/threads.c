/* threads.c — multi-threaded small-object churn, each thread on its own blocks
 * (larson/mstress-like).
 *
 * Measures: scalability of thread-local allocation and the hand-over of a dead thread's
 * blocks.  Four lanes, each with a live set of 4000 slots, run in parallel; each step picks a
 * random slot and frees its block or allocates a new one (mostly small, some medium, no
 * large).  A lane's work is split over 8 rounds, and every round runs in a fresh thread that
 * inherits the previous thread's live blocks, so each new thread frees memory allocated by a
 * thread that has exited (what Larson's server simulation does).
 * The checksum is a sum of per-lane results, each computed in a fixed order.
 * Usage: bench_threads [scale]
 */
#include "common.h"

#include <pthread.h>

#define NLANES     4
#define NROUNDS    8
#define NSLOTS     4000
#define BASE_STEPS 8000000 /* per lane, over all rounds */

typedef struct lane_s {
  pthread_t thread;
  rng_t rng;
  size_t nsteps;     /* steps per round */
  void *ptr[NSLOTS]; /* ptr[i] != NULL => size[i] bytes, tagged */
  size_t size[NSLOTS];
  uint64_t sum, serial;
} lane_t;

static void *run_round(void *arg) {
  lane_t *lane = arg;
  for (size_t step = 0; step < lane->nsteps; step++) {
    size_t i = rng_below(&lane->rng, NSLOTS);
    if (lane->ptr[i] != NULL) {
      lane->sum = mix64(lane->sum, check_block(lane->ptr[i], lane->size[i]));
      free(lane->ptr[i]);
      lane->ptr[i] = NULL;
    } else {
      lane->size[i] = rng_mixed_size(&lane->rng, 0);
      lane->ptr[i] = xmalloc(lane->size[i]);
      tag_block(lane->ptr[i], lane->size[i], ++lane->serial);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nsteps = scaled(BASE_STEPS / NROUNDS, scale);
  static lane_t lanes[NLANES];

  for (int l = 0; l < NLANES; l++) {
    lanes[l].rng = rng_make((uint64_t)l + 100);
    lanes[l].nsteps = nsteps;
  }
  for (int round = 0; round < NROUNDS; round++) {
    for (int l = 0; l < NLANES; l++)
      if (pthread_create(&lanes[l].thread, NULL, run_round, &lanes[l]) != 0)
        bench_fail("pthread_create failed");
    for (int l = 0; l < NLANES; l++)
      pthread_join(lanes[l].thread, NULL);
  }
  uint64_t sum = 0;
  for (int l = 0; l < NLANES; l++) {
    for (size_t i = 0; i < NSLOTS; i++) {
      if (lanes[l].ptr[i] != NULL) {
        lanes[l].sum = mix64(lanes[l].sum, check_block(lanes[l].ptr[i], lanes[l].size[i]));
        free(lanes[l].ptr[i]);
      }
    }
    sum += lanes[l].sum + lanes[l].serial;
  }
  print_checksum(sum);
  return 0;
}
