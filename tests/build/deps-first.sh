#!/usr/bin/env bash
# tests/build/deps-first.sh - the first make on a fresh machine.  There,
# pkg-config and the libraries appear only when `make deps` has run, inside
# the same `make deps all` or `make run`.  This test builds with a PATH that
# lacks pkg-config and a stand-in for tools/deps.sh (DEPS_SCRIPT) that waits a
# second, then puts pkg-config on that PATH.  It checks that
#   - `make -j2 deps all` links (flags are read after deps, not while the
#     Makefile is parsed) and that no compiler ran before deps finished;
#   - `make -j2 run` builds after deps and starts the appliance (as root, in
#     a private network namespace);
#   - without deps, the missing pkg-config stops make with a clear error, not
#     with "undefined reference to ...".
# The real thing, a fresh Debian 12 root, takes minutes and stays out of the
# suite: ../shared/tools/fresh-machine 'make deps all && build/imfused --version'
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/integration/lib/proc.sh"
real_pc=$(command -v pkg-config) || { echo "skipped: needs pkg-config (make deps)" >&2; exit 77; }
work=$(mktemp -d /tmp/imfuse-deps-first.XXXXXX)
run_pid=
cleanup() {
    [ -n "$run_pid" ] && proc_stop "$run_pid"
    rm -rf "$work"
}
trap cleanup EXIT
fail=0
ok()  { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }
show() { tail -n 15 "$1" | sed 's/^/    | /'; }
show_head() { grep -v '^ *$' "$1" | head -n 8 | cut -c1-160 | sed 's/^/    | /'; }

# Every command of this machine's PATH, except pkg-config.
mkdir "$work/bin"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [[ "$d" == /* && -d "$d" ]] && cp -s -n "$d"/* "$work/bin/" 2>/dev/null
done
rm -f "$work/bin/pkg-config" "$work/bin/pkgconf" "$work/bin/"*-pkg-config
if PATH=$work/bin command -v pkg-config >/dev/null; then
    echo "could not hide pkg-config" >&2; exit 1
fi

cat >"$work/deps.sh" <<EOF
#!/bin/sh
echo "stand-in deps: start"
sleep 1
ln -sf "$real_pc" "$work/bin/pkg-config"
echo "stand-in deps: done"
EOF
chmod +x "$work/deps.sh"

# -O0: what is checked is the order of the steps, and it halves the compile time.
mk=(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL PATH="$work/bin"
    make -C "$top" --no-print-directory DEPS_SCRIPT="$work/deps.sh" OPT=-O0)

# $1: a make log.  No compiler line before the stand-in finished (make echoes
# each compile command as it starts it).
compiled_after_deps() {
    local done_at cc_at
    done_at=$(grep -n -m1 'stand-in deps: done' "$1" | cut -d: -f1)
    cc_at=$(grep -n -m1 -e ' -c -o ' "$1" | cut -d: -f1)
    if [ -z "$done_at" ] || [ -z "$cc_at" ]; then
        echo "    (the log lacks the stand-in's 'done' line or a compile command)"
        return 1
    fi
    [ "$cc_at" -gt "$done_at" ]
}

# 1. make -j2 deps all
log=$work/deps-all.log
if "${mk[@]}" -j2 BUILD="$work/b1" deps all >"$log" 2>&1; then
    ok "make -j2 deps all with pkg-config installed by deps"
else
    bad "make -j2 deps all with pkg-config installed by deps"; show "$log"
fi
if compiled_after_deps "$log"; then
    ok "make -j2 deps all: every compile after deps"
else
    bad "make -j2 deps all: a compile started before deps finished"; show_head "$log"
fi
if out=$("$work/b1/imfused" --version 2>&1); then
    ok "build/imfused --version: $out"
else
    bad "build/imfused --version: $out"
fi

# 2. make -j2 run, until the appliance answers on its control socket
rm -f "$work/bin/pkg-config"
if [ "$(id -u)" = 0 ]; then
    log=$work/run.log
    timeout 300 unshare -n sh -c 'ip link set lo up && exec "$@"' sh \
        "${mk[@]}" -j2 BUILD="$work/b2" RUN_DIR="$work/var" run >"$log" 2>&1 </dev/null &
    run_pid=$!
    up=0
    for ((i = 0; i < 2400; i++)); do
        if [ -S "$work/var/imfused.sock" ] &&
           "$work/b2/imfusectl" -s "$work/var/imfused.sock" stats >/dev/null 2>&1; then
            up=1; break
        fi
        kill -0 "$run_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ $up = 1 ]; then ok "make -j2 run: the appliance answers"; else bad "make -j2 run"; show "$log"; fi
    if compiled_after_deps "$log"; then
        ok "make -j2 run: every compile after deps"
    else
        bad "make -j2 run: a compile started before deps finished"; show_head "$log"
    fi
    proc_stop "$run_pid" || bad "make run did not stop"
    run_pid=
else
    echo "(make run not checked: it needs root for a private network namespace)"
fi

# 3. no deps, no pkg-config: a clear error before any compile
log=$work/nodeps.log
rm -f "$work/bin/pkg-config"
if "${mk[@]}" BUILD="$work/b3" all >"$log" 2>&1; then
    bad "make all without pkg-config succeeded"; show "$log"
elif grep -q 'make deps. installs pkg-config' "$log" && ! grep -q -e ' -c -o ' "$log"; then
    ok "make all without pkg-config: $(grep -m1 "make deps. installs" "$log")"
else
    bad "make all without pkg-config: no clear error"; show "$log"
fi

exit $fail
