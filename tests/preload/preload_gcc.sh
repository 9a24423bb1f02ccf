#!/usr/bin/env bash
# preload_gcc.sh — gcc and g++ on obmem: the same assembly, objects, program and warnings.
#
# The job compiles obmem's own C sources (with -O2 -g: cc1's optimizer and debug-info
# generation allocate heavily) to assembly and to objects, compiles a generated C file with
# 1000 functions and a big switch, compiles the C++ test cxx_threads.cpp (templates,
# libstdc++ headers) with g++ -O2, links a program and runs it.  The sources are copied once,
# before both runs, so that both compile the same text.  The driver, cc1, cc1plus, as,
# collect2 and ld all run on obmem in the preloaded run.  Compared byte for byte: the
# compilers' messages, the .s and .o files, the linked executable and its output.
# Usage: preload_gcc.sh   (env OBMEM_TEST_PRELOAD)
. "$(dirname "$0")/lib.sh"
setup_work
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
mkdir -p "$WORK/sources"
cp -r "$SRC/include" "$SRC/src" "$HERE/cxx_threads.cpp" "$WORK/sources/"

gcc_job() {
  cp -r "$WORK/sources" src
  # a generated translation unit: many functions, a big switch, string tables
  awk 'BEGIN {
    print "#include <stdio.h>\n#include <string.h>"
    for (i = 0; i < 1000; i++) {
      printf "static int f%d(int x) { int y = x * %d + %d; for (int k = 0; k < (x & 7); k++) y ^= y << 3 | k; return y + %d; }\n", i, i % 97 + 1, i, i % 13
    }
    print "static const char *names[] = {"
    for (i = 0; i < 1000; i++) printf "  \"name-%d-%s\",\n", i, substr("abcdefghijklmnopqrstuvwxyz", i % 26 + 1, 3)
    print "};\nint dispatch(int which, int x) {\n  switch (which) {"
    for (i = 0; i < 1000; i++) printf "  case %d: return f%d(x) + (int)strlen(names[%d]);\n", i, i, i
    print "  }\n  return -1;\n}\nint main(void) {\n  long sum = 0;"
    print "  for (int i = 0; i < 1000; i++) sum += dispatch(i, i * 7);"
    print "  printf(\"sum %ld %s\\n\", sum, names[999]);\n  return 0;\n}"
  }' >gen.c
  gcc -O2 -Wall -Wextra -S gen.c -o artifacts/gen.s
  gcc -c artifacts/gen.s -o artifacts/gen.o
  gcc artifacts/gen.o -o artifacts/gen
  ./artifacts/gen
  for f in src/src/os/os.c src/src/alloc/*.c src/src/*.c; do
    out=artifacts/$(basename "$f" .c)
    gcc -O2 -g -std=gnu11 -Wall -Wextra -Wshadow -Isrc/include -Isrc/src -S "$f" -o "$out.s"
    gcc -O2 -g -std=gnu11 -Wall -Wextra -Wshadow -Isrc/include -Isrc/src -c "$f" -o "$out.o"
  done
  g++ -std=c++17 -O2 -Wall -Wextra -S src/cxx_threads.cpp -o artifacts/cxx_threads.s
  g++ -std=c++17 -O2 -c src/cxx_threads.cpp -o artifacts/cxx_threads.o
  # a deliberate warning, so that diagnostics are compared too
  printf 'int f(int x) { int unused; return x; }\n' >warn.c
  gcc -Wall -Wextra -c warn.c -o artifacts/warn.o
}

require_on_obmem gcc --version
run_twice gcc_job
finish
