#!/usr/bin/env bash
# preload_text.sh — Perl and GNU awk text jobs on obmem give the same output as on glibc.
#
# Input: about 9 MB of generated "log" text (fixed seed, made once before both runs).
# Perl: word frequencies in a hash of hundreds of thousands of keys, a hash of arrays per
# user, regex captures and substitutions, sprintf, sort by count, string building with join
# and repetition, split, and a JSON-like dump of a nested structure.  gawk: per-key sums and
# counts in associative arrays, asort and asorti, gensub, split, sprintf, a second pass that
# joins the input with a table built in the first.  Compared byte for byte: every report.
# Usage: preload_text.sh   (env OBMEM_TEST_PRELOAD)
. "$(dirname "$0")/lib.sh"
setup_work

gawk 'BEGIN {
  x = 777
  split("GET POST PUT DELETE PATCH", methods, " ")
  split("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda", words, " ")
  for (i = 0; i < 150000; i++) {
    x = (x * 69069 + 1) % 4294967296
    user = sprintf("user%05d", x % 20011)
    path = "/" words[1 + x % 11] "/" words[1 + int(x / 11) % 11] "/" (x % 5003)
    status = (x % 23 == 0) ? 500 : (x % 7 == 0) ? 404 : 200
    bytes = x % 100000
    printf "%08d %s %s %s %d %d %s%s\n", i, user, methods[1 + x % 5], path, status, bytes,
      words[1 + x % 11], (x % 3 ? " tag" (x % 101) : "")
  }
}' >"$WORK/log.txt"

perl_job() {
  perl -e '
    use strict; use warnings;
    my (%freq, %by_user, %status, @long);
    while (my $line = <STDIN>) {
      chomp $line;
      my ($n, $user, $method, $path, $status, $bytes, @rest) = split / /, $line;
      $freq{$_}++ for split m{/}, $path;
      $freq{$_}++ for @rest;
      push @{ $by_user{$user} }, "$method $path";
      $status{$status} += $bytes;
      (my $norm = $path) =~ s/(\d+)$/"<" . length($1) . ">"/e;
      $freq{"path:$norm"}++;
      push @long, $line if length($line) > 60 && @long < 20000;
    }
    my @top = (sort { $freq{$b} <=> $freq{$a} || $a cmp $b } keys %freq)[0 .. 49];
    printf "%-30s %d\n", $_, $freq{$_} for @top;
    printf "keys %d users %d\n", scalar(keys %freq), scalar(keys %by_user);
    for my $u ((sort keys %by_user)[0 .. 9]) {
      my @r = @{ $by_user{$u} };
      print "$u ", scalar(@r), " ", join("|", @r[0 .. ($#r < 2 ? $#r : 2)]), "\n";
    }
    print "$_ $status{$_}\n" for sort keys %status;
    my $big = join("", map { substr($_, 0, 10) x 3 } @long);
    printf "big %d %s\n", length($big), substr($big, 1000, 40);
    my %tree;
    for my $i (0 .. 20000) { $tree{ $i % 97 }{ $i % 89 }[ $i % 7 ] .= chr(65 + $i % 26); }
    my $dump = "{";
    for my $k (sort { $a <=> $b } keys %tree) {
      $dump .= "$k:{" . join(",", map { "$_:[" . join(",", map { $_ // "" } @{ $tree{$k}{$_} }) . "]" } sort { $a <=> $b } keys %{ $tree{$k} }) . "},";
    }
    $dump .= "}";
    printf "dump %d %s\n", length($dump), substr($dump, 0, 200);
  ' <"$WORK/log.txt"
}

awk_job() {
  gawk '
    { count[$2]++; bytes[$2] += $6; method[$3]++; split($4, parts, "/"); dir[parts[2]] += $6
      if ($5 != 200) errors[$5 " " parts[2]]++
      key = gensub(/[0-9]+$/, "N", "g", $4); shape[key]++ }
    END {
      n = asorti(count, users)
      for (i = 1; i <= 10; i++) printf "%s %d %d\n", users[i], count[users[i]], bytes[users[i]]
      printf "users %d\n", n
      m = asort(bytes, sorted)
      printf "median bytes per user %d, max %d\n", sorted[int(m / 2)], sorted[m]
      PROCINFO["sorted_in"] = "@ind_str_asc"
      for (k in method) print "method", k, method[k]
      for (k in dir) print "dir", k, dir[k]
      for (k in errors) print "error", k, errors[k]
      for (k in shape) s = s sprintf("%s=%d;", k, shape[k])
      printf "shapes %d %s\n", length(s), substr(s, 1, 300)
    }' "$WORK/log.txt"
  # a second pass joining each line with a table from the first
  gawk 'NR == FNR { total[$2] += $6; next }
        FNR % 997 == 0 { printf "%s %s %d %.3f\n", $1, $2, total[$2], $6 / (total[$2] + 1) }' \
    "$WORK/log.txt" "$WORK/log.txt"
}

text_job() {
  perl_job
  awk_job
}

require_on_obmem perl -e 'my %h = map { $_ => 1 } 1 .. 1000; print scalar(keys %h), "\n"'
require_on_obmem gawk 'BEGIN { for (i = 0; i < 1000; i++) a[i] = i; print length(a) }'
run_twice text_job
finish
