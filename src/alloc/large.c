/* large.c — blocks above OBM_MEDIUM_MAX: one mapping each, 1 MiB aligned, with a cache.
 *
 * A large segment is [header (64 B) | block ... ] mapped on its own.  Freed segments go to a
 * cache with their pages still committed, so the common "allocate a few MiB, use, free,
 * repeat" pattern costs neither a system call nor a page fault.  A request takes the
 * best-fitting cached segment whole when it is less than 1 MiB too big; otherwise it grows the
 * largest smaller cached segment with mremap (its pages are reused, only the extension is new),
 * so that a big segment stays whole for a request of its size; with nothing smaller cached it
 * takes a segment at most 8x the request whole, and beside only bigger ones it maps a fresh
 * segment (cache_choose).  A cached segment is never trimmed for a smaller request: the pages
 * cut off are resident, and the next request of the segment's size would fault them in again
 * (only slack beyond 64 MiB is unmapped).  Giving back only the resident pages beyond a much
 * smaller block (kept mapped) was tried: json_roundtrip's peak under CPython went from 1.09x to
 * 1.05x pymalloc's, but bench/random.c and bench/align.c took 12-22 % more time in the faults
 * of the next big block.  The cache is a compact array (one scan of
 * contiguous memory, no walk through the segments' own pages), bounded by the larger of
 * OBMEM_LARGE_CACHE_MB and the large-block high-water mark, and by CACHE_MAX_ENTRIES; an entry
 * older than 10 x OBMEM_PURGE_DELAY_MS (a large block is worth more page faults than a pool
 * slot) is unmapped at the next large allocation or free, as is the least recently freed one
 * when the cache is full.
 *
 * realloc grows in place with mremap, or moves the pages to a new aligned address with mremap
 * (no copy); a growth past the mapping maps at least a quarter more (realloc_growth), so that
 * a block grown a few bytes at a time costs O(log n) mremaps, not one per page.  A realloc to
 * a size at least the one asked for last keeps the block, whatever its slack (a segment taken
 * whole from the cache is not cut back by the first growth of the block in it); a smaller size
 * gives the tail back when that saves 25 % or more of the mapping.  Everything here is under
 * _obm_large_lock except the system calls, which run outside it.
 */
#include "alloc/alloc_internal.h"

#include <errno.h>
#include <string.h>

#define CACHE_MAX_ENTRIES 256

_Static_assert(sizeof(obm_large_t) <= OBM_LARGE_HEADER, "a large header fits before the block");

typedef struct cache_entry_s {
  obm_large_t *seg;
  size_t size;    /* seg->mapped_size, copied so that the scan touches only this array */
  uint64_t since; /* when it was freed (monotonic ns) */
} cache_entry_t;

pthread_mutex_t _obm_large_lock = PTHREAD_MUTEX_INITIALIZER;
obm_large_t *_obm_large_live; /* doubly linked */
static cache_entry_t cache[CACHE_MAX_ENTRIES];
static size_t cache_bytes, cache_count;
/* No entry is older than this (exact after each expiry scan; entries only get newer), so a
 * free or an allocation that finds nothing expired skips the scan. */
static uint64_t cache_oldest;
static uint64_t live_count, live_bytes, live_mapped, nmalloc_total, cache_hits;
static uint64_t live_mapped_highwater; /* since start or the last obm_trim */

/* The cache may hold OBMEM_LARGE_CACHE_MB, or as much as the most large-block memory the
 * program had live at once, whichever is more: a program that frees and reallocates a batch
 * of big blocks finds them all again (the purge delay still bounds how long). */
static size_t cache_limit(void) {
  size_t opt = (size_t)_obm_option(OBM_OPTION_LARGE_CACHE_MB) << 20;
  return live_mapped_highwater > opt ? (size_t)live_mapped_highwater : opt;
}

static size_t page_round(size_t n) {
  size_t page = _obm_os_page_size();
  return (n + page - 1) & ~(page - 1);
}

static void live_link(obm_large_t *s) {
  s->prev = NULL;
  s->next = _obm_large_live;
  if (_obm_large_live) _obm_large_live->prev = s;
  _obm_large_live = s;
  live_count++;
  live_bytes += s->usable_size;
  live_mapped += s->mapped_size;
  if (live_mapped > live_mapped_highwater) live_mapped_highwater = live_mapped;
}

