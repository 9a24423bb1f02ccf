/* queue.h — a bounded blocking queue of pointers for the multi-threaded workloads.
 *
 * A ring of QUEUE_CAPACITY slots behind one mutex and two condition variables.  Producers
 * block while it is full; consumers block while it is empty and get NULL once it is empty
 * and every producer has called queue_producer_done().  The queue itself never allocates,
 * so it adds no allocator traffic of its own.
 * Invariants: 0 <= count <= QUEUE_CAPACITY; items at slots[(head + i) % QUEUE_CAPACITY], i < count.
 */
#ifndef BENCH_QUEUE_H
#define BENCH_QUEUE_H

#include <pthread.h>

#define QUEUE_CAPACITY 256

typedef struct queue_s {
  pthread_mutex_t lock;
  pthread_cond_t not_empty, not_full;
  void *slots[QUEUE_CAPACITY];
  size_t head, count;
  int nproducers; /* producers that have not called queue_producer_done() */
} queue_t;

static inline void queue_init(queue_t *q, int nproducers) {
  pthread_mutex_init(&q->lock, NULL);
  pthread_cond_init(&q->not_empty, NULL);
  pthread_cond_init(&q->not_full, NULL);
  q->head = q->count = 0;
  q->nproducers = nproducers;
}

static inline void queue_destroy(queue_t *q) {
  pthread_mutex_destroy(&q->lock);
  pthread_cond_destroy(&q->not_empty);
  pthread_cond_destroy(&q->not_full);
}

static inline void queue_push(queue_t *q, void *item) {
  pthread_mutex_lock(&q->lock);
  while (q->count == QUEUE_CAPACITY)
    pthread_cond_wait(&q->not_full, &q->lock);
  q->slots[(q->head + q->count) % QUEUE_CAPACITY] = item;
  q->count++;
  pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->lock);
}

/* The oldest item, or NULL when the queue is drained and no producer is left. */
static inline void *queue_pop(queue_t *q) {
  pthread_mutex_lock(&q->lock);
  while (q->count == 0 && q->nproducers > 0)
    pthread_cond_wait(&q->not_empty, &q->lock);
  void *item = NULL;
  if (q->count > 0) {
    item = q->slots[q->head];
    q->head = (q->head + 1) % QUEUE_CAPACITY;
    q->count--;
    pthread_cond_signal(&q->not_full);
  }
  pthread_mutex_unlock(&q->lock);
  return item;
}

static inline void queue_producer_done(queue_t *q) {
  pthread_mutex_lock(&q->lock);
  q->nproducers--;
  pthread_cond_broadcast(&q->not_empty);
  pthread_mutex_unlock(&q->lock);
}

#endif /* BENCH_QUEUE_H */
