/* analysis.c — a report from a capture, in two passes over the file.
 *
 * Pass 1 replays every allocation and free in file order with a table of live blocks
 * (open addressing, linear probing, backward-shift deletion): totals per stack, leaks (live at
 * the end), temporary allocations (a block freed by its thread before that thread allocates
 * again), the size histogram, the timeline's maxima, and the peak of live bytes with the index
 * of the record that made it.  Pass 2 replays up to that record and takes the live blocks by
 * stack: what was live at the peak.  Stacks are then folded into sites (symbols.c).
 *
 * File order is each thread's order, threads interleaved by flush: a block freed by another
 * thread may be freed before its allocation is read.  Such a free waits in a table of pending
 * frees, and the next allocation of that address by another thread is matched to it (one
 * that its own thread made after freeing it cannot be); the peak is the peak of that order.
 *
 * Sampled captures: a recorded allocation of s bytes stands for s / (1 - exp(-s / mean))
 * bytes and that many / s allocations (the Poisson estimator of tcmalloc and memray).
 */
#define _GNU_SOURCE
#include "obmem_tool.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct stack_stats_s {
  double total_bytes, count, peak_bytes, peak_count, leak_bytes, leak_count, temp_count, temp_bytes;
} stack_stats_t;

static int hist_bucket(uint64_t size) {
  return size ? 64 - __builtin_clzll(size) : 0;
}

typedef struct pass_s {
  obm_capture_live_t *live; /* the live blocks (obmem/capture.h: the pending-free rule) */
  uint64_t *last_alloc;     /* per thread: address of its latest allocation, 0 after a free */
  size_t nlast;
  stack_stats_t *stacks;
  size_t nstacks;
  uint64_t index; /* records read */
} pass_t;

static int grow_stacks(pass_t *p, size_t n) {
  if (n <= p->nstacks) return 0;
  size_t m = p->nstacks ? p->nstacks : 256;
  while (m < n)
    m *= 2;
  stack_stats_t *s = realloc(p->stacks, m * sizeof *s);
  if (!s) return -1;
  memset(s + p->nstacks, 0, (m - p->nstacks) * sizeof *s);
  p->stacks = s;
  p->nstacks = m;
  return 0;
}

static int grow_threads(pass_t *p, size_t n) {
  if (n <= p->nlast) return 0;
  size_t m = p->nlast ? p->nlast * 2 : 64;
  while (m < n)
    m *= 2;
  uint64_t *s = realloc(p->last_alloc, m * sizeof *s);
  if (!s) return -1;
  memset(s + p->nlast, 0, (m - p->nlast) * sizeof *s);
  p->last_alloc = s;
  p->nlast = m;
  return 0;
}

static void pass_free(pass_t *p) {
  obm_capture_live_free(p->live);
  free(p->last_alloc);
  free(p->stacks);
  memset(p, 0, sizeof *p);
}

static void progress(const tool_options_t *o, const obm_capture_t *cap, int pass, int done) {
  if (!o->progress) return;
  if (done) {
    fprintf(stderr, "\r%60s\r", "");
    return;
  }
  uint64_t size = obm_capture_file_size(cap);
  fprintf(stderr, "\robmem: reading, pass %d of 2: %3d%%", pass,
          size ? (int)(obm_capture_offset(cap) * 100 / size) : 100);
}

