#!/usr/bin/env bash
# preload_git.sh — git on obmem: the same repository, history and output as on glibc.
#
# The job builds a repository from generated files (fixed author, committer and dates, so
# commit ids are deterministic): init, add, 40 commits that edit, add, rename and delete files,
# a branch and a merge, then log --stat, diff, blame, grep, ls-tree, rev-list --objects,
# gc --aggressive (pack-objects with 2 threads and delta search), fsck --full, and a clone
# that is checked out again.  Compared byte for byte: every command's output, and as result
# files the archive of HEAD and the checked-out clone.  (Pack files themselves are not
# compared: the delta search with threads may pick different bases from run to run.)
# Usage: preload_git.sh   (env OBMEM_TEST_PRELOAD)
. "$(dirname "$0")/lib.sh"
setup_work

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=obmem GIT_AUTHOR_EMAIL=obmem@example.invalid
export GIT_COMMITTER_NAME=obmem GIT_COMMITTER_EMAIL=obmem@example.invalid

# Deterministic file contents: line i of file f in version v.
write_file() { # path seed nlines
  awk -v seed="$2" -v n="$3" 'BEGIN {
    x = seed
    for (i = 0; i < n; i++) {
      x = (x * 69069 + 1) % 4294967296
      printf "line %d of %s: value %d %s\n", i, seed, x, substr("abcdefghijklmnopqrstuvwxyz", x % 26 + 1, 5)
    }
  }' >"$1"
}

commit_at() { # n message
  GIT_AUTHOR_DATE="@$((1704067200 + $1 * 3600)) +0000" \
    GIT_COMMITTER_DATE="@$((1704067200 + $1 * 3600)) +0000" \
    git commit -q -m "$2"
}

git_job() {
  git init -q -b main repo
  cd repo
  git config pack.threads 2
  for d in 0 1 2 3 4 5 6 7 8 9; do
    mkdir -p "dir$d"
    for f in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19; do
      write_file "dir$d/file$f.txt" $((d * 100 + f)) $((20 + (d * 7 + f * 13) % 200))
    done
  done
  git add -A
  commit_at 0 "initial import"
  for c in $(seq 1 40); do
    d=$((c % 10))
    write_file "dir$d/file$((c % 20)).txt" $((c * 7919)) $((50 + c * 3))
    write_file "dir$(((c + 3) % 10))/new$c.txt" $((c * 31)) 30
    if [ $((c % 7)) = 0 ]; then git mv -k "dir$d/file$(((c + 1) % 20)).txt" "dir$d/moved$c.txt"; fi
    if [ $((c % 11)) = 0 ]; then git rm -q "dir$(((c + 5) % 10))/file$((c % 20)).txt"; fi
    git add -A
    commit_at "$c" "change $c: edit dir$d, add new$c"
    if [ "$c" = 20 ]; then git branch side; fi
  done
  git checkout -q side
  write_file dir0/side.txt 4242 100
  git add -A
  commit_at 41 "side work"
  git checkout -q main
  GIT_AUTHOR_DATE="@1704300000 +0000" GIT_COMMITTER_DATE="@1704300000 +0000" \
    git merge -q --no-edit side
  git log --stat --format='%H %an %ad %s' --date=iso
  git log --graph --oneline --all
  git diff --stat HEAD~30 HEAD
  git diff HEAD~10 HEAD
  git blame -s dir3/file3.txt
  git grep -n -e 'value 1[0-9]*7 ' -- 'dir[0-4]/*'
  git ls-tree -r HEAD
  git rev-list --objects --all | sort
  git gc -q --aggressive
  git fsck --full --strict 2>&1
  git count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
  git archive --format=tar HEAD >../artifacts/head.tar
  cd ..
  git clone -q repo clone
  git -C clone log -5 --format='%H %s'
  git -C clone status --short
  rm -rf clone/.git
  mv clone artifacts/clone
}

require_on_obmem git --version
run_twice git_job
finish
