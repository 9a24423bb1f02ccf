/* prodcons.c — cross-thread producer/consumer: blocks allocated in one thread are freed in another.
 *
 * Measures: the cost of remote frees (a free by a thread that does not own the block) and how
 * well memory freed remotely is reused by its owner.  Two producer threads allocate small and
 * medium blocks (rng_mixed_size, no large), write a tag into each, and hand them in batches of
 * 64 through a bounded queue to two consumer threads that check and free them.  The batch
 * record itself is malloc'ed by the producer and freed by the consumer too.
 * The checksum is a sum over all tags, so it does not depend on which consumer got what.
 * Usage: bench_prodcons [scale]
 */
#include "common.h"
#include "queue.h"

#include <pthread.h>

#define NPRODUCERS 2
#define NCONSUMERS 2
#define BATCH      64
#define BASE_ITEMS 2000000 /* per producer */

typedef struct batch_s {
  size_t count;        /* 0 < count <= BATCH */
  void *blocks[BATCH]; /* each holds a tag (see tag_block) ... */
  size_t sizes[BATCH]; /* ... over sizes[i] bytes */
} batch_t;

typedef struct worker_s {
  pthread_t thread;
  queue_t *queue;
  uint64_t seed;
  size_t nitems;
  uint64_t sum; /* consumer: sum of the tags it freed */
} worker_t;

static void *producer(void *arg) {
  worker_t *w = arg;
  rng_t rng = rng_make(w->seed);
  batch_t *batch = NULL;
  for (size_t i = 0; i < w->nitems; i++) {
    if (batch == NULL) {
      batch = xmalloc(sizeof *batch);
      batch->count = 0;
    }
    size_t size = rng_mixed_size(&rng, 0);
    void *p = xmalloc(size);
    tag_block(p, size, (w->seed << 40) + i);
    batch->blocks[batch->count] = p;
    batch->sizes[batch->count] = size;
    if (++batch->count == BATCH) {
      queue_push(w->queue, batch);
      batch = NULL;
    }
  }
  if (batch != NULL) queue_push(w->queue, batch);
  queue_producer_done(w->queue);
  return NULL;
}

static void *consumer(void *arg) {
  worker_t *w = arg;
  batch_t *batch;
  while ((batch = queue_pop(w->queue)) != NULL) {
    for (size_t i = 0; i < batch->count; i++) {
      w->sum += check_block(batch->blocks[i], batch->sizes[i]);
      free(batch->blocks[i]);
    }
    free(batch);
  }
  return NULL;
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nitems = scaled(BASE_ITEMS, scale);
  queue_t queue;
  worker_t producers[NPRODUCERS], consumers[NCONSUMERS];
  queue_init(&queue, NPRODUCERS);

  for (int i = 0; i < NCONSUMERS; i++) {
    consumers[i] = (worker_t){.queue = &queue};
    if (pthread_create(&consumers[i].thread, NULL, consumer, &consumers[i]) != 0)
      bench_fail("pthread_create failed");
  }
  for (int i = 0; i < NPRODUCERS; i++) {
    producers[i] = (worker_t){.queue = &queue, .seed = (uint64_t)i + 1, .nitems = nitems};
    if (pthread_create(&producers[i].thread, NULL, producer, &producers[i]) != 0)
      bench_fail("pthread_create failed");
  }
  uint64_t sum = 0;
  for (int i = 0; i < NPRODUCERS; i++)
    pthread_join(producers[i].thread, NULL);
  for (int i = 0; i < NCONSUMERS; i++) {
    pthread_join(consumers[i].thread, NULL);
    sum += consumers[i].sum;
  }
  queue_destroy(&queue);
  print_checksum(mix64(sum, nitems));
  return 0;
}
