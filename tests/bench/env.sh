# tests/bench/env.sh - the servers of a benchmark, for tests/bench/run.sh
# (`make bench`) and its smoke test tests/bench/smoke.sh.
# Source it from bash inside a private network namespace (unshare -n, lo up):
#
#   benv_start WORK USERS [bitlbee]   prosody (STARTTLS required; SCRAM and PLAIN
#                                     allowed: imfuse logs in with SCRAM, BitlBee
#                                     only has PLAIN; XEP-0198 on; only warnings
#                                     logged), XMPP accounts P<i> for each
#                                     prefix P of BENV_PREFIXES (i = 1..USERS)
#                                     and peer@a.test, each user with the peer
#                                     in its roster and in the peer's; imfused
#                                     ($BENV_BUILD, default the release build; the
#                                     bench creates its users); and BitlBee 3.6 if
#                                     asked.  Sets BENV_* below.
#   benv_links                        before benv_start: the links of the
#                                     dataplane backends' comparison (below);
#                                     prosody then listens at 198.18.0.1
#   benv_backends_start WORK          three more imfused on the same prosody, one
#                                     per dataplane backend, each across a link
#                                     of its own; sets BENV_BACKENDS
#   benv_tmpfs_start                  after benv_start: one more imfused (kernel
#                                     sockets) whose store is on a tmpfs
#                                     (/dev/shm): its commits cost no disk I/O,
#                                     so beside the durable one it shows what
#                                     durability costs.  Not durable: for that
#                                     comparison only.  Its users' XMPP accounts
#                                     are ims<i> (BENV_PREFIXES must hold ims).
#                                     Sets BENV_TMPFS_IMFUSE, BENV_TMPFS_CTL,
#                                     BENV_TMPFS_PID
#   benv_stop                         stop every process started, by PID
#
# The backends' links (benv_links), all software, all in this namespace's
# kernel on the server side:
#   kernel         imfused --io kernel in a network namespace of its own, at
#                  198.18.2.2 on a veth whose peer (198.18.2.1) is here
#   net_tap        imfused --io dpdk on a TAP, lwIP at 198.18.0.2; the TAP's
#                  kernel side, 198.18.0.1, is prosody's address
#   net_af_packet  imfused --io dpdk on net_af_packet in a network namespace of
#                  its own, lwIP at 198.18.1.2 on a veth whose peer
#                  (198.18.1.1, Tx checksum offload off for lwIP) is here
# BENV_BACKENDS: one line per backend, "NAME PREFIX HOST:PORT CONTROL PID"
# (PREFIX: its users' XMPP accounts, which BENV_PREFIXES must hold: imk, imt, ima).
#
#   BENV_CA          PEM of the XMPP server's certificate (CN a.test, SAN
#                    DNS:a.test and IP:BENV_SERVER_ADDR: imfuse checks the
#                    domain, BitlBee the server address it was given)
#   BENV_XMPP        BENV_SERVER_ADDR:5222 (BitlBee only accepts ports 5220-5229)
#   BENV_XMPP_PID    prosody's PID
#   BENV_IMFUSE      imfused's client listener, BENV_CTL its control socket,
#                    BENV_IMFUSED_PID its PID
#   BENV_IRC         BitlBee's IRC address, BENV_BITLBEE_PID its PID
#   BENV_PASSWORD    the password of every account
# Set before benv_start (defaults in brackets):
#   BENV_SERVER_ADDR where prosody listens [127.0.0.1]; imfused and BitlBee
#                    stay on 127.0.0.1
#   BENV_PREFIXES    the prefixes of the XMPP accounts [imf bee dir]: imfuse's,
#                    BitlBee's and the direct client's (run.sh adds one per
#                    dataplane backend)
#
# Functions return non-zero with a message on stderr; they never exit the caller.

benv_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$benv_top/tests/integration/lib/prosody.sh"
. "$benv_top/tests/integration/dpdk/lib.sh"

BENV_SERVER_ADDR=${BENV_SERVER_ADDR:-127.0.0.1}
BENV_PREFIXES=${BENV_PREFIXES:-imf bee dir}
BENV_IMFUSE=127.0.0.1:7700
BENV_IRC=127.0.0.1:6667
BENV_PASSWORD=bench-pw
BENV_BUILD=${BENV_BUILD:-$benv_top/build}
benv_work=
benv_imfused_pid=
benv_bitlbee_pid=
benv_holders=()
benv_backend_pids=()
BENV_BACKENDS=
benv_tmpfs_pid=
benv_tmpfs_dir=
BENV_TMPFS_IMFUSE=127.0.0.1:7701

benv_log() { echo "env.sh: $*" >&2; }