/* One replay.  stop_at: pass 2 stops after that many records; full = pass 1 statistics. */
static int replay(obm_capture_t *cap, tool_report_t *r, pass_t *p, const tool_options_t *o,
                  int full, uint64_t stop_at, uint64_t *peak_index) {
  obm_capture_record_t rec;
  obm_capture_block_t b;
  int st;
  if (!p->live && !(p->live = obm_capture_live_new(&r->header))) return -1;
  while ((st = obm_capture_next(cap, &rec)) > 0) {
    p->index++;
    if ((p->index & 0xfffff) == 0) progress(o, cap, full ? 1 : 2, 0);
    if ((rec.kind == OBM_CAPTURE_ALLOC &&
         (grow_stacks(p, (size_t)rec.stack + 1) || grow_threads(p, (size_t)rec.thread + 1))) ||
        (rec.kind == OBM_CAPTURE_FREE && grow_threads(p, (size_t)rec.thread + 1)))
      return -1;
    /* a free's block: the temporary test reads the thread's latest allocation before the
     * free clears it */
    int change = obm_capture_live_apply(p->live, &rec, &b);
    if (change < 0) return -1;
    if (rec.kind == OBM_CAPTURE_ALLOC && full) {
      stack_stats_t *s = &p->stacks[rec.stack];
      s->total_bytes += b.bytes;
      s->count += b.count;
      r->total_bytes += b.bytes;
      r->total_count += b.count;
      r->nallocs++;
      r->hist_count[hist_bucket(rec.size)] += b.count;
      r->hist_bytes[hist_bucket(rec.size)] += b.bytes;
    }
    if (change == OBM_CAPTURE_LIVE_ADDED) {
      p->last_alloc[rec.thread] = rec.address;
      double current = obm_capture_live_bytes(p->live);
      if (full && current > r->peak_bytes) {
        r->peak_bytes = current;
        r->peak_time_ns = rec.time_ns;
        *peak_index = p->index;
      }
    } else if (rec.kind == OBM_CAPTURE_FREE) {
      if (full) r->nfrees++;
      if (change == OBM_CAPTURE_LIVE_PENDING && full) r->nunmatched_frees++;
      if (change == OBM_CAPTURE_LIVE_FREED && full && p->last_alloc[rec.thread] == rec.address &&
          b.thread == rec.thread) {
        stack_stats_t *s = &p->stacks[b.stack];
        s->temp_count += b.count;
        s->temp_bytes += b.bytes;
        r->temp_count += b.count;
        r->temp_bytes += b.bytes;
      }
      p->last_alloc[rec.thread] = 0;
    } else if (rec.kind == OBM_CAPTURE_SAMPLE && full) {
      r->nsamples++;
      if (rec.sample.heap_bytes > r->max_heap_bytes) r->max_heap_bytes = rec.sample.heap_bytes;
      if (rec.sample.rss_bytes > r->max_rss_bytes) r->max_rss_bytes = rec.sample.rss_bytes;
      r->last_arenas = rec.sample.arenas;
      r->last_pools = rec.sample.pools;
      r->last_fragmentation = rec.sample.fragmentation_pct10;
    }
    if (rec.time_ns > r->end_time_ns && full) r->end_time_ns = rec.time_ns;
    if (!full && p->index >= stop_at) return 0;
  }
  progress(o, cap, 0, 1);
  return st;
}

static size_t site_of(tool_report_t *r, tool_symbols_t *sym, const obm_capture_t *cap,
                      uint32_t stack, char ***keys, size_t *nkeys) {
  const char *function = "<no stack>", *file = "";
  int line = 0;
  uint64_t address = 0;
  /* a stack with Python frames (PYFRAME): the site is the innermost of them, also when native
   * frames (the C code that allocated, --native) are inside it */
  for (uint32_t id = stack; id != 0;) {
    uint32_t parent, frame, py_line;
    const char *py_function, *py_file;
    if (obm_capture_stack(cap, id, &parent, &frame) != 0) break;
    if (obm_capture_frame_python(cap, frame, &py_function, &py_file, &py_line)) {
      function = py_function;
      file = py_file;
      line = (int)py_line;
      stack = 0; /* found: no native site */
      break;
    }
    id = parent;
  }
  for (uint32_t id = stack; id != 0;) {
    uint32_t parent, frame;
    if (obm_capture_stack(cap, id, &parent, &frame) != 0) break;
    uint64_t a = obm_capture_frame_address(cap, frame);
    const char *f, *fl;
    int ln;
    tool_symbol(sym, a, &f, &fl, &ln);
    int in_allocator = tool_symbol_is_allocator(f, fl) || tool_address_in_obmem(sym, a);
    if (!in_allocator || parent == 0) {
      function = f;
      file = fl;
      line = ln;
      address = a;
      if (!in_allocator) break;
    }
    id = parent;
  }
  char key[1400];
  snprintf(key, sizeof key, "%s\t%s\t%d", function, file, line);
  for (size_t i = 0; i < *nkeys; i++) /* sites are few; a linear search is enough */
    if (strcmp((*keys)[i], key) == 0) return i;
  tool_site_t *s = realloc(r->sites, (r->nsites + 1) * sizeof *s);
  char **k = realloc(*keys, (*nkeys + 1) * sizeof *k);
  if (s) r->sites = s;
  if (k) *keys = k;
  if (!s || !k) return (size_t)-1;
  memset(&r->sites[r->nsites], 0, sizeof *s);
  r->sites[r->nsites].function = strdup(function);
  r->sites[r->nsites].file = strdup(file);
  r->sites[r->nsites].line = line;
  r->sites[r->nsites].address = address;
  (*keys)[(*nkeys)++] = strdup(key);
  return r->nsites++;
}

