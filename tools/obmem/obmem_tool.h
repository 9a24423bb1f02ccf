/* obmem_tool.h — what the files of the obmem command share (never included by the library).
 *
 * main.c      argument parsing and the commands (report, diff, run, exec)
 * analysis.c  the two passes over a capture that make a report, and its text and JSON forms
 * symbols.c   return address -> function, file:line (libdw), allocator frames skipped
 */
#ifndef OBMEM_TOOL_H
#define OBMEM_TOOL_H

#include <obmem/capture.h>

#include <stdint.h>
#include <stdio.h>

#define TOOL_EXIT_BAD_INPUT 2

/* A call site: the innermost frame of a stack that is not inside the allocator. */
typedef struct tool_site_s {
  char *function; /* "?" when unknown */
  char *file;     /* "" when unknown */
  int line;       /* 0 when unknown */
  uint64_t address;
  double total_bytes, count;     /* all allocations (sampled: estimates) */
  double peak_bytes, peak_count; /* live at the peak */
  double leak_bytes, leak_count; /* live at the end */
  double temp_count, temp_bytes; /* freed right after */
} tool_site_t;

typedef struct tool_report_s {
  const char *path;
  obm_capture_header_t header;
  int complete;
  char warning[700];
  uint64_t nrecords, nallocs, nfrees, nunmatched_frees;
  double total_bytes, total_count;
  double peak_bytes;
  uint64_t peak_time_ns;
  double leak_bytes, leak_count;
  double temp_count, temp_bytes;
  double hist_count[65], hist_bytes[65]; /* by floor(log2(size)) */
  uint64_t nsamples, max_heap_bytes, max_rss_bytes, last_arenas, last_pools;
  uint32_t last_fragmentation;
  uint64_t end_time_ns;
  tool_site_t *sites;
  size_t nsites;
  uint32_t nthreads;
  char **thread_names;
  uint64_t *thread_tids;
} tool_report_t;

typedef struct tool_options_s {
  int json, salvage, progress;
  int top; /* rows per table */
} tool_options_t;

/* Reads the capture at path; 0, or 2 after printing "obmem: <file>: offset N: what". */
int tool_analyse(const char *path, const tool_options_t *options, tool_report_t *out);
void tool_report_free(tool_report_t *r);
void tool_report_print(FILE *out, const tool_report_t *r, const tool_options_t *options);
void tool_diff_print(FILE *out, const tool_report_t *a, const tool_report_t *b,
                     const tool_options_t *options);

/* symbols.c: the modules of a capture, then lookups.  A frame inside the allocator (obm_*,
 * malloc & co., operator new/delete, libobmem) is reported by tool_symbol_is_allocator. */
typedef struct tool_symbols_s tool_symbols_t;
tool_symbols_t *tool_symbols_open(const obm_capture_t *cap);
void tool_symbols_close(tool_symbols_t *s);
/* Fills function/file/line for a return address (looked up at address - 1); strings are
 * owned by s. */
void tool_symbol(tool_symbols_t *s, uint64_t address, const char **function, const char **file,
                 int *line);
int tool_symbol_is_allocator(const char *function, const char *file);
/* Whether address lies in obmem's own shared library (libobmem*.so): its frames, static
 * functions included, are the allocator's, never a site. */
int tool_address_in_obmem(const tool_symbols_t *s, uint64_t address);

#endif /* OBMEM_TOOL_H */
