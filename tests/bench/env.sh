# tests/bench/env.sh - the servers of a benchmark, for tests/bench/run.sh
# (`make bench`) and its smoke test tests/bench/smoke.sh.
# Source it from bash inside a private network namespace (unshare -n, lo up):
#
#   benv_start WORK USERS [bitlbee]   prosody (STARTTLS required; SCRAM and PLAIN
#                                     allowed: imfuse logs in with SCRAM, BitlBee
#                                     only has PLAIN; XEP-0198 on; only warnings
#                                     logged), XMPP accounts imf<i>, bee<i>,
#                                     dir<i> (i = 1..USERS) and peer@a.test, each
#                                     user with the peer in its roster; imfused
#                                     ($BENV_BUILD, default the release build; the
#                                     bench creates its users); and BitlBee 3.6 if
#                                     asked.  Sets BENV_* below.
#   benv_stop                         stop every process started, by PID
#
#   BENV_CA          PEM of the XMPP server's certificate (CN a.test, SAN
#                    DNS:a.test and IP:127.0.0.1: imfuse checks the domain,
#                    BitlBee the server address it was given)
#   BENV_XMPP        127.0.0.1:5222 (BitlBee only accepts ports 5220-5229)
#   BENV_XMPP_PID    prosody's PID
#   BENV_IMFUSE      imfused's client listener, BENV_CTL its control socket,
#                    BENV_IMFUSED_PID its PID
#   BENV_IRC         BitlBee's IRC address, BENV_BITLBEE_PID its PID
#   BENV_PASSWORD    the password of every account
#
# Functions return non-zero with a message on stderr; they never exit the caller.

benv_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$benv_top/tests/integration/lib/prosody.sh"

BENV_XMPP=127.0.0.1:5222
BENV_IMFUSE=127.0.0.1:7700
BENV_IRC=127.0.0.1:6667
BENV_PASSWORD=bench-pw
BENV_BUILD=${BENV_BUILD:-$benv_top/build}
benv_work=
benv_imfused_pid=
benv_bitlbee_pid=

benv_log() { echo "env.sh: $*" >&2; }

benv__wait_port() {   # PORT PID NAME LOG
    local deadline=$((SECONDS + 10))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if ! kill -0 "$2" 2>/dev/null; then
            benv_log "$3 exited during start-up:"; tail -n 20 "$4" >&2; return 1
        fi
        [ $SECONDS -ge $deadline ] && { benv_log "$3 did not listen on port $1 within 10 s"; return 1; }
        sleep 0.05
    done
}

benv_start() {
    local w=$1 users=$2 with_bitlbee=${3:-} i p roster=
    benv_work=$w
    mkdir -p "$w/prosody/certs" "$w/imfused" "$w/bitlbee/users" || return 1
    w=$(cd "$w" && pwd); benv_work=$w

    # The certificate, with the IP as a name too (prosody.sh keeps a cert it finds).
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=a.test \
        -addext subjectAltName=DNS:a.test,IP:127.0.0.1 \
        -keyout "$w/prosody/certs/a.test.key" -out "$w/prosody/certs/a.test.crt" >/dev/null 2>&1 \
        || { benv_log "openssl failed"; return 1; }
    for ((i = 1; i <= users; i++)); do
        for p in imf bee dir; do
            prosody_set_roster "$w/prosody" "$p$i" a.test \
                '["peer@a.test"] = { subscription = "both"; name = "Peer"; groups = {} };' || return 1
            roster+="[\"$p$i@a.test\"] = { subscription = \"both\"; name = \"$p$i\"; groups = {} }; "
        done
    done
    prosody_set_roster "$w/prosody" peer a.test "$roster" || return 1
    PROSODY_LOG_LEVEL=warn prosody_start "$w/prosody" 5222 a.test || return 1
    BENV_XMPP_PID=$(cat "$w/prosody/prosody.bgpid")
    BENV_CA=$w/prosody/certs/a.test.crt
    # prosodyctl takes ~0.4 s per call: four at a time.
    local pids=() n=0
    for name in peer $(for ((i = 1; i <= users; i++)); do echo "imf$i bee$i dir$i"; done); do
        prosody_adduser "$w/prosody" "$name" a.test "$BENV_PASSWORD" & pids+=($!)
        if [ ${#pids[@]} -ge 4 ]; then
            for p in "${pids[@]}"; do wait "$p" || return 1; done
            pids=()
        fi
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done

    "$BENV_BUILD/imfused" --data "$w/imfused/data" --listen "$BENV_IMFUSE" \
        --control "$w/imfused/ctl.sock" --ca-file "$BENV_CA" --log-level warn \
        > "$w/imfused/imfused.log" 2>&1 &
    benv_imfused_pid=$!
    BENV_IMFUSED_PID=$benv_imfused_pid
    BENV_CTL=$w/imfused/ctl.sock
    benv__wait_port 7700 "$benv_imfused_pid" imfused "$w/imfused/imfused.log" || return 1

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
        benv__wait_port 6667 "$benv_bitlbee_pid" bitlbee "$w/bitlbee/bitlbee.log" || return 1
    fi
    return 0
}

benv_stop() {
    local rc=0
    if [ -n "$benv_bitlbee_pid" ]; then proc_stop "$benv_bitlbee_pid" || rc=1; benv_bitlbee_pid=; fi
    if [ -n "$benv_imfused_pid" ]; then proc_stop "$benv_imfused_pid" || rc=1; benv_imfused_pid=; fi
    if [ -n "$benv_work" ]; then prosody_stop "$benv_work/prosody" || rc=1; fi
    return $rc
}