int tool_analyse(const char *path, const tool_options_t *o, tool_report_t *r) {
  char err[800];
  memset(r, 0, sizeof *r);
  r->path = path;
  obm_capture_t *cap = obm_capture_open(path, err, sizeof err);
  if (!cap) {
    fprintf(stderr, "obmem: %s\n", err);
    return TOOL_EXIT_BAD_INPUT;
  }
  obm_capture_set_salvage(cap, o->salvage);
  r->header = *obm_capture_header(cap);
  pass_t p = {0};
  uint64_t peak_index = 0;
  int st = replay(cap, r, &p, o, 1, 0, &peak_index);
  if (st < 0) {
    fprintf(stderr, "obmem: %s\n",
            obm_capture_error(cap)[0] ? obm_capture_error(cap) : "out of memory");
    pass_free(&p);
    obm_capture_close(cap);
    return TOOL_EXIT_BAD_INPUT;
  }
  r->complete = obm_capture_complete(cap);
  r->nrecords = p.index;
  if (obm_capture_warning(cap))
    snprintf(r->warning, sizeof r->warning, "%s", obm_capture_warning(cap));
  else if (!r->complete)
    snprintf(r->warning, sizeof r->warning,
             "%s: offset %llu: the capture ends without an END record (the program was killed "
             "or is still running): reporting the records up to there",
             path, (unsigned long long)obm_capture_file_size(cap));
  /* leaks: live at the end */
  obm_capture_block_t b;
  size_t cursor = 0;
  while (obm_capture_live_next(p.live, &cursor, &b)) {
    p.stacks[b.stack].leak_bytes += b.bytes;
    p.stacks[b.stack].leak_count += b.count;
    r->leak_bytes += b.bytes;
    r->leak_count += b.count;
  }
  /* pass 2: live at the peak */
  if (peak_index) {
    pass_t q = {0};
    obm_capture_rewind(cap);
    obm_capture_set_salvage(cap, o->salvage);
    if (replay(cap, r, &q, o, 0, peak_index, NULL) < 0) {
      fprintf(stderr, "obmem: %s\n", obm_capture_error(cap));
      pass_free(&q);
      pass_free(&p);
      obm_capture_close(cap);
      return TOOL_EXIT_BAD_INPUT;
    }
    cursor = 0;
    while (obm_capture_live_next(q.live, &cursor, &b)) {
      p.stacks[b.stack].peak_bytes += b.bytes;
      p.stacks[b.stack].peak_count += b.count;
    }
    pass_free(&q);
  }
  /* stacks -> sites */
  tool_symbols_t *sym = tool_symbols_open(cap);
  char **keys = NULL;
  size_t nkeys = 0;
  for (size_t s = 0; s < p.nstacks; s++) {
    stack_stats_t *x = &p.stacks[s];
    if (x->count == 0 && x->peak_count == 0 && x->leak_count == 0) continue;
    size_t i = site_of(r, sym, cap, (uint32_t)s, &keys, &nkeys);
    if (i == (size_t)-1) continue;
    tool_site_t *site = &r->sites[i];
    site->total_bytes += x->total_bytes;
    site->count += x->count;
    site->peak_bytes += x->peak_bytes;
    site->peak_count += x->peak_count;
    site->leak_bytes += x->leak_bytes;
    site->leak_count += x->leak_count;
    site->temp_bytes += x->temp_bytes;
    site->temp_count += x->temp_count;
  }
  for (size_t i = 0; i < nkeys; i++)
    free(keys[i]);
  free(keys);
  tool_symbols_close(sym);
  r->nthreads = obm_capture_nthreads(cap);
  r->thread_names = calloc(r->nthreads + 1, sizeof *r->thread_names);
  r->thread_tids = calloc(r->nthreads + 1, sizeof *r->thread_tids);
  for (uint32_t t = 1; t < r->nthreads && r->thread_names && r->thread_tids; t++) {
    r->thread_names[t] = strdup(obm_capture_thread_name(cap, t));
    r->thread_tids[t] = obm_capture_thread_tid(cap, t);
  }
  pass_free(&p);
  obm_capture_close(cap);
  return 0;
}

