#!/usr/bin/env bash
# preload_cmake.sh — cmake on obmem: configuring a small project gives the same results.
#
# The job writes a small C/C++ project whose CMakeLists.txt detects both compilers, checks
# headers, functions, symbols, type sizes and a compile-and-run test, finds Threads, generates
# a config header with configure_file and a file with file(GENERATE), then configures it
# (cmake and every compiler it starts run on obmem in the preloaded run), builds it with
# `cmake --build` and runs the program.  Compared byte for byte: cmake's messages (timings
# removed), the generated config.h, the cache entries of the checks, and the program's output.
# Usage: preload_cmake.sh   (env OBMEM_TEST_PRELOAD)
. "$(dirname "$0")/lib.sh"
setup_work

# cmake 3.25 prints no timings; later versions add "(0.3s)" to "Configuring done".
normalize() {
  sed -E 's/ \([0-9.]+s\)$//'
}

cmake_job() {
  mkdir -p project
  cat >project/CMakeLists.txt <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(probe VERSION 1.2.3 LANGUAGES C CXX)
include(CheckIncludeFile)
include(CheckFunctionExists)
include(CheckSymbolExists)
include(CheckTypeSize)
include(CheckCSourceRuns)
include(CheckCXXSourceCompiles)
find_package(Threads REQUIRED)
foreach(h stdlib.h malloc.h sys/mman.h pthread.h no_such_header.h)
  string(MAKE_C_IDENTIFIER "HAVE_${h}" var)
  string(TOUPPER "${var}" var)
  check_include_file(${h} ${var})
endforeach()
check_function_exists(posix_memalign HAVE_POSIX_MEMALIGN)
check_function_exists(no_such_function HAVE_NO_SUCH_FUNCTION)
check_symbol_exists(malloc_usable_size malloc.h HAVE_MALLOC_USABLE_SIZE)
check_type_size("void *" SIZEOF_VOID_P)
check_type_size("long double" SIZEOF_LONG_DOUBLE)
check_c_source_runs("#include <stdlib.h>
int main(void) { void *p = malloc(100); return p == 0; }" MALLOC_WORKS)
check_cxx_source_compiles("#include <vector>
int main() { std::vector<int> v(10); return (int)v.size() - 10; }" CXX_VECTOR_WORKS)
configure_file(config.h.in config.h)
file(GENERATE OUTPUT generated.txt CONTENT "target probe built from $<TARGET_PROPERTY:probe,SOURCES>\n")
add_executable(probe main.c)
target_include_directories(probe PRIVATE ${CMAKE_CURRENT_BINARY_DIR})
target_link_libraries(probe PRIVATE Threads::Threads)
message(STATUS "probe ${PROJECT_VERSION}: void* is ${SIZEOF_VOID_P} bytes, long double ${SIZEOF_LONG_DOUBLE}")
EOF
  cat >project/config.h.in <<'EOF'
#define PROBE_VERSION "@PROJECT_VERSION@"
#cmakedefine HAVE_STDLIB_H 1
#cmakedefine HAVE_MALLOC_H 1
#cmakedefine HAVE_SYS_MMAN_H 1
#cmakedefine HAVE_PTHREAD_H 1
#cmakedefine HAVE_NO_SUCH_HEADER_H 1
#cmakedefine HAVE_POSIX_MEMALIGN 1
#cmakedefine HAVE_NO_SUCH_FUNCTION 1
#cmakedefine HAVE_MALLOC_USABLE_SIZE 1
#cmakedefine MALLOC_WORKS 1
#cmakedefine CXX_VECTOR_WORKS 1
#define SIZEOF_VOID_P @SIZEOF_VOID_P@
EOF
  cat >project/main.c <<'EOF'
#include "config.h"
#include <stdio.h>
int main(void) {
  printf("probe %s, void* %d bytes, posix_memalign %d\n", PROBE_VERSION, SIZEOF_VOID_P,
         HAVE_POSIX_MEMALIGN);
  return 0;
}
EOF
  cmake -S project -B build -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release
  cp build/config.h build/generated.txt artifacts/
  grep -E '^(HAVE_|SIZEOF_|MALLOC_WORKS|CXX_VECTOR_WORKS|CMAKE_C_COMPILER:|CMAKE_CXX_COMPILER:)' \
    build/CMakeCache.txt | sort >artifacts/cache-entries.txt
  cmake --build build -- --no-print-directory >build.log
  ./build/probe
}

require_on_obmem cmake --version
run_twice cmake_job
finish
