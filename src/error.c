/* error.c — the one error path (_obm_error -> handler), warnings, and allocation-free
 * formatting (vsnprintf is avoided in paths that may run inside malloc: we format ourselves).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static obm_error_handler_t *error_handler;
static void *error_handler_arg;

void obm_set_error_handler(obm_error_handler_t *handler, void *arg) {
  error_handler_arg = arg;
  error_handler = handler;
}

void _obm_write_fd(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    buf += n;
    len -= (size_t)n;
  }
}

/* A small printf: %s %d %u %ld %lu %zu %zd %llu %lld %x %lx %zx %p %c %%, with width for
 * numbers (e.g. %8zu, %-12s).  Never allocates, takes no lock and touches no global state,
 * so it may run at exit after stdio is gone, or in a signal handler. */
static size_t fmt_unsigned(char *tmp, unsigned long long v, unsigned base) {
  size_t n = 0;
  do {
    unsigned d = (unsigned)(v % base);
    tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v);
  return n;
}

int _obm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
  size_t pos = 0;
#define PUT(c)                                                                                \
  do {                                                                                        \
    if (pos + 1 < size) buf[pos] = (c);                                                       \
    pos++;                                                                                    \
  } while (0)
  for (const char *f = fmt; *f; f++) {
    if (*f != '%') {
      PUT(*f);
      continue;
    }
    f++;
    int left = 0, width = 0;
    if (*f == '-') {
      left = 1;
      f++;
    }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    int longs = 0, zsize = 0;
    while (*f == 'l') {
      longs++;
      f++;
    }
    if (*f == 'z') {
      zsize = 1;
      f++;
    }
    char tmp[32];
    const char *s = tmp;
    size_t len = 0;
    int neg = 0;
    char rev[32];
    switch (*f) {
    case 's':
      s = va_arg(ap, const char *);
      if (!s) s = "(null)";
      len = strlen(s);
      break;
    case 'c':
      tmp[0] = (char)va_arg(ap, int);
      len = 1;
      break;
    case 'd': {
      long long v = zsize ? (long long)va_arg(ap, ssize_t)
                  : longs ? (longs > 1 ? va_arg(ap, long long) : va_arg(ap, long))
                          : va_arg(ap, int);
      unsigned long long u = v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v;
      neg = v < 0;
      size_t n = fmt_unsigned(rev, u, 10);
      if (neg) tmp[len++] = '-';
      while (n) tmp[len++] = rev[--n];
      break;
    }
    case 'u':
    case 'x': {
      unsigned long long v = zsize ? (unsigned long long)va_arg(ap, size_t)
                           : longs ? (longs > 1 ? va_arg(ap, unsigned long long)
                                                : va_arg(ap, unsigned long))
                                   : va_arg(ap, unsigned);
      size_t n = fmt_unsigned(rev, v, *f == 'x' ? 16 : 10);
      while (n) tmp[len++] = rev[--n];
      break;
    }
    case 'p': {
      uintptr_t v = (uintptr_t)va_arg(ap, void *);
      tmp[len++] = '0';
      tmp[len++] = 'x';
      size_t n = fmt_unsigned(rev, v, 16);
      while (n) tmp[len++] = rev[--n];
      break;
    }
    case '%':
      tmp[0] = '%';
      len = 1;
      break;
    default:
      tmp[0] = '?';
      len = 1;
      if (!*f) f--;
      break;
    }
    size_t pad = (size_t)width > len ? (size_t)width - len : 0;
    if (!left)
      while (pad--) PUT(' ');
    for (size_t i = 0; i < len; i++) PUT(s[i]);
    if (left)
      while (pad--) PUT(' ');
  }
  if (size) buf[pos < size ? pos : size - 1] = 0;
  return (int)pos;
#undef PUT
}

int _obm_snprintf(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = _obm_vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

const char *_obm_program_name(void) {
  extern char *program_invocation_short_name;
  return program_invocation_short_name ? program_invocation_short_name : "?";
}

static const char *error_name(obm_error_t code) {
  switch (code) {
  case OBM_OK: return "no error";
  case OBM_ERR_FOREIGN_POINTER: return "pointer not allocated by obmem";
  case OBM_ERR_NOT_BLOCK_START: return "pointer is not the start of a block";
  case OBM_ERR_DOUBLE_FREE: return "double free";
  case OBM_ERR_OVERRUN: return "buffer overrun";
  case OBM_ERR_UNDERRUN: return "buffer underrun";
  case OBM_ERR_WRITE_AFTER_FREE: return "write after free";
  case OBM_ERR_CORRUPTION: return "heap corruption";
  case OBM_ERR_REFCOUNT: return "reference count error";
  }
  return "error";
}

void _obm_error(obm_error_t code, void *address, const char *fmt, ...) {
  char detail[768];
  va_list ap;
  va_start(ap, fmt);
  _obm_vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  char msg[1024];
  _obm_snprintf(msg, sizeof msg, "obmem: %s in %s (pid %d) at %p: %s\n", error_name(code),
                _obm_program_name(), (int)getpid(), address, detail);
  obm_error_handler_t *h = error_handler;
  if (h) {
    h(code, address, msg, error_handler_arg);
    return;
  }
  _obm_write_fd(2, msg, strlen(msg));
  abort();
}

void _obm_warning(const char *fmt, ...) {
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  _obm_vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  char msg[600];
  int n = _obm_snprintf(msg, sizeof msg, "obmem: warning: %s\n", detail);
  _obm_write_fd(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

void _obm_assert_fail(const char *cond, const char *file, int line) {
  _obm_error(OBM_ERR_CORRUPTION, NULL, "assertion failed: %s (%s:%d)", cond, file, line);
  abort();
}