void tool_report_free(tool_report_t *r) {
  for (size_t i = 0; i < r->nsites; i++) {
    free(r->sites[i].function);
    free(r->sites[i].file);
  }
  free(r->sites);
  for (uint32_t t = 0; t < r->nthreads && r->thread_names; t++)
    free(r->thread_names[t]);
  free(r->thread_names);
  free(r->thread_tids);
  memset(r, 0, sizeof *r);
}

/* ---- printing -------------------------------------------------------------------------- */

static const tool_site_t *sort_sites;
static size_t sort_field;
static int by_field_desc(const void *a, const void *b) {
  double x = *(const double *)((const char *)&sort_sites[*(const size_t *)a] + sort_field);
  double y = *(const double *)((const char *)&sort_sites[*(const size_t *)b] + sort_field);
  return x < y ? 1 : x > y ? -1 : 0;
}

static size_t *sorted(const tool_report_t *r, size_t field) {
  size_t *order = malloc((r->nsites + 1) * sizeof *order);
  if (!order) return NULL;
  for (size_t i = 0; i < r->nsites; i++)
    order[i] = i;
  sort_sites = r->sites;
  sort_field = field;
  qsort(order, r->nsites, sizeof *order, by_field_desc);
  return order;
}

static void human(char *buf, size_t size, double bytes) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, size, "%.0f %s", bytes, units[u]);
  else
    snprintf(buf, size, "%.1f %s", bytes, units[u]);
}

static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c < 0x20)
      fprintf(out, "\\u%04x", c);
    else
      fputc(c, out);
  }
  fputc('"', out);
}

static const struct {
  const char *title, *json;
  size_t bytes, count;
} tables[] = {
    {"bytes at the peak", "sites_at_peak", offsetof(tool_site_t, peak_bytes),
     offsetof(tool_site_t, peak_count)},
    {"total bytes allocated", "sites_by_total", offsetof(tool_site_t, total_bytes),
     offsetof(tool_site_t, count)},
    {"number of allocations", "sites_by_count", offsetof(tool_site_t, count),
     offsetof(tool_site_t, total_bytes)},
    {"bytes leaked (live at exit)", "leaks", offsetof(tool_site_t, leak_bytes),
     offsetof(tool_site_t, leak_count)},
    {"temporary allocations (freed right after)", "temporary", offsetof(tool_site_t, temp_count),
     offsetof(tool_site_t, temp_bytes)},
};

static double field(const tool_site_t *s, size_t off) {
  return *(const double *)((const char *)s + off);
}