static void live_unlink(obm_large_t *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    _obm_large_live = s->next;
  if (s->next) s->next->prev = s->prev;
  live_count--;
  live_bytes -= s->usable_size;
  live_mapped -= s->mapped_size;
}

/* Removes entry i (order is not kept: the scan does not need it). */
static obm_large_t *cache_take(size_t i) {
  obm_large_t *s = cache[i].seg;
  cache_bytes -= cache[i].size;
  cache[i] = cache[--cache_count];
  return s;
}

/* Moves expired entries (and, over the limits, the oldest) to *victims. */
static void cache_expire(uint64_t now, size_t limit, obm_large_t **victims) {
  uint64_t delay = (uint64_t)_obm_option(OBM_OPTION_PURGE_DELAY_MS) * 10000000u; /* 10x, ns */
  if (cache_count && now - cache_oldest >= delay) {
    uint64_t oldest = now;
    for (size_t i = 0; i < cache_count;) {
      if (now - cache[i].since >= delay) {
        obm_large_t *v = cache_take(i);
        v->next = *victims;
        *victims = v;
      } else {
        if (cache[i].since < oldest) oldest = cache[i].since;
        i++;
      }
    }
    cache_oldest = oldest;
  }
  while (cache_count && (cache_bytes > limit || cache_count >= CACHE_MAX_ENTRIES)) {
    size_t oldest = 0;
    for (size_t i = 1; i < cache_count; i++)
      if (cache[i].since < cache[oldest].since) oldest = i;
    obm_large_t *v = cache_take(oldest);
    v->next = *victims;
    *victims = v;
  }
}

static void unmap_victims(obm_large_t *victims);

static void segment_unmap(obm_large_t *s) {
  size_t size = s->mapped_size;
  _obm_pagemap_set(s, size, NULL);
  _obm_os_unmap(s, size);
  _obm_mapped_sub(size);
}

/* Unmaps the part of s beyond new_size (page multiple) and clears the page map there. */
static void segment_shrink(obm_large_t *s, size_t new_size) {
  uint8_t *base = (uint8_t *)s;
  size_t old = s->mapped_size;
  if (new_size >= old) return;
  uintptr_t first_free_chunk =
      ((uintptr_t)base + new_size + OBM_ARENA_SIZE - 1) & ~(uintptr_t)(OBM_ARENA_SIZE - 1);
  if (first_free_chunk < (uintptr_t)base + old)
    _obm_pagemap_set((void *)first_free_chunk, (uintptr_t)base + old - first_free_chunk, NULL);
  _obm_os_remap_inplace(base, old, new_size);
  s->mapped_size = new_size;
  _obm_mapped_sub(old - new_size);
}

/* A cached segment serves a request whole when it is less than CACHE_SLACK_MAX too big, or,
 * when no smaller segment can be grown instead, at most CACHE_FIT_RATIO times the request.
 * 8x, not 2x or 4x: in a churn of random sizes (bench/large.c, 1-8 MiB and 8-64 MiB) every
 * cached segment is within 8x of every request; with 4x, the few requests under a quarter of
 * every cached segment mapped fresh ones beside the cache, and each stayed there, resident,
 * until it expired: +23 % peak RSS (17.5 -> 21.5 MiB, 128 -> 157 MiB).  Segments more than 8x
 * the request are another kind of buffer (CPython's str.lower() works in a 3-code-point UCS4
 * buffer, 12x the 1-byte string it returns, and needs it again for the next string) and stay
 * whole for it. */
#define CACHE_SLACK_MAX ((size_t)OBM_ARENA_SIZE)
#define CACHE_FIT_RATIO 8

/* A segment taken whole keeps at most 64 MiB of slack; the tail beyond is unmapped. */
#define LARGE_NEEDS_SHRINK(s, need) ((s)->mapped_size - (need) > 64 * (size_t)OBM_ARENA_SIZE)

/* A realloc past the mapping maps at least old + old / 4 bytes (at most 64 MiB more than asked
 * for), so that a block grown a few bytes at a time (CPython's `s += t` on a string it holds
 * the only reference to) costs O(log n) mremaps, not one per page.  The extra pages are the
 * block's usable size; they cost no memory until the program writes there.  A quarter stays
 * below what the 25 % shrink rule takes back: a realloc back to the size asked for saves 20 %
 * and keeps the block, so growing and shrinking never alternate. */
