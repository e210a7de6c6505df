# tests/integration/lib/testenv.sh - where the integration tests run: the
# addresses, the private namespaces, and what every driver and server library
# shares.  Source it from bash (it sources proc.sh too):
#     . tests/integration/lib/testenv.sh
# The Python side is testenv.py; both take their defaults from testenv.conf.
#
# Addresses (environment; unset or empty means the default of testenv.conf,
# which keeps everything on 127.0.0.1).  The tests see two hosts: the kernel
# side (IM servers, their real user clients, the test's own imfuse clients)
# and the appliance (imfused, or xmpp_probe standing in for it).  By default
# both are loopback; link.sh puts them on two ends of a veth, and
# dpdk/run.sh runs the appliance as `imfused --io dpdk` on a TAP.
#   IMFUSE_TEST_SERVER_ADDR     the kernel side: every IM server listens here
#                               (prosody, ejabberd, jabberd2, ngircd, inspircd,
#                               atheme's link, kamailio), the linked accounts'
#                               "server" is here, and every test peer and client
#                               connects from here (the kernel picks it)
#   IMFUSE_TEST_APPLIANCE_ADDR  imfused's client listeners (plain and TLS), and
#                               the address its connections to IM servers come
#                               from (routing picks it; sip.py expects it in the
#                               Contact imfused registers)
#   IMFUSE_TEST_SERVER_NAME     a host name that resolves to the server address
#                               where imfused runs (spec.py links one account by
#                               name; imfused's controlplane resolves it);
#                               default localhost
#   IMFUSE_TEST_SOURCE_NET      a /16 of further client source addresses, all
#                               local on the kernel side and routed to the
#                               appliance (spec.py's per-address lockout checks
#                               bind to .0.9, .1.N, .2.1, .3.1, .4.1 of it);
#                               default 127.0.0.0/16
#   IMFUSE_TEST_APPLIANCE_WRAP  a command prefix, split on white space, for
#                               every appliance process a test starts (imfused,
#                               xmpp_probe), e.g. "nsenter --net=/proc/PID/ns/net";
#                               default none
#   IMFUSE_TEST_APPLIANCE_ARGS  further arguments, split on white space, after
#                               those a test gives every imfused it starts to
#                               serve (not its start-up refusal checks), e.g.
#                               "--config FILE" with io = dpdk and the dpdk-*
#                               keys (a value with spaces goes in FILE);
#                               default none
# tests/integration/link.sh runs any driver with the two sides in two network
# namespaces joined by a veth pair: servers at 198.18.0.1, imfused at 198.18.0.2;
# tests/integration/dpdk/run.sh runs any driver at the same addresses with
# imfused --io dpdk on net_tap, the servers on the TAP's kernel side.
#
# Functions:
#   testenv_enter [-m] "$0" "$@"   re-run the calling script as root in a private
#                                  network namespace (-m: and mount namespace) unless
#                                  it already runs in one (IMFUSE_IN_NETNS=1,
#                                  IMFUSE_IN_MNTNS=1); skips (exit 77) when not root.
#                                  Inside: lo up, no core files.
#   testenv_skip REASON            print "skipped: REASON", exit 77
#   testenv_each "$0" SCRIPT...    for a runner of drivers (link.sh, dpdk/run.sh): with
#                                  several SCRIPTs, run the runner on each in turn, print
#                                  a line per script (PASS or its status, its time) and
#                                  exit 0 when all passed, else 1; with one, return
#   testenv_appliance_ns           a second network namespace, for the appliance,
#                                  held open by a sleep whose PID it sets in
#                                  testenv_holder (stop it with proc_stop at exit);
#                                  testenv_appns is its /proc/PID/ns/net.  Non-zero
#                                  with a message when none could be made
#   testenv_need CMD...            skip unless every CMD is on PATH
#   testenv_need_py MODULE PACKAGE skip unless /usr/bin/python3 imports MODULE
#   testenv_wait_port NAME PORT PID SECONDS [LOG...]
#                                  wait until the server address accepts on PORT;
#                                  non-zero with a message (and the logs' tails) when
#                                  PID exits first or SECONDS pass
#   testenv_cert DIR NAME [--pem]  a self-signed certificate for NAME (CN and SAN
#                                  DNS:NAME, 2 days): DIR/NAME.key and DIR/NAME.crt,
#                                  with --pem also DIR/NAME.pem (both, 0600); kept
#                                  when it exists
#   testenv_cafile WORKDIR         bundle WORKDIR/certs/*.crt as WORKDIR/ca.pem and
#                                  print its path
# and the array testenv_wrap, IMFUSE_TEST_APPLIANCE_WRAP split into words.

. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

testenv__load() {
    local k v
    while IFS='=' read -r k v; do
        case $k in ''|'#'*) continue ;; esac
        [ -n "${!k:-}" ] || export "$k=$v"
    done < "$(dirname "${BASH_SOURCE[0]}")/testenv.conf"
}
testenv__load
read -r -a testenv_wrap <<<"$IMFUSE_TEST_APPLIANCE_WRAP"

testenv_skip() {
    echo "skipped: $*" >&2
    exit 77
}

testenv_enter() {
    local mnt=0 un=() envs=(IMFUSE_IN_NETNS=1)
    if [ "${1:-}" = -m ]; then mnt=1; shift; fi
    [ "${IMFUSE_IN_NETNS:-}" = 1 ] || un+=(-n)
    if [ $mnt = 1 ]; then
        envs+=(IMFUSE_IN_MNTNS=1)
        [ "${IMFUSE_IN_MNTNS:-}" = 1 ] || un+=(-m --propagation private)
    fi
    if [ ${#un[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || testenv_skip "needs root for private namespaces (unshare ${un[*]})"
        exec env "${envs[@]}" unshare "${un[@]}" "$@"
    fi
    ip link set lo up || { echo "cannot bring lo up" >&2; exit 1; }
    ulimit -c 0
}

testenv_each() {
    local self=$1 s start r rc=0 summary=()
    shift
    [ $# -gt 1 ] || return 0
    for s in "$@"; do
        start=$SECONDS
        "$self" "$s"
        r=$?
        summary+=("$(printf '%-6s %-45s %4ss' "$([ $r = 0 ] && echo PASS || echo "rc $r")" "$s" $((SECONDS - start)))")
        [ $r = 0 ] || rc=1
    done
    printf '%s\n' "${summary[@]}"
    exit $rc
}

testenv_appliance_ns() {
    local i
    unshare -n sleep 86400 &
    testenv_holder=$!
    testenv_appns=/proc/$testenv_holder/ns/net
    for ((i = 0; i < 100; i++)); do
        [ "$(readlink "$testenv_appns")" != "$(readlink /proc/self/ns/net)" ] && return 0
        sleep 0.02
    done
    echo "no network namespace for the appliance" >&2
    return 1
}

testenv_need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || testenv_skip "$c is not installed (make deps)"
    done
}

testenv_need_py() {
    /usr/bin/python3 -c "import $1" 2>/dev/null || testenv_skip "$2 is not installed (make deps)"
}

testenv_wait_port() {
    local name=$1 port=$2 pid=$3 secs=$4
    shift 4
    local deadline=$((SECONDS + secs))
    while ! (exec 3<>"/dev/tcp/$IMFUSE_TEST_SERVER_ADDR/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during start-up:" >&2
            [ $# -gt 0 ] && tail -n 20 "$@" >&2 2>/dev/null
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "$name did not listen on $IMFUSE_TEST_SERVER_ADDR:$port within $secs s" >&2
            [ $# -gt 0 ] && tail -n 20 "$@" >&2 2>/dev/null
            return 1
        fi
        sleep 0.05
    done
}

testenv_cert() {
    local d=$1 h=$2 pem=${3:-}
    [ -s "$d/$h.crt" ] && { [ -z "$pem" ] || [ -s "$d/$h.pem" ]; } && return 0
    mkdir -p "$d" || return 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$h" \
        -addext "subjectAltName=DNS:$h" -keyout "$d/$h.key" -out "$d/$h.crt" >/dev/null 2>&1 \
        || { echo "openssl failed for $h" >&2; return 1; }
    chmod 0600 "$d/$h.key" || return 1
    if [ -n "$pem" ]; then
        cat "$d/$h.crt" "$d/$h.key" > "$d/$h.pem" && chmod 0600 "$d/$h.pem" || return 1
    fi
}

testenv_cafile() {
    local w=$1
    cat "$w"/certs/*.crt > "$w/ca.pem" || return 1
    printf '%s\n' "$w/ca.pem"
}