static void print_json(FILE *out, const tool_report_t *r, const tool_options_t *o) {
  fprintf(out, "{\n\"file\": ");
  json_string(out, r->path);
  fprintf(out,
          ",\n\"pid\": %u,\n\"mode\": \"%s\",\n\"sample_mean_bytes\": %llu,\n"
          "\"python_stacks\": %s,\n\"native_stacks\": %s,\n\"complete\": %s,\n"
          "\"records\": %llu,\n\"allocations\": %llu,\n\"frees\": %llu,\n"
          "\"estimated_allocations\": %.0f,\n\"total_bytes\": %.0f,\n\"peak_bytes\": %.0f,\n"
          "\"peak_time_ms\": %.3f,\n\"duration_ms\": %.3f,\n\"leaked_bytes\": %.0f,\n"
          "\"leaked_blocks\": %.0f,\n\"temporary_allocations\": %.0f,\n\"temporary_bytes\": %.0f,\n"
          "\"unmatched_frees\": %llu,\n",
          r->header.pid, r->header.flags & OBM_CAPTURE_FLAG_SAMPLED ? "sampled" : "exact",
          (unsigned long long)r->header.sample_mean_bytes,
          r->header.flags & OBM_CAPTURE_FLAG_PYTHON ? "true" : "false",
          r->header.flags & OBM_CAPTURE_FLAG_STACKS ? "true" : "false",
          r->complete ? "true" : "false",
          (unsigned long long)r->nrecords, (unsigned long long)r->nallocs,
          (unsigned long long)r->nfrees, r->total_count, r->total_bytes, r->peak_bytes,
          (double)r->peak_time_ns / 1e6, (double)r->end_time_ns / 1e6, r->leak_bytes, r->leak_count,
          r->temp_count, r->temp_bytes, (unsigned long long)r->nunmatched_frees);
  if (r->warning[0]) {
    fprintf(out, "\"warning\": ");
    json_string(out, r->warning);
    fprintf(out, ",\n");
  }
  for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
    size_t *order = sorted(r, tables[t].bytes);
    fprintf(out, "\"%s\": [\n", tables[t].json);
    int n = 0;
    for (size_t i = 0; order && i < r->nsites && n < o->top; i++) {
      const tool_site_t *s = &r->sites[order[i]];
      if (field(s, tables[t].bytes) <= 0) break;
      fprintf(out, "%s{\"function\": ", n ? ",\n" : "");
      json_string(out, s->function);
      fprintf(out, ", \"file\": ");
      json_string(out, s->file);
      fprintf(out, ", \"line\": %d, \"address\": \"0x%llx\", \"bytes\": %.0f, \"count\": %.0f}",
              s->line, (unsigned long long)s->address,
              tables[t].bytes == offsetof(tool_site_t, count) ||
                      tables[t].bytes == offsetof(tool_site_t, temp_count)
                  ? field(s, tables[t].count)
                  : field(s, tables[t].bytes),
              tables[t].bytes == offsetof(tool_site_t, count) ||
                      tables[t].bytes == offsetof(tool_site_t, temp_count)
                  ? field(s, tables[t].bytes)
                  : field(s, tables[t].count));
      n++;
    }
    fprintf(out, "%s],\n", n ? "\n" : "");
    free(order);
  }
  fprintf(out, "\"histogram\": [\n");
  int first = 1;
  for (int b = 0; b < 65; b++) {
    if (r->hist_count[b] == 0) continue;
    unsigned long long lo = b ? 1ull << (b - 1) : 0,
                       hi = b ? (b == 64 ? ~0ull : (1ull << b) - 1) : 0;
    fprintf(out, "%s{\"min\": %llu, \"max\": %llu, \"count\": %.0f, \"bytes\": %.0f}",
            first ? "" : ",\n", lo, hi, r->hist_count[b], r->hist_bytes[b]);
    first = 0;
  }
  fprintf(out,
          "%s],\n\"timeline\": {\"samples\": %llu, \"max_heap_bytes\": %llu, "
          "\"max_rss_bytes\": %llu, \"arenas\": %llu, \"pools\": %llu, "
          "\"fragmentation_permille\": %u},\n\"threads\": [\n",
          first ? "" : "\n", (unsigned long long)r->nsamples, (unsigned long long)r->max_heap_bytes,
          (unsigned long long)r->max_rss_bytes, (unsigned long long)r->last_arenas,
          (unsigned long long)r->last_pools, r->last_fragmentation);
  for (uint32_t t = 1; t < r->nthreads; t++) {
    fprintf(out, "%s{\"index\": %u, \"tid\": %llu, \"name\": ", t > 1 ? ",\n" : "", t,
            (unsigned long long)r->thread_tids[t]);
    json_string(out, r->thread_names[t] ? r->thread_names[t] : "");
    fprintf(out, "}");
  }
  fprintf(out, "%s]\n}\n", r->nthreads > 1 ? "\n" : "");
}