#define REALLOC_GROWTH_MAX (64 * (size_t)OBM_ARENA_SIZE)
static size_t realloc_growth(size_t old) {
  return old / 4 < REALLOC_GROWTH_MAX ? old / 4 : REALLOC_GROWTH_MAX;
}

/* Grows a cached (unlisted) segment to `need` bytes in place, or by moving its pages to a new
 * 1 MiB-aligned place (no copy); on failure unmaps it and returns NULL. */
static obm_large_t *segment_grow(obm_large_t *s, size_t need) {
  size_t old = s->mapped_size;
  size_t block_offset = (size_t)(s->block - (uint8_t *)s);
  if (_obm_os_remap_inplace(s, old, need) == 0) {
    if (_obm_pagemap_set(s, need, (obm_segment_t *)s) == 0) {
      s->mapped_size = need;
      _obm_mapped_add(need - old);
      return s;
    }
    _obm_os_remap_inplace(s, need, old);
  } else {
    _obm_pagemap_set(s, old, NULL);
    obm_large_t *n = _obm_os_remap_move(s, old, need, OBM_ARENA_SIZE);
    if (n && _obm_pagemap_set(n, need, (obm_segment_t *)n) == 0) {
      n->mapped_size = need;
      n->block = (uint8_t *)n + block_offset; /* the header moved with the pages */
      _obm_mapped_add(need - old);
      return n;
    }
    if (n) {
      _obm_os_unmap(n, need);
      _obm_mapped_sub(old);
      return NULL;
    }
    _obm_pagemap_set(s, old, (obm_segment_t *)s);
  }
  segment_unmap(s);
  return NULL;
}

/* A segment out of the cache holds the block of a `size`-byte request now. */
static void segment_hand_out(obm_large_t *s, size_t offset, size_t size) {
  /* Debug mode reads a freed block's header when its raw block is handed out again: if the
   * block now starts elsewhere, the old header must not describe bytes other blocks used. */
  if (_obm_debug_on && s->block != (uint8_t *)s + offset &&
      s->block + OBM_LARGE_HEADER <= (uint8_t *)s + s->mapped_size)
    memset(s->block, 0, OBM_LARGE_HEADER);
  s->block = (uint8_t *)s + offset;
  s->usable_size = s->mapped_size - offset;
  s->cached = 0;
  s->traced = 0;
  s->requested_size = size;
}

/* The cache entry a request of `need` bytes uses (under _obm_large_lock), in this order:
 *   1. the smallest segment >= need, if less than CACHE_SLACK_MAX too big: taken whole;
 *   2. the largest segment < need: grown to need (*grow = 1) rather than a bigger one taken with
 *      a MiB or more of slack, which stays whole for a request its size;
 *   3. the smallest segment >= need, if at most CACHE_FIT_RATIO times need: taken whole;
 *   4. none (SIZE_MAX): only much bigger segments are cached, and a fresh one is mapped. */
static size_t cache_choose(size_t need, int *grow) {
  size_t fit = SIZE_MAX, below = SIZE_MAX;
  for (size_t i = 0; i < cache_count; i++) {
    size_t size = cache[i].size;
    if (size >= need) {
      if (fit == SIZE_MAX || size < cache[fit].size) fit = i;
    } else if (below == SIZE_MAX || size > cache[below].size) {
      below = i;
    }
  }
  if (fit != SIZE_MAX && cache[fit].size - need < CACHE_SLACK_MAX) return fit;
  if (below != SIZE_MAX) {
    *grow = 1;
    return below;
  }
  if (fit != SIZE_MAX && cache[fit].size / CACHE_FIT_RATIO <= need) return fit;
  return SIZE_MAX;
}

