#!/usr/bin/env bash
# stats_report.sh — the statistics reports (OBMEM_STATS at exit, OBMEM_STATS_SIGNAL,
# OBMEM_STATS_FILE) reach the user where a printer on stdio's stderr, run by atexit, does not
# (issue 3, item 4).
#
# With stats_report.c (see its modes), each case checks the report's header line, which names
# the pid and the event ("(pid N, at exit)", "(pid N, on signal 12)"), or the JSON's "pid" and
# "event" fields:
#   close-stderr   a gnulib-style atexit handler closed stdout and stderr and put /dev/null on
#                  fd 2: the text report and the JSON report (which must parse, with the
#                  program's live 100-byte blocks in it) still reach the original stderr file
#   closefrom      the program closed every fd above 2 and reused the numbers for its own file:
#                  the report goes to fd 2, and nothing into the program's file
#   signal         a report while the program runs, only the signal's (OBMEM_STATS unset);
#                  with SIGUSR2 (OBMEM_STATS_SIGNAL=1) and with another number (10)
#   signal-exit    JSON: the pending signal report, then the exit report, two documents
#   ignored        a signal the program inherited as ignored keeps its disposition: a warning,
#                  no report, the program runs on
#   _exit          no report (documented: exit handlers and destructors do not run)
#   pthread-exit   main ends with pthread_exit and OBMEM_STATS_SIGNAL's thread does not keep the
#                  process alive: exit status 0 and the exit report
#   fork           OBMEM_STATS_FILE=stats.%p, relative, and the parent changes directory before
#                  reporting: one file per process in the starting directory, each with its
#                  process's signal and exit reports; none on stderr
#   epipe          stderr is a pipe nobody reads: the program still exits with status 0
# and, on the preload only, real programs: GNU sort and ls (gnulib's close_stdout) report at
# exit in text and in JSON.
# Usage: stats_report.sh PATH/TO/stats_report
#   env OBMEM_TEST_PRELOAD set: every program runs with LD_PRELOAD=that library;
#   unset: the program was linked with libobmem.a (the sanitizer builds' variant);
#   env OBMEM_TEST_SANITIZE: the build's OBMEM_SANITIZE (thread skips the pthread-exit case).
. "$(dirname "$0")/lib.sh"
PROGRAM=${1:?usage: stats_report.sh PATH/TO/stats_report}
PRELOAD=${OBMEM_TEST_PRELOAD:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/obmem-$TEST_NAME.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
unset OBMEM_STATS OBMEM_STATS_SIGNAL OBMEM_STATS_FILE OBMEM_TEST_SIGNAL
export LC_ALL=C
command -v python3 >/dev/null || fail "python3 is needed to check the JSON reports"

# run NAME [VAR=value...] -- COMMAND ARGS...: NAME.out, NAME.err; the status in STATUS
run() {
  local name=$1
  shift
  local vars=()
  while [ "$1" != -- ]; do
    vars+=("$1")
    shift
  done
  shift
  [ -z "$PRELOAD" ] || vars+=("LD_PRELOAD=$PRELOAD")
  STATUS=0
  timeout 60 env "${vars[@]}" "$@" >"$name.out" 2>"$name.err" || STATUS=$?
}

expect_status() { # name expected
  [ "$STATUS" = "$2" ] || { cat "$1.err" >&2; fail "$1: exit status $STATUS, not $2"; }
}

pid_of() { # name: the pid the program printed
  sed -n 's/^pid \([0-9]*\)$/\1/p' "$1.out"
}

headers() { # file: what the report header lines say in parentheses: "(pid N, at exit)"
  sed -n 's/^obmem [0-9.]* allocator statistics \((pid .*)\)$/\1/p' "$1"
}

expect_headers() { # name file expected-header-lines (one per line)
  local got
  got=$(headers "$2")
  [ "$got" = "$3" ] || { cat "$2" >&2; fail "$1: report headers are [$got], not [$3]"; }
}

# json_events FILE: every JSON document in FILE, in order, as "pid event[:signal]"; fails
# unless the whole file is JSON documents; also checks the live 100-byte blocks (112-byte class)
json_events() {
  python3 - "$1" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
decoder, pos = json.JSONDecoder(), 0
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos == len(text):
        break
    doc, pos = decoder.raw_decode(text, pos)
    live = sum(c["blocks_in_use"] for c in doc["classes"] if c["block_size"] == 112)
    if live < 50:
        sys.exit("only %d blocks of 112 bytes in use" % live)
    event = doc["event"] + (":%d" % doc["signal"] if doc["event"] == "signal" else "")
    print(doc["pid"], event)
EOF
}

# ---- exit reports after the program closed stderr ----------------------------------------

run close_text OBMEM_STATS=1 -- "$PROGRAM" close-stderr
expect_status close_text 0
pid=$(pid_of close_text)
[ -n "$pid" ] || fail "close-stderr: no pid on stdout"
expect_headers close-stderr close_text.err "(pid $pid, at exit)"
grep -q "^# bytes in allocated blocks  *= *[0-9]" close_text.err ||
  fail "close-stderr: the text report is cut short"
pass "close-stderr: text report at exit after the program closed stderr"

run close_json OBMEM_STATS=2 -- "$PROGRAM" close-stderr
expect_status close_json 0
pid=$(pid_of close_json)
python3 -m json.tool close_json.err >/dev/null || fail "close-stderr: the JSON report does not parse"
[ "$(json_events close_json.err)" = "$pid exit" ] || fail "close-stderr: JSON: $(json_events close_json.err)"
pass "close-stderr: JSON report at exit parses (python3 -m json.tool), pid $pid"

run closefrom OBMEM_STATS=1 -- "$PROGRAM" closefrom
expect_status closefrom 0
expect_headers closefrom closefrom.err "(pid $(pid_of closefrom), at exit)"
[ -f victim ] && [ ! -s victim ] || fail "closefrom: the program's own file was written to"
pass "closefrom: the copy of stderr was closed and its number reused; report on fd 2 instead"

# ---- OBMEM_STATS_SIGNAL ------------------------------------------------------------------

run signal OBMEM_STATS_SIGNAL=1 -- "$PROGRAM" signal
expect_status signal 0
grep -q "^report while running$" signal.out || fail "signal: no report while the program ran"
expect_headers signal signal.err "(pid $(pid_of signal), on signal 12)"
pass "signal: SIGUSR2 prints a report while the program runs (none at exit without OBMEM_STATS)"

run signal10 OBMEM_STATS_SIGNAL=10 OBMEM_TEST_SIGNAL=10 -- "$PROGRAM" signal
expect_status signal10 0
grep -q "^report while running$" signal10.out || fail "signal 10: no report while the program ran"
expect_headers signal10 signal10.err "(pid $(pid_of signal10), on signal 10)"
pass "signal: OBMEM_STATS_SIGNAL=10 reports on signal 10"

run signal_json OBMEM_STATS=2 OBMEM_STATS_SIGNAL=1 -- "$PROGRAM" signal-exit
expect_status signal_json 0
pid=$(pid_of signal_json)
events=$(json_events signal_json.err) || fail "signal-exit: the JSON reports do not parse"
[ "$events" = "$pid signal:12
$pid exit" ] || fail "signal-exit: JSON documents [$events], not the signal's then the exit's"
pass "signal-exit: a request pending at exit is served first; two JSON documents"

# a signal the program was started with as ignored (nohup-style) is left alone
STATUS=0
(
  trap '' USR2
  run ignored OBMEM_STATS_SIGNAL=1 -- "$PROGRAM" signal-exit
  exit "$STATUS"
) || STATUS=$?
expect_status ignored 0
[ -z "$(headers ignored.err)" ] || fail "ignored: a report although the signal is ignored"
grep -q "^obmem: warning: OBMEM_STATS_SIGNAL: signal 12 already has a handler or is ignored" \
  ignored.err || { cat ignored.err >&2; fail "ignored: no warning"; }
pass "ignored: a signal that is not SIG_DFL keeps its disposition (warning, no handler)"

# ---- exits that run no exit handlers, or end in a thread ---------------------------------

run underscore_exit OBMEM_STATS=1 -- "$PROGRAM" _exit
expect_status underscore_exit 0
[ ! -s underscore_exit.err ] || { cat underscore_exit.err >&2; fail "_exit: unexpected output"; }
pass "_exit: no report, as documented (no exit handler or destructor runs)"

# (not under ThreadSanitizer: its background thread is a thread of the process that obmem
# cannot tell from one of the program's, so the process is not seen to be over)
if [ "${OBMEM_TEST_SANITIZE:-}" != thread ]; then
  run pthread_exit OBMEM_STATS=1 OBMEM_STATS_SIGNAL=1 -- "$PROGRAM" pthread-exit
  expect_status pthread_exit 0
  expect_headers pthread-exit pthread_exit.err "(pid $(pid_of pthread_exit), at exit)"
  pass "pthread-exit: the stats thread does not keep the process alive; report at exit"
fi

# (no purge thread in the child: ThreadSanitizer cannot start threads after a fork; no leak
# check in the child under AddressSanitizer: gcc 12's runtime does not hold its allocator's
# locks across fork, and a child forked while the parent's other thread (the statistics
# thread, starting) was inside that allocator waited forever in LeakSanitizer's exit check
# for a lock held by no thread of its own: 12 of 300 runs on a loaded machine, none of 300
# without the check)
mkdir start
(
  cd start
  run ../fork OBMEM_STATS=1 OBMEM_STATS_SIGNAL=1 OBMEM_STATS_FILE=stats.%p OBMEM_PURGE_THREAD=0 \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" -- "$PROGRAM" fork
  exit "$STATUS"
) || STATUS=$?
expect_status fork 0
read -r _ parent _ child <fork.out || fail "fork: no pids on stdout"
[ -z "$(headers fork.err)" ] || { cat fork.err >&2; fail "fork: a report on stderr"; }
[ "$(cd start && ls)" = "$(printf 'stats.%s\nstats.%s' "$parent" "$child" | sort)" ] ||
  fail "fork: files $(cd start && echo *), not stats.$parent and stats.$child"
for p in "$parent" "$child"; do
  expect_headers "fork ($p)" "start/stats.$p" "(pid $p, on signal 12)
(pid $p, at exit)"
done
pass "fork: OBMEM_STATS_FILE=stats.%p, one file per process, signal and exit reports in each"

run epipe OBMEM_STATS=1 -- "$PROGRAM" epipe
expect_status epipe 0
grep -q "^status 0$" epipe.out || fail "epipe: the child ended with $(cat epipe.out), not status 0"
pass "epipe: a report into a pipe nobody reads does not kill the program with SIGPIPE"

# ---- real programs (on the preload) --------------------------------------------------------

if [ -n "$PRELOAD" ]; then
  seq 5000 -1 1 >numbers.txt
  for program in sort ls; do
    args=(numbers.txt)
    [ "$program" = ls ] && args=(-l /)
    run "$program" OBMEM_STATS=1 -- "$program" "${args[@]}"
    expect_status "$program" 0
    [ "$(headers "$program.err" | grep -c "(pid [0-9]*, at exit)$")" = 1 ] ||
      { cat "$program.err" >&2; fail "$program: not one text report at exit"; }
    run "${program}_json" OBMEM_STATS=2 -- "$program" "${args[@]}"
    expect_status "${program}_json" 0
    python3 -m json.tool "${program}_json.err" >/dev/null ||
      fail "$program: the JSON report does not parse"
    pass "$program (gnulib's close_stdout): text and JSON reports at exit"
  done
  [ "$(head -1 sort.out)" = 1 ] || fail "sort: wrong output"
fi
finish
