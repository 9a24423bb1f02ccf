#!/usr/bin/env bash
# deps.sh — installs, with apt-get, what the real-program tests of tests/preload/ run, when it
# is missing: git, gcc and g++, cmake and make, perl, gawk, coreutils' sort, and a python3
# whose standard library includes CPython's regression tests (the `test` package).
#
# The python3 on PATH is used when it has the test package (on this project's machines a
# pyenv build, /root/.pyenv/versions/3.11.x, which ships it); otherwise Debian's
# /usr/bin/python3 gets it from the libpython3.X-testsuite package.  preload_python.sh finds
# the interpreter the same way (lib.sh: python_with_tests).
# ctest runs this once, as the fixture "preload_deps" that the real-program tests require.
# A no-op on a ready machine; prints what it installs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

need=()
for cmd in git gcc g++ cmake make perl gawk sort; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
pkgs=()
for cmd in "${need[@]}"; do
  case $cmd in
  sort) pkgs+=(coreutils) ;;
  *) pkgs+=("$cmd") ;;
  esac
done
if ! python_with_tests >/dev/null; then
  if [ ! -x /usr/bin/python3 ]; then
    pkgs+=(python3)
  fi
fi

# scripts/deps.sh installs (apt-get, as root) or names what is missing
apt_install() {
  bash "$here/../../scripts/deps.sh" "$@"
}

if [ ${#pkgs[@]} -gt 0 ]; then
  apt_install "${pkgs[@]}"
fi
if ! python_with_tests >/dev/null; then
  version=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  apt_install "libpython$version-testsuite"
fi
python=$(python_with_tests) || {
  echo "deps.sh: no python3 with CPython's test package, even after installing it" >&2
  exit 2
}
echo "deps.sh: ready (python with tests: $python)"
