#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages that building and testing obmem need, when
# they are missing.  Run by `make` (every target) and .ci/run; a no-op on a ready machine.
# Extra arguments are more packages to install (tests/preload/deps.sh passes those that the
# real-program tests lack).
set -euo pipefail
need=("$@")
command -v cmake >/dev/null || need+=(cmake)
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3 python3-dev)
# the CPython module (python/) builds against the headers of the python3 on PATH (Debian's
# python3 has them in python3-dev; a pyenv build has its own)
if command -v python3 >/dev/null &&
   ! python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
     2>/dev/null; then
  need+=(python3-dev)
fi
# `obmem report` names functions and file:line with elfutils' libdw (tools/CMakeLists.txt);
# the tracer finds libunwind.so.8 at run time when it is there (no build dependency)
[ -e /usr/include/elfutils/libdwfl.h ] || need+=(libdw-dev)
# capture blocks are zstd-compressed with libzstd.so.1, found at run time; zstd.h gives its
# functions' types (src/capture/zstd.c; without it captures are written uncompressed)
[ -e /usr/include/zstd.h ] || need+=(libzstd-dev)
# sanitizer runtimes ship with gcc's libasan/libtsan/libubsan packages
for lib in libasan.so libtsan.so libubsan.so; do
  if ! ls /usr/lib/gcc/x86_64-linux-gnu/*/$lib >/dev/null 2>&1 &&
     ! ls /usr/lib/x86_64-linux-gnu/$lib* >/dev/null 2>&1; then
    need+=(gcc)
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "obmem: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 2
  fi
  echo "obmem: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
