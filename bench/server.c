/* server.c — server pattern: worker threads build requests and responses, one other thread frees
 * them.
 *
 * Measures: an xmalloc/sh6bench-like load, written for obmem.  Three worker threads each
 * handle requests.  A request allocates a request buffer (256 B..16 KiB, one in 32 up to
 * 256 KiB), 2..12 small header strings (16..128 B), a response body (64 B..64 KiB) and a
 * response record linking them; the record goes to a single writer thread, which checks and
 * frees everything (so most frees are remote, all landing on one thread).  Each worker also
 * keeps 512 session objects (32..1024 B) that it replaces at random and frees itself, a
 * long-lived, same-thread part of the heap that fragments under the request traffic.
 * Responses travel in batches of 16 so the queue lock is not the bottleneck.
 * The checksum is a sum over all tags, independent of the scheduling.
 * Usage: bench_server [scale]
 */
#include "common.h"
#include "queue.h"

#include <pthread.h>

#define NWORKERS      3
#define NSESSIONS     512
#define MAX_HEADERS   12
#define BATCH         16
#define BASE_REQUESTS 120000 /* per worker */

typedef struct response_s {
  struct response_s *next; /* next response in the same batch, or NULL */
  void *request;           /* request_size bytes, tagged */
  size_t request_size;
  void *headers[MAX_HEADERS]; /* nheaders small strings, each tagged over header_sizes[i] */
  size_t header_sizes[MAX_HEADERS];
  size_t nheaders;
  void *body; /* body_size bytes, tagged */
  size_t body_size;
} response_t;

typedef struct worker_s {
  pthread_t thread;
  queue_t *queue;
  uint64_t seed;
  size_t nrequests;
  uint64_t sum; /* tags of the blocks this thread freed */
} worker_t;

static void *tagged(size_t size, uint64_t tag) {
  void *p = xmalloc(size);
  tag_block(p, size, tag);
  return p;
}

static void *worker(void *arg) {
  worker_t *w = arg;
  rng_t rng = rng_make(w->seed);
  void *sessions[NSESSIONS] = {0};
  size_t session_sizes[NSESSIONS];
  uint64_t tag = w->seed << 40;
  response_t *batch = NULL;
  size_t nbatch = 0;

  for (size_t r = 0; r < w->nrequests; r++) {
    response_t *resp = xmalloc(sizeof *resp);
    resp->request_size = rng_below(&rng, 32) == 0 ? rng_log_range(&rng, 256, 256 * 1024)
                                                  : rng_log_range(&rng, 256, 16 * 1024);
    resp->request = tagged(resp->request_size, ++tag);
    resp->nheaders = rng_range(&rng, 2, MAX_HEADERS);
    for (size_t h = 0; h < resp->nheaders; h++) {
      resp->header_sizes[h] = rng_range(&rng, 16, 128);
      resp->headers[h] = tagged(resp->header_sizes[h], ++tag);
    }
    resp->body_size = rng_log_range(&rng, 64, 64 * 1024);
    resp->body = tagged(resp->body_size, ++tag);

    size_t s = rng_below(&rng, NSESSIONS); /* touch a session: replace it one time in 4 */
    if (sessions[s] == NULL || rng_below(&rng, 4) == 0) {
      if (sessions[s] != NULL) {
        w->sum += check_block(sessions[s], session_sizes[s]);
        free(sessions[s]);
      }
      session_sizes[s] = rng_range(&rng, 32, 1024);
      sessions[s] = tagged(session_sizes[s], ++tag);
    }

    resp->next = batch;
    batch = resp;
    if (++nbatch == BATCH) {
      queue_push(w->queue, batch);
      batch = NULL;
      nbatch = 0;
    }
  }
  if (batch != NULL) queue_push(w->queue, batch);
  queue_producer_done(w->queue);
  for (size_t s = 0; s < NSESSIONS; s++) {
    if (sessions[s] != NULL) {
      w->sum += check_block(sessions[s], session_sizes[s]);
      free(sessions[s]);
    }
  }
  return NULL;
}

static void *writer(void *arg) {
  worker_t *w = arg;
  response_t *resp;
  while ((resp = queue_pop(w->queue)) != NULL) {
    while (resp != NULL) {
      response_t *next = resp->next;
      w->sum += check_block(resp->request, resp->request_size);
      free(resp->request);
      for (size_t h = 0; h < resp->nheaders; h++) {
        w->sum += check_block(resp->headers[h], resp->header_sizes[h]);
        free(resp->headers[h]);
      }
      w->sum += check_block(resp->body, resp->body_size);
      free(resp->body);
      free(resp);
      resp = next;
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  double scale = bench_scale(argc, argv);
  size_t nrequests = scaled(BASE_REQUESTS, scale);
  queue_t queue;
  worker_t workers[NWORKERS], writer_state = {0};
  queue_init(&queue, NWORKERS);
  writer_state.queue = &queue;

  if (pthread_create(&writer_state.thread, NULL, writer, &writer_state) != 0)
    bench_fail("pthread_create failed");
  for (int i = 0; i < NWORKERS; i++) {
    workers[i] = (worker_t){.queue = &queue, .seed = (uint64_t)i + 1, .nrequests = nrequests};
    if (pthread_create(&workers[i].thread, NULL, worker, &workers[i]) != 0)
      bench_fail("pthread_create failed");
  }
  uint64_t sum = 0;
  for (int i = 0; i < NWORKERS; i++) {
    pthread_join(workers[i].thread, NULL);
    sum += workers[i].sum;
  }
  pthread_join(writer_state.thread, NULL);
  sum += writer_state.sum;
  queue_destroy(&queue);
  print_checksum(mix64(sum, nrequests));
  return 0;
}