benv__wait_port() {   # HOST:PORT PID NAME LOG
    local deadline=$((SECONDS + 20))
    while ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; do
        if ! kill -0 "$2" 2>/dev/null; then
            benv_log "$3 exited during start-up:"; tail -n 20 "$4" >&2; return 1
        fi
        [ $SECONDS -ge $deadline ] && { benv_log "$3 did not listen on $1 within 20 s"; return 1; }
        sleep 0.05
    done
}

# benv__imfused DATA LISTEN DIR NAME: an imfused on kernel sockets with its
# control socket and log in DIR; its PID in benv__pid (set even when it fails
# to start, for benv_stop).  Every bench client comes from one address: the
# per-address limits are raised as for a carrier's NAT (docs/OPERATIONS.md, Limits).
benv__imfused() {
    local data=$1 listen=$2 dir=$3 name=$4
    "$BENV_BUILD/imfused" --data "$data" --listen "$listen" \
        --control "$dir/ctl.sock" --ca-file "$BENV_CA" --log-level warn \
        --auth-pending-per-address 1000 --login-failures-per-address 1000 \
        > "$dir/imfused.log" 2>&1 &
    benv__pid=$!
    benv__wait_port "$listen" "$benv__pid" "$name" "$dir/imfused.log"
}

benv_start() {
    local w=$1 users=$2 with_bitlbee=${3:-} i p roster=
    benv_work=$w
    mkdir -p "$w/prosody/certs" "$w/imfused" "$w/bitlbee/users" || return 1
    w=$(cd "$w" && pwd); benv_work=$w

    # The certificate, with the IP as a name too (prosody.sh keeps a cert it finds).
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=a.test \
        -addext subjectAltName=DNS:a.test,IP:$BENV_SERVER_ADDR \
        -keyout "$w/prosody/certs/a.test.key" -out "$w/prosody/certs/a.test.crt" >/dev/null 2>&1 \
        || { benv_log "openssl failed"; return 1; }
    for ((i = 1; i <= users; i++)); do
        for p in $BENV_PREFIXES; do
            prosody_set_roster "$w/prosody" "$p$i" a.test \
                '["peer@a.test"] = { subscription = "both"; name = "Peer"; groups = {} };' || return 1
            roster+="[\"$p$i@a.test\"] = { subscription = \"both\"; name = \"$p$i\"; groups = {} }; "
        done
    done
    prosody_set_roster "$w/prosody" peer a.test "$roster" || return 1
    BENV_XMPP=$BENV_SERVER_ADDR:5222
    IMFUSE_TEST_SERVER_ADDR=$BENV_SERVER_ADDR PROSODY_LOG_LEVEL=warn prosody_start "$w/prosody" 5222 a.test \
        || return 1
    BENV_XMPP_PID=$(cat "$w/prosody/prosody.bgpid")
    BENV_CA=$w/prosody/certs/a.test.crt
    # prosodyctl takes ~0.4 s per call: four at a time.
    local pids=() n=0
    for name in peer $(for ((i = 1; i <= users; i++)); do for p in $BENV_PREFIXES; do echo "$p$i"; done; done); do
        prosody_adduser "$w/prosody" "$name" a.test "$BENV_PASSWORD" & pids+=($!)
        if [ ${#pids[@]} -ge 4 ]; then
            for p in "${pids[@]}"; do wait "$p" || return 1; done
            pids=()
        fi
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done

    benv__imfused "$w/imfused/data" "$BENV_IMFUSE" "$w/imfused" imfused
    local rc=$?
    benv_imfused_pid=$benv__pid
    BENV_IMFUSED_PID=$benv__pid
    BENV_CTL=$w/imfused/ctl.sock
    [ $rc = 0 ] || return 1

    if [ -n "$with_bitlbee" ]; then
        command -v bitlbee >/dev/null || { benv_log "bitlbee is not installed"; return 1; }
        cat > "$w/bitlbee/bitlbee.conf" <<EOF
[settings]
RunMode = Daemon
DaemonInterface = 127.0.0.1
DaemonPort = 6667
AuthMode = Open
Protocols = jabber
PingInterval = 0
CAfile = $BENV_CA
[defaults]
EOF
        bitlbee -D -n -c "$w/bitlbee/bitlbee.conf" -d "$w/bitlbee/users" -P "$w/bitlbee/bitlbee.pid" \
            > "$w/bitlbee/bitlbee.log" 2>&1 &
        benv_bitlbee_pid=$!
        BENV_BITLBEE_PID=$benv_bitlbee_pid
        benv__wait_port "$BENV_IRC" "$benv_bitlbee_pid" bitlbee "$w/bitlbee/bitlbee.log" || return 1
    fi
    return 0
}

benv_links() {
    local k a
    testenv_appliance_ns || return 1
    k=$testenv_holder; benv_holders+=("$k")
    testenv_appliance_ns || return 1
    a=$testenv_holder; benv_holders+=("$a")
    dpdk_tap imf0 198.18.0.1/24 || return 1
    ip link add imk-srv type veth peer name imk-app netns "$k" \
        && ip addr add 198.18.2.1/24 dev imk-srv && ip link set imk-srv up \
        && nsenter --net="/proc/$k/ns/net" sh -c "ip link set lo up && ip addr add 198.18.2.2/24 dev imk-app \
               && ip link set imk-app up && ip route add default via 198.18.2.1" \
        || { benv_log "cannot make the kernel backend's veth"; return 1; }
    ip link add ima-srv type veth peer name ima-app netns "$a" \
        && ip addr add 198.18.1.1/24 dev ima-srv && ip link set ima-srv up \
        && ethtool -K ima-srv tx off >/dev/null \
        && nsenter --net="/proc/$a/ns/net" sh -c "ip link set lo up && ip link set ima-app up" \
        || { benv_log "cannot make the net_af_packet backend's veth"; return 1; }
    BENV_SERVER_ADDR=198.18.0.1
    benv_nsk=/proc/$k/ns/net benv_nsa=/proc/$a/ns/net
}

# benv__backend NAME PREFIX ADDR WRAP [IMFUSED ARGS...]: one imfused, listening on ADDR:7700.
benv__backend() {
    local name=$1 prefix=$2 addr=$3 wrap=$4 d=$benv_work/backend-$1 pid
    shift 4
    mkdir -p "$d" || return 1
    $wrap "$BENV_BUILD/imfused" --data "$d/data" --listen "$addr:7700" --control "$d/ctl.sock" \
        --ca-file "$BENV_CA" --log-level warn "$@" > "$d/imfused.log" 2>&1 &
    pid=$!
    benv_backend_pids+=("$pid")
    benv__wait_port "$addr:7700" "$pid" "imfused ($name)" "$d/imfused.log" || return 1
    BENV_BACKENDS+="$name $prefix $addr:7700 $d/ctl.sock $pid"$'\n'
}

benv_backends_start() {
    local eal="--no-pci --no-huge -m 512 --no-shconf --no-telemetry"
    benv__backend kernel imk 198.18.2.2 "nsenter --net=$benv_nsk" || return 1
    benv__backend net_tap imt 198.18.0.2 "" --io dpdk --dpdk-port net_tap0 \
        --dpdk-eal "$eal --file-prefix imf-tap --vdev=net_tap0,iface=imf0" \
        --dpdk-address 198.18.0.2/24 --dpdk-gateway 198.18.0.1 || return 1
    benv__backend net_af_packet ima 198.18.1.2 "nsenter --net=$benv_nsa" --io dpdk --dpdk-port net_af_packet0 \
        --dpdk-eal "$eal --file-prefix imf-afp --vdev=net_af_packet0,iface=ima-app" \
        --dpdk-address 198.18.1.2/24 --dpdk-gateway 198.18.1.1 || return 1
}

benv_tmpfs_start() {
    local w=$benv_work/imfused-tmpfs
    mkdir -p "$w" || return 1
    [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || { benv_log "/dev/shm is not a tmpfs"; return 1; }
    benv_tmpfs_dir=$(mktemp -d /dev/shm/imfuse-bench.XXXXXX) || return 1
    benv__imfused "$benv_tmpfs_dir/data" "$BENV_TMPFS_IMFUSE" "$w" "imfused (store on tmpfs)"
    local rc=$?
    benv_tmpfs_pid=$benv__pid
    BENV_TMPFS_PID=$benv__pid
    BENV_TMPFS_CTL=$w/ctl.sock
    return $rc
}

benv_stop() {
    local rc=0 p
    if [ -n "$benv_tmpfs_pid" ]; then proc_stop "$benv_tmpfs_pid" || rc=1; benv_tmpfs_pid=; fi
    if [ -n "$benv_tmpfs_dir" ]; then rm -rf "$benv_tmpfs_dir"; benv_tmpfs_dir=; fi
    for p in "${benv_backend_pids[@]}"; do proc_stop "$p" || rc=1; done
    benv_backend_pids=()
    if [ -n "$benv_bitlbee_pid" ]; then proc_stop "$benv_bitlbee_pid" || rc=1; benv_bitlbee_pid=; fi
    if [ -n "$benv_imfused_pid" ]; then proc_stop "$benv_imfused_pid" || rc=1; benv_imfused_pid=; fi
    if [ -n "$benv_work" ]; then prosody_stop "$benv_work/prosody" || rc=1; fi
    for p in "${benv_holders[@]}"; do proc_stop "$p" || rc=1; done
    benv_holders=()
    return $rc
}
