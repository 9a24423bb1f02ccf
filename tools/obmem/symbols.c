/* symbols.c — return addresses to function and file:line, for reports.
 *
 * With elfutils (OBMEM_HAVE_LIBDW): one offline Dwfl session holds every module of the capture
 * at its recorded load address (dwfl_report_elf); a return address is looked up one byte
 * before it (inside the call instruction), so the line is the call's line.  Without libdw, or
 * for an address in no known module, the function is "module+0xoffset" or the raw address.
 * Results are cached per address (a sorted array is not needed: a small open hash).
 */
#define _GNU_SOURCE
#include "obmem_tool.h"

#include <stdlib.h>
#include <string.h>
#ifdef OBMEM_HAVE_LIBDW
#include <elfutils/libdwfl.h>
#endif

typedef struct sym_entry_s {
  uint64_t address; /* 0 = empty */
  char *function;
  char *file;
  int line;
} sym_entry_t;

struct tool_symbols_s {
#ifdef OBMEM_HAVE_LIBDW
  Dwfl *dwfl;
#endif
  const obm_capture_t *cap;
  sym_entry_t *table;
  size_t capacity, count;
};

#ifdef OBMEM_HAVE_LIBDW
static char *debuginfo_path;
static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &debuginfo_path,
};
#endif

tool_symbols_t *tool_symbols_open(const obm_capture_t *cap) {
  tool_symbols_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->cap = cap;
  s->capacity = 1024;
  s->table = calloc(s->capacity, sizeof *s->table);
  if (!s->table) {
    free(s);
    return NULL;
  }
#ifdef OBMEM_HAVE_LIBDW
  s->dwfl = dwfl_begin(&callbacks);
  if (s->dwfl) {
    dwfl_report_begin(s->dwfl);
    for (uint32_t i = 0; i < obm_capture_nmodules(cap); i++) {
      obm_capture_module_t m;
      if (obm_capture_module(cap, i, &m) != 0 || !m.path[0]) continue;
      if (strncmp(m.path, "linux-vdso", 10) == 0) continue;
      dwfl_report_elf(s->dwfl, m.path, m.path, -1, m.load_address, false);
    }
    dwfl_report_end(s->dwfl, NULL, NULL);
  }
#endif
  return s;
}

void tool_symbols_close(tool_symbols_t *s) {
  if (!s) return;
#ifdef OBMEM_HAVE_LIBDW
  if (s->dwfl) dwfl_end(s->dwfl);
#endif
  for (size_t i = 0; i < s->capacity; i++) {
    free(s->table[i].function);
    free(s->table[i].file);
  }
  free(s->table);
  free(s);
}

static sym_entry_t *slot_for(sym_entry_t *table, size_t capacity, uint64_t address) {
  size_t i = (size_t)((address * 0x9e3779b97f4a7c15ull) >> 20) & (capacity - 1);
  while (table[i].address && table[i].address != address)
    i = (i + 1) & (capacity - 1);
  return &table[i];
}

/* The path of the module with the highest load address not above the address, or NULL. */
static const char *module_of(const tool_symbols_t *s, uint64_t address, uint64_t *base) {
  const char *best = NULL;
  for (uint32_t i = 0; i < obm_capture_nmodules(s->cap); i++) {
    obm_capture_module_t m;
    if (obm_capture_module(s->cap, i, &m) == 0 && m.load_address <= address &&
        (!best || m.load_address >= *base)) {
      best = m.path;
      *base = m.load_address;
    }
  }
  return best;
}

int tool_address_in_obmem(const tool_symbols_t *s, uint64_t address) {
  uint64_t base = 0;
  const char *path = s ? module_of(s, address, &base) : NULL;
  if (!path) return 0;
  const char *slash = strrchr(path, '/');
  return strncmp(slash ? slash + 1 : path, "libobmem", 8) == 0;
}

static void lookup(tool_symbols_t *s, uint64_t address, sym_entry_t *e) {
  char buf[600];
  e->line = 0;
  e->file = strdup("");
#ifdef OBMEM_HAVE_LIBDW
  if (s->dwfl) {
    Dwarf_Addr pc = address - 1;
    Dwfl_Module *m = dwfl_addrmodule(s->dwfl, pc);
    if (m) {
      const char *name = dwfl_module_addrname(m, pc);
      Dwfl_Line *l = dwfl_module_getsrc(m, pc);
      int line = 0;
      const char *file = l ? dwfl_lineinfo(l, NULL, &line, NULL, NULL, NULL) : NULL;
      if (file) {
        free(e->file);
        e->file = strdup(file);
        e->line = line;
      }
      if (name) {
        e->function = strdup(name);
        return;
      }
      Dwarf_Addr base = 0;
      const char *mod = dwfl_module_info(m, NULL, &base, NULL, NULL, NULL, NULL, NULL);
      snprintf(buf, sizeof buf, "%s+0x%llx", mod ? mod : "?", (unsigned long long)(pc + 1 - base));
      e->function = strdup(buf);
      return;
    }
  }
#endif
  uint64_t best_base = 0;
  const char *best = module_of(s, address, &best_base);
  if (best) {
    const char *slash = strrchr(best, '/');
    snprintf(buf, sizeof buf, "%s+0x%llx", slash ? slash + 1 : best,
             (unsigned long long)(address - best_base));
  } else {
    snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)address);
  }
  e->function = strdup(buf);
}

void tool_symbol(tool_symbols_t *s, uint64_t address, const char **function, const char **file,
                 int *line) {
  static sym_entry_t none = {0, "?", "", 0};
  sym_entry_t *e = &none;
  if (s && address) {
    if (s->count * 2 >= s->capacity) {
      size_t n = s->capacity * 2;
      sym_entry_t *t = calloc(n, sizeof *t);
      if (t) {
        for (size_t i = 0; i < s->capacity; i++)
          if (s->table[i].address) *slot_for(t, n, s->table[i].address) = s->table[i];
        free(s->table);
        s->table = t;
        s->capacity = n;
      }
    }
    e = slot_for(s->table, s->capacity, address);
    if (!e->address) {
      e->address = address;
      lookup(s, address, e);
      if (!e->function) e->function = strdup("?");
      if (!e->file) e->file = strdup("");
      s->count++;
    }
  }
  *function = e->function ? e->function : "?";
  *file = e->file ? e->file : "";
  *line = e->line;
}

int tool_symbol_is_allocator(const char *f, const char *file) {
  static const char *const names[] = {"malloc",       "calloc",        "realloc",        "free",
                                      "reallocarray", "aligned_alloc", "posix_memalign", "memalign",
                                      "valloc",       "pvalloc",       "cfree",          NULL};
  if (strncmp(f, "obm_", 4) == 0 || strncmp(f, "_obm_", 5) == 0) return 1;
  if (strncmp(f, "_Znw", 4) == 0 || strncmp(f, "_Zna", 4) == 0 || strncmp(f, "_Zdl", 4) == 0 ||
      strncmp(f, "_Zda", 4) == 0)
    return 1;
  for (int i = 0; names[i]; i++)
    if (strcmp(f, names[i]) == 0) return 1;
  if (strncmp(f, "libobmem", 8) == 0) return 1; /* module+offset inside obmem */
  return file && (strstr(file, "/src/alloc/") || strstr(file, "/src/preload/") ||
                  strstr(file, "/src/trace/"));
}