void *_obm_large_alloc(size_t size, size_t alignment, int zero) {
  _obm_ensure_init();
  size_t offset = alignment <= OBM_LARGE_HEADER ? OBM_LARGE_HEADER : alignment;
  if (size > ((size_t)1 << 46) - offset) {
    errno = ENOMEM;
    return NULL;
  }
  size_t need = page_round(offset + (size ? size : 1)); /* the block must lie inside */
  size_t map_align = alignment > OBM_ARENA_SIZE ? alignment : OBM_ARENA_SIZE;
  obm_large_t *s = NULL, *grow = NULL;
  int linked = 0;
  if (map_align == OBM_ARENA_SIZE) {
    obm_large_t *victims = NULL;
    pthread_mutex_lock(&_obm_large_lock);
    if (cache_count) {
      int grow_it = 0;
      size_t i = cache_choose(need, &grow_it);
      if (i != SIZE_MAX) {
        s = cache_take(i);
        cache_hits++;
        if (grow_it) {
          grow = s;
          s = NULL;
        } else if (!LARGE_NEEDS_SHRINK(s, need)) {
          /* the common hit: finish it under this one lock */
          segment_hand_out(s, offset, size);
          live_link(s);
          nmalloc_total++;
          linked = 1;
        }
      }
      cache_expire(_obm_os_clock_coarse_ns(), cache_limit(), &victims);
    }
    pthread_mutex_unlock(&_obm_large_lock);
    unmap_victims(victims);
    if (grow) s = segment_grow(grow, need);
    if (s && !linked && LARGE_NEEDS_SHRINK(s, need)) segment_shrink(s, need);
  }
  if (linked) {
    if (zero) memset(s->block, 0, size);
    return s->block;
  }
  if (s) {
    segment_hand_out(s, offset, size);
    if (zero) memset(s->block, 0, size);
  } else {
    s = _obm_os_map(need, map_align);
    if (!s) return NULL;
    if (_obm_pagemap_set(s, need, (obm_segment_t *)s) != 0) {
      _obm_os_unmap(s, need);
      errno = ENOMEM;
      return NULL;
    }
    _obm_mapped_add(need);
    s->kind = OBM_SEG_LARGE;
    s->mapped_size = need;
    s->block = (uint8_t *)s + offset;
    s->usable_size = need - offset; /* fresh pages are zero: nothing to clear */
    s->cached = 0;
    s->requested_size = size;
  }
  pthread_mutex_lock(&_obm_large_lock);
  live_link(s);
  nmalloc_total++;
  pthread_mutex_unlock(&_obm_large_lock);
  return s->block;
}

void _obm_large_free(obm_large_t *s) {
  obm_large_t *victims = NULL;
  pthread_mutex_lock(&_obm_large_lock);
  size_t limit = cache_limit();
  live_unlink(s);
  int cacheable = s->mapped_size <= limit && ((uintptr_t)s & (OBM_ARENA_SIZE - 1)) == 0 &&
                  (s->block - (uint8_t *)s) <= (ptrdiff_t)OBM_ARENA_SIZE;
  if (cacheable) {
    uint64_t now = _obm_os_clock_coarse_ns();
    cache_expire(now, limit - s->mapped_size, &victims); /* make room first */
    s->cached = 1;
    s->next = s->prev = NULL;
    if (cache_count == 0) cache_oldest = now;
    cache[cache_count++] = (cache_entry_t){s, s->mapped_size, now};
    cache_bytes += s->mapped_size;
  } else {
    s->next = victims;
    victims = s;
  }
  pthread_mutex_unlock(&_obm_large_lock);
  unmap_victims(victims);
  if (cacheable) _obm_purger_poke(); /* the cached block expires later */
}

static void unmap_victims(obm_large_t *victims) {
  while (victims) {
    obm_large_t *next = victims->next;
    segment_unmap(victims);
    victims = next;
  }
}