void tool_report_print(FILE *out, const tool_report_t *r, const tool_options_t *o) {
  if (o->json) {
    print_json(out, r, o);
    return;
  }
  char a[32], b[32], c[32];
  if (r->warning[0]) fprintf(stderr, "obmem: warning: %s\n", r->warning);
  fprintf(out, "capture %s: pid %u, %s", r->path, r->header.pid,
          r->header.flags & OBM_CAPTURE_FLAG_SAMPLED ? "sampled" : "exact");
  if (r->header.flags & OBM_CAPTURE_FLAG_SAMPLED) {
    human(a, sizeof a, (double)r->header.sample_mean_bytes);
    fprintf(out, " (one sample per %s on average; numbers are estimates)", a);
  }
  if (r->header.flags & OBM_CAPTURE_FLAG_PYTHON)
    fprintf(out, ", Python stacks%s",
            r->header.flags & OBM_CAPTURE_FLAG_STACKS ? " with native frames" : "");
  fprintf(out, ", %llu records over %.3f s%s\n", (unsigned long long)r->nrecords,
          (double)r->end_time_ns / 1e9, r->complete ? "" : ", INCOMPLETE");
  human(a, sizeof a, r->peak_bytes);
  fprintf(out, "peak:                %s at %.3f s\n", a, (double)r->peak_time_ns / 1e9);
  human(a, sizeof a, r->total_bytes);
  fprintf(out, "total allocated:     %s in %.0f allocations (%llu frees)\n", a, r->total_count,
          (unsigned long long)r->nfrees);
  human(a, sizeof a, r->leak_bytes);
  fprintf(out, "%-21s%s in %.0f blocks\n", r->complete ? "leaked at exit:" : "live at the end:", a,
          r->leak_count);
  human(a, sizeof a, r->temp_bytes);
  fprintf(out, "temporary:           %.0f allocations (%s) freed right after\n", r->temp_count, a);
  if (r->nsamples) {
    human(a, sizeof a, (double)r->max_heap_bytes);
    human(b, sizeof b, (double)r->max_rss_bytes);
    fprintf(out,
            "timeline:            %llu samples; heap max %s, RSS max %s; at the end %llu "
            "arenas, %llu pools, %.1f %% fragmentation\n",
            (unsigned long long)r->nsamples, a, b, (unsigned long long)r->last_arenas,
            (unsigned long long)r->last_pools, r->last_fragmentation / 10.0);
  }
  for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
    size_t *order = sorted(r, tables[t].bytes);
    int n = 0;
    for (size_t i = 0; order && i < r->nsites && n < o->top; i++) {
      const tool_site_t *s = &r->sites[order[i]];
      if (field(s, tables[t].bytes) <= 0) break;
      if (n == 0) fprintf(out, "\ntop sites by %s:\n", tables[t].title);
      int counted = tables[t].bytes == offsetof(tool_site_t, count) ||
                    tables[t].bytes == offsetof(tool_site_t, temp_count);
      human(a, sizeof a, counted ? field(s, tables[t].count) : field(s, tables[t].bytes));
      snprintf(c, sizeof c, "%.0f",
               counted ? field(s, tables[t].bytes) : field(s, tables[t].count));
      fprintf(out, "  %12s %10s  %s", a, c, s->function);
      if (s->file[0]) fprintf(out, " (%s:%d)", s->file, s->line);
      fprintf(out, "\n");
      n++;
    }
    free(order);
  }
  fprintf(out, "\nsize histogram (allocations by size):\n");
  double most = 0;
  for (int i = 0; i < 65; i++)
    if (r->hist_count[i] > most) most = r->hist_count[i];
  for (int i = 0; i < 65; i++) {
    if (r->hist_count[i] == 0) continue;
    unsigned long long lo = i ? 1ull << (i - 1) : 0;
    human(a, sizeof a, (double)lo);
    human(b, sizeof b, r->hist_bytes[i]);
    int bar = most > 0 ? (int)(40 * r->hist_count[i] / most + 0.5) : 0;
    fprintf(out, "  >= %10s %12.0f %12s  %.*s\n", a, r->hist_count[i], b, bar,
            "########################################");
  }
}

static const tool_site_t *find_site(const tool_report_t *r, const tool_site_t *s) {
  for (size_t i = 0; i < r->nsites; i++)
    if (strcmp(r->sites[i].function, s->function) == 0 && strcmp(r->sites[i].file, s->file) == 0 &&
        r->sites[i].line == s->line)
      return &r->sites[i];
  return NULL;
}

