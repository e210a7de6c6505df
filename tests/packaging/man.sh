#!/usr/bin/env bash
# The man pages (docs/man/): clean under mandoc's linter and man-db's groff
# warnings, and true to the binaries: every option of imfused --help is in
# imfused(8) and, as a key, in imfused.conf(5); every command of imfusectl
# and imfuse --help is in its page; and no page names an option the binary
# does not have.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 2
bin=${IMFUSE_BUILD:-build/asan}
for t in mandoc man; do
    command -v $t >/dev/null || { echo "skipped: $t missing (make deps)" >&2; exit 77; }
done
fails=0
ok()   { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
# the text of a page as a reader sees it, without bold/underline overstrikes
text() { mandoc -T ascii -O width=300 "$1" | sed 's/.\x08//g'; }

pages=(docs/man/imfused.8 docs/man/imfusectl.8 docs/man/imfuse.1 docs/man/imfused.conf.5)
for p in "${pages[@]}"; do
    [ -f "$p" ] || { fail "$p exists"; continue; }
    out=$(mandoc -T lint -W warning "$p" 2>&1)
    [ -z "$out" ] && ok "mandoc -T lint: $p" || fail "mandoc -T lint: $p: $out"
    out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$p" 2>&1 >/dev/null)
    [ -z "$out" ] && ok "man --warnings: $p" || fail "man --warnings: $p: $out"
done

# Every option a page's OPTIONS section lists is one the binary accepts:
# "BINARY OPTION VALUE --help" prints the help (exit 0) only when OPTION is
# known, else it exits 64.  A value always follows (word, number or size),
# so that no option can swallow the --help and start the daemon; run in a
# scratch directory under a timeout all the same.
scratch=$(mktemp -d /tmp/imfuse-man.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
no_such_options() {  # BINARY PAGE
    local o v known
    for o in $(text "$2" | sed -n '/^OPTIONS/,/^[A-Z]/p' | grep -E '^ {7}-' |
               grep -oE -- '--?[a-zA-Z][a-z-]*' | sort -u); do
        known=0
        for v in x 1 1G; do
            (cd "$scratch" && timeout 10 "$top/$bin/$1" "$o" "$v" --help) >/dev/null 2>&1 </dev/null &&
                { known=1; break; }
        done
        [ $known = 1 ] || fail "$2 lists $o, which $1 does not accept"
    done
}

# imfused: options <-> imfused(8), keys -> imfused.conf(5)
opts=$("$bin/imfused" --help | sed -n 's/^ *--\([a-z-]*\).*/\1/p')
[ -n "$opts" ] || fail "imfused --help lists options"
page=$(text docs/man/imfused.8)
conf=$(text docs/man/imfused.conf.5)
for o in $opts; do
    grep -q -- "--$o\b" <<<"$page" || fail "imfused(8) documents --$o"
    case $o in config|help|version) continue ;; esac
    grep -Eq "^ +$o = " <<<"$conf" || fail "imfused.conf(5) documents the key $o"
done
no_such_options imfused docs/man/imfused.8
for k in $(sed -n 's/^ \{7\}\([a-z][a-z-]*\) = .*/\1/p' <<<"$conf" | sort -u); do
    grep -qx -- "$k" <<<"$opts" || fail "imfused.conf(5) names the key $k, which imfused does not read"
done
ok "imfused(8) and imfused.conf(5) match imfused --help ($(wc -w <<<"$opts") options)"

# imfusectl and imfuse: commands in --help <-> their pages
check_cmds() {  # BINARY PAGE
    local prog=$1 pg=$2 cmds t c n=0
    cmds=$("$bin/$prog" --help | sed -n '/^commands:/,/^[A-Z]/s/^  \([a-z][a-z-]*\( [a-z]*\)\?\).*/\1/p')
    t=$(text "$pg")
    while read -r c; do
        [ -z "$c" ] && continue
        n=$((n + 1))
        # "user add NAME": the sub-command only when it is a lower-case word
        grep -Eq "^ {7}$c( |\$)" <<<"$t" || fail "$pg documents the command \"$c\""
    done <<<"$(sed 's/ [A-Z].*//' <<<"$cmds")"
    [ $n -gt 3 ] && ok "$pg has the $n commands of $prog --help" || fail "$prog --help lists commands ($n)"
    no_such_options "$prog" "$pg"
}
check_cmds imfusectl docs/man/imfusectl.8
check_cmds imfuse docs/man/imfuse.1

echo "$fails checks failed"
[ $fails -eq 0 ]