void *_obm_large_realloc(obm_large_t *s, size_t size) {
  size_t offset = (size_t)(s->block - (uint8_t *)s);
  if (size > ((size_t)1 << 46) - offset) {
    errno = ENOMEM;
    return NULL;
  }
  size_t need = page_round(offset + (size ? size : 1));
  size_t old = s->mapped_size;
  if (need <= old) {
    size_t previous = s->requested_size;
    s->requested_size = size;
    if (size >= previous || need * 4 > old * 3) return s->block; /* grew, or saves < 25 % */
    pthread_mutex_lock(&_obm_large_lock);
    live_mapped -= old - need;
    live_bytes -= old - need;
    segment_shrink(s, need);
    s->usable_size = need - offset;
    pthread_mutex_unlock(&_obm_large_lock);
    return s->block;
  }
  size_t step = realloc_growth(old);
  if (need - old < step && old + step <= ((size_t)1 << 46)) need = page_round(old + step);
  if (_obm_os_remap_inplace(s, old, need) == 0) {
    if (_obm_pagemap_set(s, need, (obm_segment_t *)s) != 0) {
      _obm_os_remap_inplace(s, need, old);
      errno = ENOMEM;
      return NULL;
    }
    _obm_mapped_add(need - old);
    pthread_mutex_lock(&_obm_large_lock);
    live_mapped += need - old;
    live_bytes += need - old;
    if (live_mapped > live_mapped_highwater) live_mapped_highwater = live_mapped;
    s->mapped_size = need;
    s->usable_size = need - offset;
    pthread_mutex_unlock(&_obm_large_lock);
    s->requested_size = size;
    return s->block;
  }
  /* Move the pages to a new aligned place.  Unlink first: neighbours point at s. */
  size_t align = offset > OBM_ARENA_SIZE ? offset : OBM_ARENA_SIZE;
  if (align & (align - 1)) align = OBM_ARENA_SIZE;
  pthread_mutex_lock(&_obm_large_lock);
  live_unlink(s);
  pthread_mutex_unlock(&_obm_large_lock);
  _obm_pagemap_set(s, old, NULL);
  obm_large_t *n = _obm_os_remap_move(s, old, need, align);
  if (n && _obm_pagemap_set(n, need, (obm_segment_t *)n) != 0) {
    /* cannot describe the new place: leave the block where it was is impossible now; report
     * failure after moving the pages back */
    obm_large_t *back = _obm_os_remap_move(n, need, old, align);
    n = NULL;
    s = back ? back : s;
  }
  if (n) {
    _obm_mapped_add(need - old);
    n->mapped_size = need;
    n->block = (uint8_t *)n + offset;
    n->usable_size = need - offset;
    n->requested_size = size;
    s = n;
  } else {
    _obm_pagemap_set(s, s->mapped_size, (obm_segment_t *)s);
  }
  pthread_mutex_lock(&_obm_large_lock);
  live_link(s);
  pthread_mutex_unlock(&_obm_large_lock);
  if (!n) {
    errno = ENOMEM;
    return NULL;
  }
  return n->block;
}

void _obm_large_trim(void) {
  obm_large_t *victims = NULL;
  pthread_mutex_lock(&_obm_large_lock);
  live_mapped_highwater = live_mapped;
  while (cache_count) {
    obm_large_t *v = cache_take(cache_count - 1);
    v->next = victims;
    victims = v;
  }
  pthread_mutex_unlock(&_obm_large_lock);
  unmap_victims(victims);
}

int _obm_large_purge_expired(void) {
  obm_large_t *victims = NULL;
  pthread_mutex_lock(&_obm_large_lock);
  cache_expire(_obm_os_clock_coarse_ns(), cache_limit(), &victims);
  int left = cache_count > 0;
  pthread_mutex_unlock(&_obm_large_lock);
  unmap_victims(victims);
  return left;
}

void _obm_large_stats(obm_stats_t *out) {
  pthread_mutex_lock(&_obm_large_lock);
  out->large_blocks = live_count;
  out->large_bytes = live_bytes;
  out->large_mapped_bytes = live_mapped;
  out->large_cached_blocks = cache_count;
  out->large_cached_bytes = cache_bytes;
  out->large_nmalloc = nmalloc_total;
  out->large_cache_hits = cache_hits;
  pthread_mutex_unlock(&_obm_large_lock);
}

size_t _obm_large_check(void) {
  size_t problems = 0;
  pthread_mutex_lock(&_obm_large_lock);
  for (int list = 0; list < 2; list++) {
    size_t ci = 0;
    for (obm_large_t *s = list ? (cache_count ? cache[0].seg : NULL) : _obm_large_live; s;
         s = list ? (++ci < cache_count ? cache[ci].seg : NULL) : s->next) {
      const char *what = NULL;
      if (s->kind != OBM_SEG_LARGE)
        what = "segment kind is wrong";
      else if ((int)s->cached != list)
        what = "cached flag disagrees with its list";
      else if (s->block + s->usable_size != (uint8_t *)s + s->mapped_size)
        what = "block + usable_size != end of mapping";
      else if (_obm_pagemap_lookup(s) != (obm_segment_t *)s ||
               _obm_pagemap_lookup((uint8_t *)s + s->mapped_size - 1) != (obm_segment_t *)s)
        what = "page map does not point at the segment";
      if (what) {
        problems++;
        _obm_error(OBM_ERR_CORRUPTION, s, "large segment %p (%zu bytes): %s", (void *)s,
                   s->mapped_size, what);
      }
      if (_obm_debug_on) problems += _obm_debug_check_block(s->block, s->usable_size);
    }
  }
  pthread_mutex_unlock(&_obm_large_lock);
  return problems;
}