typedef struct diff_row_s {
  const tool_site_t *a, *b;
  double delta;
} diff_row_t;

static int by_delta(const void *x, const void *y) {
  double a = fabs(((const diff_row_t *)x)->delta), b = fabs(((const diff_row_t *)y)->delta);
  return a < b ? 1 : a > b ? -1 : 0;
}

void tool_diff_print(FILE *out, const tool_report_t *a, const tool_report_t *b,
                     const tool_options_t *o) {
  diff_row_t *rows = calloc(a->nsites + b->nsites + 1, sizeof *rows);
  size_t n = 0;
  if (!rows) return;
  for (size_t i = 0; i < a->nsites; i++) {
    const tool_site_t *other = find_site(b, &a->sites[i]);
    rows[n++] = (diff_row_t){&a->sites[i], other,
                             (other ? other->total_bytes : 0) - a->sites[i].total_bytes};
  }
  for (size_t i = 0; i < b->nsites; i++)
    if (!find_site(a, &b->sites[i]))
      rows[n++] = (diff_row_t){NULL, &b->sites[i], b->sites[i].total_bytes};
  qsort(rows, n, sizeof *rows, by_delta);
  if (o->json) {
    fprintf(out, "{\n\"a\": ");
    json_string(out, a->path);
    fprintf(out, ",\n\"b\": ");
    json_string(out, b->path);
    fprintf(out,
            ",\n\"peak_bytes\": [%.0f, %.0f],\n\"total_bytes\": [%.0f, %.0f],\n"
            "\"leaked_bytes\": [%.0f, %.0f],\n\"sites\": [\n",
            a->peak_bytes, b->peak_bytes, a->total_bytes, b->total_bytes, a->leak_bytes,
            b->leak_bytes);
  } else {
    char x[32], y[32];
    human(x, sizeof x, a->peak_bytes);
    human(y, sizeof y, b->peak_bytes);
    fprintf(out, "peak:            %s -> %s\n", x, y);
    human(x, sizeof x, a->total_bytes);
    human(y, sizeof y, b->total_bytes);
    fprintf(out, "total allocated: %s -> %s\n", x, y);
    human(x, sizeof x, a->leak_bytes);
    human(y, sizeof y, b->leak_bytes);
    fprintf(out,
            "leaked:          %s -> %s\n\nsites by change of total bytes "
            "(A total, B total, change, B leaked, site):\n",
            x, y);
  }
  int shown = 0;
  for (size_t i = 0; i < n && shown < o->top; i++) {
    const tool_site_t *s = rows[i].b ? rows[i].b : rows[i].a;
    double ta = rows[i].a ? rows[i].a->total_bytes : 0, tb = rows[i].b ? rows[i].b->total_bytes : 0;
    double pa = rows[i].a ? rows[i].a->peak_bytes : 0, pb = rows[i].b ? rows[i].b->peak_bytes : 0;
    double la = rows[i].a ? rows[i].a->leak_bytes : 0, lb = rows[i].b ? rows[i].b->leak_bytes : 0;
    if (o->json) {
      fprintf(out, "%s{\"function\": ", shown ? ",\n" : "");
      json_string(out, s->function);
      fprintf(out, ", \"file\": ");
      json_string(out, s->file);
      fprintf(out,
              ", \"line\": %d, \"total_bytes\": [%.0f, %.0f], \"peak_bytes\": [%.0f, %.0f], "
              "\"leaked_bytes\": [%.0f, %.0f]}",
              s->line, ta, tb, pa, pb, la, lb);
    } else {
      char x[32], y[32], d[32], l[32];
      human(x, sizeof x, ta);
      human(y, sizeof y, tb);
      human(d, sizeof d, fabs(tb - ta));
      human(l, sizeof l, lb);
      fprintf(out, "  %11s %11s %c%11s %11s  %s", x, y, tb >= ta ? '+' : '-', d, l, s->function);
      if (s->file[0]) fprintf(out, " (%s:%d)", s->file, s->line);
      fprintf(out, "\n");
    }
    shown++;
  }
  if (o->json) fprintf(out, "%s]\n}\n", shown ? "\n" : "");
  free(rows);
}
