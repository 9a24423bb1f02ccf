#!/usr/bin/env bash
# bad_free.sh — a pointer obmem never handed out, given to free or realloc through the
# preload, is reported clearly and the process aborts.
#
# For each case of bad_free.c (free of a stack address, of a static address, of an address
# inside a live block, realloc of a stack address) the program runs under
# LD_PRELOAD=libobmem-preload.so and must: die of SIGABRT (not run on, not crash otherwise);
# print on stderr one "obmem: ..." report naming the program (its file name), its pid, the
# function (free/realloc) and the very address the program printed; and never print that the
# pointer was accepted.  Without the preload glibc would also abort on most of these, but with
# its own message: the report's text is what proves obmem caught them.
# Usage: bad_free.sh PATH/TO/bad_free   (env OBMEM_TEST_PRELOAD)
. "$(dirname "$0")/lib.sh"
setup_work
BAD_FREE=${1:?usage: bad_free.sh PATH/TO/bad_free}
PROGRAM=$(basename "$BAD_FREE")
ulimit -c 0 # no core files from the aborts

check_case() { # mode function expected-kind
  local mode=$1 function=$2 kind=$3 status=0
  env LD_PRELOAD="$PRELOAD" "$BAD_FREE" "$mode" >"$WORK/$mode.out" 2>"$WORK/$mode.err" ||
    status=$?
  local address
  address=$(sed -n 's/^bad pointer: \(0x[0-9a-f]*\)$/\1/p' "$WORK/$mode.out")
  [ -n "$address" ] || fail "$mode: the program did not print its bad pointer"
  if grep -q "accepted\|returned" "$WORK/$mode.out"; then
    fail "$mode: $function($address) returned to the program instead of aborting"
  fi
  [ "$status" = 134 ] || { cat "$WORK/$mode.err" >&2; fail "$mode: exit status $status, not 134 (SIGABRT)"; }
  local report
  report=$(grep "^obmem: " "$WORK/$mode.err" || true)
  [ "$(printf '%s\n' "$report" | grep -c .)" = 1 ] ||
    { cat "$WORK/$mode.err" >&2; fail "$mode: not exactly one obmem report on stderr"; }
  case $report in
  *"$kind in $PROGRAM (pid "[0-9]*") at $address: $function($address)"*) ;;
  *) fail "$mode: the report does not name the kind, program, pid and address: $report" ;;
  esac
  pass "$mode: $report"
}

check_case stack free "pointer not allocated by obmem"
check_case static free "pointer not allocated by obmem"
check_case interior free "pointer is not the start of a block"
check_case realloc realloc "pointer not allocated by obmem"
finish
