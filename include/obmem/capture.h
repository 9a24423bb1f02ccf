/* obmem/capture.h — reading obmem capture files (what the tracer writes).
 *
 * A capture is a header and a sequence of checksummed blocks of records (docs/capture-format.md
 * gives every byte).  One reader serves every client: it decodes the file in order and hands
 * out one record at a time; definitions (frames, stacks, threads, modules) are kept in tables
 * that grow as the file is read, so a stack id in an allocation is always resolvable when the
 * allocation is returned.  A truncated, damaged or foreign file stops the reader with a message
 * that names the file, the byte offset and what was wrong; the reader never crashes on bad input.
 *
 * Threads: a reader object is used by one thread at a time.
 */
#ifndef OBMEM_CAPTURE_H
#define OBMEM_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define OBM_CAPTURE_API __attribute__((visibility("default")))
#else
#define OBM_CAPTURE_API
#endif

#define OBM_CAPTURE_VERSION      2    /* 2: zstd-compressed blocks; version 1 files are read too */
#define OBM_CAPTURE_FLAG_SAMPLED 0x1u /* allocations sampled by bytes (sample_mean_bytes) */
#define OBM_CAPTURE_FLAG_STACKS  0x2u /* native stacks were recorded */
#define OBM_CAPTURE_FLAG_PYTHON  0x4u /* interpreter (Python) frames were recorded */

typedef struct obm_capture_header_s {
  uint32_t version;           /* OBM_CAPTURE_VERSION */
  uint32_t flags;             /* OBM_CAPTURE_FLAG_* */
  uint64_t sample_mean_bytes; /* mean bytes between samples; 0 = exact */
  uint32_t pid;
  uint32_t page_size;
  uint64_t start_time_ns; /* wall clock (CLOCK_REALTIME) when tracing started */
  uint32_t address_shift; /* addresses of delta-coded records are multiples of 1<<shift */
} obm_capture_header_t;

typedef enum obm_capture_kind_e {
  OBM_CAPTURE_ALLOC = 1,  /* address, size, stack, thread, time_ns */
  OBM_CAPTURE_FREE = 2,   /* address, thread, time_ns */
  OBM_CAPTURE_SAMPLE = 3, /* sample: a point of the memory timeline */
  OBM_CAPTURE_THREAD = 4, /* thread: a thread (re)named; the table is updated */
  OBM_CAPTURE_MODULE = 5, /* module: a loaded module; the table is updated */
  OBM_CAPTURE_END = 6,    /* tracing stopped cleanly; the last record of a complete file */
} obm_capture_kind_t;

typedef struct obm_capture_sample_s {
  uint64_t heap_bytes;          /* allocator: bytes handed out (obm_stats_t.bytes_in_use) */
  uint64_t rss_bytes;           /* resident set size */
  uint64_t arenas;              /* arenas mapped */
  uint64_t pools;               /* pools in use */
  uint32_t fragmentation_pct10; /* per mille of mapped bytes neither in use nor metadata */
} obm_capture_sample_t;

typedef struct obm_capture_record_s {
  obm_capture_kind_t kind;
  uint32_t thread;             /* thread index (1..): ALLOC, FREE, THREAD */
  uint64_t time_ns;            /* since tracing started */
  uint64_t address;            /* ALLOC, FREE; MODULE: load address */
  uint64_t size;               /* ALLOC: bytes requested */
  uint32_t stack;              /* ALLOC: stack id (0 = no stack) */
  uint64_t offset;             /* byte offset of the record in the file */
  obm_capture_sample_t sample; /* SAMPLE */
  uint64_t nevents;            /* END: events the tracer recorded; */
  uint64_t nlost;              /* END: events it could not record (a table was full) */
} obm_capture_record_t;

typedef struct obm_capture_module_s {
  uint64_t load_address; /* dlpi_addr: run-time address minus link-time address */
  const char *path;
  const uint8_t *build_id;
  uint32_t build_id_size;
} obm_capture_module_t;

typedef struct obm_capture_s obm_capture_t;

/* Opens and checks the header.  NULL on failure, with a message (file, offset, what) in err. */
OBM_CAPTURE_API obm_capture_t *obm_capture_open(const char *path, char *err, size_t err_size);
/* The same over memory the caller keeps alive until close (name is used in messages). */
OBM_CAPTURE_API obm_capture_t *obm_capture_open_memory(const void *data, size_t size,
                                                       const char *name, char *err,
                                                       size_t err_size);
OBM_CAPTURE_API void obm_capture_close(obm_capture_t *cap);
OBM_CAPTURE_API const obm_capture_header_t *obm_capture_header(const obm_capture_t *cap);
/* Reads the next record: 1 = *out filled, 0 = end of file, -1 = bad file (message in
 * obm_capture_error).  A file that ends between blocks without an END record is not an error
 * (a killed program): obm_capture_complete() tells.  With salvage set, an incomplete last
 * block is dropped instead of refused (noted in obm_capture_warning). */
