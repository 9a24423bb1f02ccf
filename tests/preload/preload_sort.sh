#!/usr/bin/env bash
# preload_sort.sh — GNU sort on obmem: a generated 50 MB file sorts to the same bytes.
#
# The input (about 50 MB, 1.2 million lines of pseudo-random words and numbers, generated
# once by gawk from a fixed seed, before both runs) is sorted four ways: whole lines in the
# C locale with 2 threads and a 16 MiB buffer (so sort spills runs to temporary files and
# merges them), numerically on a key with a field separator, unique lines in reverse, and a
# 200,000-line slice in the C.UTF-8 locale (strcoll/strxfrm).  Compared byte for byte: all
# four sorted files, plus wc's counts of each.
# Usage: preload_sort.sh   (env OBMEM_TEST_PRELOAD)
. "$(dirname "$0")/lib.sh"
setup_work

gawk 'BEGIN {
  x = 12345
  letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
  for (i = 0; i < 1200000; i++) {
    line = ""
    n = 3 + i % 5
    for (w = 0; w < n; w++) {
      x = (x * 69069 + 1) % 4294967296
      len = 2 + x % 9
      word = substr(letters, 1 + (x % 45), len)
      line = line (w ? " " : "") word
    }
    x = (x * 69069 + 1) % 4294967296
    printf "%s,%d,%s\n", line, x % 1000003, (i % 17 ? "k" : "K") (x % 97)
  }
}' >"$WORK/input.txt"
size=$(stat -c %s "$WORK/input.txt")
[ "$size" -gt 45000000 ] || fail "generated input is only $size bytes"

sort_job() {
  mkdir -p tmp
  sort -S 16M --parallel=2 -T tmp "$WORK/input.txt" >artifacts/lines.sorted
  sort -S 16M --parallel=2 -T tmp -t, -k2,2n -k1,1 "$WORK/input.txt" >artifacts/numeric.sorted
  sort -u -r "$WORK/input.txt" >artifacts/unique.sorted
  head -200000 "$WORK/input.txt" >slice.txt
  LC_ALL=C.UTF-8 sort -f slice.txt >artifacts/utf8.sorted
  wc -l artifacts/*.sorted
  sort -c artifacts/lines.sorted && echo "lines.sorted is sorted"
}

require_on_obmem sort --version
run_twice sort_job
finish
