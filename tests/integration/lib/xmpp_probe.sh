# tests/integration/lib/xmpp_probe.sh - what the drivers of xmpp_probe (the
# XMPP adapter alone, tests/integration/xmpp/xmpp_probe.c) against a real
# server share: xmpp/probe.sh (prosody, ejabberd) and xmpp/jabberd2.sh.
# Source it inside the test's namespace (after testenv_enter), from the top of
# the checkout, with the server's library (prosody.sh, ...) sourced too.
#
#   probe_init SERVER        build the probe (make BUILD=$BUILD ..., BUILD defaults
#                            to build/asan; XMPP_PROBE=path uses another binary);
#                            make the work directory $work, with $srv=$work/SERVER
#                            for the server; at exit stop the PIDs in the array
#                            pids, then SERVER_stop $srv, then remove $work
#   probe_args PORT CA       set the array P: the probe under testenv_wrap (it
#                            stands in for the appliance), at PORT of the server
#                            address, STARTTLS, CA trusted, 20 s timeout
#   xmpp_user MODE PORT CA JID PW [ARGS]   lib/xmpp_user.py at the server address
#                            (a real XMPP user for one task), 30 s at most
#   probe_check_auth_failed OUT NAME   the probe with a wrong password for alice@a.test
#                            must stop at auth_failed (exit 3, not-authorized);
#                            its output goes to OUT and is printed; check NAME
#   probe_check_tls_name OUT TLS_NAME NAME   alice@a.test's login checking the
#                            certificate against TLS_NAME, which it does not match,
#                            must fail in TLS (exit 4) and never get online; check NAME
#   check NAME RC            print "ok   NAME" when RC is 0, else "FAIL NAME" and set fail=1
#   wait_for FILE PATTERN SECONDS   wait until grep finds PATTERN in FILE

probe_init() {
    probe__server=$1
    BUILD=${BUILD:-build/asan}
    probe=${XMPP_PROBE:-$BUILD/tests/integration/xmpp/xmpp_probe}
    if [ -z "${XMPP_PROBE:-}" ]; then
        make -s BUILD="$BUILD" SAN="${SAN:--fsanitize=address,undefined}" OPT="${OPT:--O1}" "$probe" >&2 \
            || { echo "cannot build $probe" >&2; exit 1; }
    fi
    work=$(mktemp -d "/tmp/imfuse-xmpp-$probe__server.XXXXXX") || exit 1
    srv=$work/$probe__server
    pids=()
    fail=0
    trap probe__cleanup EXIT
}

probe__cleanup() {
    local rc=$? p
    for p in "${pids[@]}"; do proc_stop "$p"; done
    "${probe__server}_stop" "$srv" || rc=1
    rm -rf "$work"
    exit $rc
}

probe_args() {
    P=("${testenv_wrap[@]}" "$probe" --host "$IMFUSE_TEST_SERVER_ADDR" --port "$1" --tls starttls
       --ca-file "$2" --timeout 20)
}

xmpp_user() {
    local mode=$1 port=$2 ca=$3 cmd
    shift 3
    cmd=(timeout 30 /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/xmpp_user.py"
         "$mode" "$IMFUSE_TEST_SERVER_ADDR" "$port" "$ca" "$@")
    # Started with &, this runs in a subshell: exec, so that $! is timeout's
    # PID and stopping it stops the user.
    if [ "$BASHPID" != "$$" ]; then exec "${cmd[@]}"; fi
    "${cmd[@]}"
}

probe_check_auth_failed() {
    local rc
    "${P[@]}" --login alice@a.test --password wrong --exit-after-online > "$1" 2>&1
    rc=$?
    cat "$1"
    [ $rc = 3 ] && grep -q '^STATE auth_failed not-authorized' "$1"
    check "$2" $?
}

probe_check_tls_name() {
    local rc
    "${P[@]}" --login alice@a.test --password alice-pw --tls-name "$2" --exit-after-online > "$1" 2>&1
    rc=$?
    cat "$1"
    [ $rc = 4 ] && grep -q '^TLS error' "$1" && ! grep -q '^STATE online' "$1"
    check "$3" $?
}

check() {
    if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi
}

wait_for() {
    local deadline=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}