OBM_CAPTURE_API int obm_capture_next(obm_capture_t *cap, obm_capture_record_t *out);
OBM_CAPTURE_API void obm_capture_set_salvage(obm_capture_t *cap, int salvage);
/* Back to the first record; the tables keep what was read (ids are stable). */
OBM_CAPTURE_API void obm_capture_rewind(obm_capture_t *cap);
OBM_CAPTURE_API const char *obm_capture_error(const obm_capture_t *cap);
OBM_CAPTURE_API const char *obm_capture_warning(const obm_capture_t *cap); /* NULL if none */
OBM_CAPTURE_API int obm_capture_complete(const obm_capture_t *cap);        /* END record seen */
OBM_CAPTURE_API uint64_t obm_capture_file_size(const obm_capture_t *cap);
OBM_CAPTURE_API uint64_t obm_capture_offset(const obm_capture_t *cap); /* bytes consumed */

/* Tables, as far as the file has been read.  Stack 0 is the empty stack; a stack is its
 * innermost frame plus the id of the stack of its caller (parent < id). */
OBM_CAPTURE_API uint32_t obm_capture_nstacks(const obm_capture_t *cap); /* ids 0..n-1 */
OBM_CAPTURE_API int obm_capture_stack(const obm_capture_t *cap, uint32_t stack, uint32_t *parent,
                                      uint32_t *frame);
OBM_CAPTURE_API uint32_t obm_capture_nframes(const obm_capture_t *cap); /* ids 1..n-1 */
OBM_CAPTURE_API uint64_t obm_capture_frame_address(const obm_capture_t *cap, uint32_t frame);
/* An interpreter's frame (a PYFRAME record: a Python function): 1 and its names (owned by
 * cap, valid until close; line 0 = unknown), or 0 for a native frame (a return address). */
OBM_CAPTURE_API int obm_capture_frame_python(const obm_capture_t *cap, uint32_t frame,
                                             const char **function, const char **file,
                                             uint32_t *line);
OBM_CAPTURE_API uint32_t obm_capture_nthreads(const obm_capture_t *cap); /* indexes 1..n-1 */
OBM_CAPTURE_API const char *obm_capture_thread_name(const obm_capture_t *cap, uint32_t thread);
OBM_CAPTURE_API uint64_t obm_capture_thread_tid(const obm_capture_t *cap, uint32_t thread);
OBM_CAPTURE_API uint32_t obm_capture_nmodules(const obm_capture_t *cap);
OBM_CAPTURE_API int obm_capture_module(const obm_capture_t *cap, uint32_t index,
                                       obm_capture_module_t *out);

/* ---- live blocks: what was live after each record, as `obmem report` counts it ----------
 * Feed every record in file order to obm_capture_live_apply.  Each thread's records are in
 * its order, but threads are interleaved as their buffers were written, so a block freed by
 * another thread may be freed before its allocation is read: such a free waits (PENDING), and
 * the next allocation of that address by a thread other than the freeing one is matched to it
 * and never becomes live (CANCELLED; the frees waiting at one address count as the first
 * freeing thread's, so in the rare case of two threads' frees of one address waiting at once,
 * that thread's own next allocation there is not matched).  An allocation at an address still live
 * ends the older block (its free is in a block not read yet).  In a sampled capture an allocation
 * of s bytes stands for s / (1 - exp(-s / mean)) bytes and 1 / (1 - exp(-s / mean)) allocations
 * (the Poisson estimator of tcmalloc and memray): obm_capture_weigh. */
typedef struct obm_capture_live_s obm_capture_live_t;

typedef enum obm_capture_change_e {
  OBM_CAPTURE_LIVE_NONE = 0,      /* not an allocation or a free */
  OBM_CAPTURE_LIVE_ADDED = 1,     /* ALLOC: the block is live */
  OBM_CAPTURE_LIVE_CANCELLED = 2, /* ALLOC: matched to a free read before it */
  OBM_CAPTURE_LIVE_FREED = 3,     /* FREE: a live block ended */
  OBM_CAPTURE_LIVE_PENDING = 4,   /* FREE: of no live block; waits for its allocation */
} obm_capture_change_t;

typedef struct obm_capture_block_s {
  uint64_t address;
  uint64_t size;       /* bytes requested */
  uint32_t stack;      /* the allocation's stack id */
  uint32_t thread;     /* the allocating thread (PENDING: the freeing one) */
  double bytes, count; /* what it stands for (obm_capture_weigh) */
} obm_capture_block_t;

OBM_CAPTURE_API void obm_capture_weigh(const obm_capture_header_t *header, uint64_t size,
                                       double *bytes, double *count);
/* For the capture with this header; NULL when out of memory. */
OBM_CAPTURE_API obm_capture_live_t *obm_capture_live_new(const obm_capture_header_t *header);
OBM_CAPTURE_API void obm_capture_live_free(obm_capture_live_t *live);
/* Applies a record: its obm_capture_change_t, with *block the block added, cancelled or freed
 * (PENDING: address and thread only); -1 when out of memory (nothing changed). */
OBM_CAPTURE_API int obm_capture_live_apply(obm_capture_live_t *live,
                                           const obm_capture_record_t *record,
                                           obm_capture_block_t *block);
OBM_CAPTURE_API double obm_capture_live_bytes(const obm_capture_live_t *live);   /* weighted */
OBM_CAPTURE_API uint64_t obm_capture_live_count(const obm_capture_live_t *live); /* blocks */
/* The live blocks in no order: *cursor = 0 first; 1 and the next block, 0 after the last. */
OBM_CAPTURE_API int obm_capture_live_next(const obm_capture_live_t *live, size_t *cursor,
                                          obm_capture_block_t *block);

#ifdef __cplusplus
}
#endif
#endif /* OBMEM_CAPTURE_H */
