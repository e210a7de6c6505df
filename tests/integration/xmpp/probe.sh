#!/usr/bin/env bash
# tests/integration/xmpp/probe.sh - the XMPP adapter (xmpp_ops, via xmpp_probe)
# against a real prosody 0.12, with a real XMPP client (slixmpp) on the other side.
#
# Needs root (private network namespace via unshare -n), prosody, openssl,
# /usr/bin/python3 with slixmpp.  Exits 77 with a reason when those are missing.
# Builds the probe with: make BUILD=$BUILD $BUILD/tests/integration/xmpp/xmpp_probe
# (BUILD defaults to build/asan); set XMPP_PROBE=path to use another binary.
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
self="$top/tests/integration/xmpp/probe.sh"

if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "skip: needs root for unshare -n" >&2; exit 77; }
    command -v prosody >/dev/null || { echo "skip: prosody not installed" >&2; exit 77; }
    command -v openssl >/dev/null || { echo "skip: openssl not installed" >&2; exit 77; }
    /usr/bin/python3 -c 'import slixmpp' 2>/dev/null || { echo "skip: python3-slixmpp missing" >&2; exit 77; }
    IMFUSE_IN_NETNS=1 exec unshare -n "$self" "$@"
fi

ip link set lo up || { echo "cannot bring lo up" >&2; exit 1; }
cd "$top" || exit 1

BUILD=${BUILD:-build/asan}
probe=${XMPP_PROBE:-$BUILD/tests/integration/xmpp/xmpp_probe}
if [ -z "${XMPP_PROBE:-}" ]; then
    make -s BUILD="$BUILD" SAN="${SAN:--fsanitize=address,undefined}" OPT="${OPT:--O1}" "$probe" >&2 \
        || { echo "cannot build $probe" >&2; exit 1; }
fi

. "$top/tests/integration/lib/prosody.sh"

work=$(mktemp -d /tmp/imfuse-xmpp-probe.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    prosody_stop "$work"
    rm -rf "$work"
}
trap cleanup EXIT

port=15222
fail=0
check() {   # check NAME CONDITION-EXIT-CODE
    if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi
}

prosody_set_roster "$work" alice a.test \
    '["bob@b.test"] = { subscription = "both"; name = "Bob"; groups = { Friends = true } };' || exit 1
prosody_set_roster "$work" bob b.test \
    '["alice@a.test"] = { subscription = "both"; name = "Alice"; groups = {} };' || exit 1
PROSODY_DISABLE_PLAIN=1 prosody_start "$work" "$port" a.test b.test || exit 1
prosody_adduser "$work" alice a.test 'alice-pw' || exit 1
prosody_adduser "$work" bob b.test 'bob-pw' || exit 1
ca=$(prosody_cafile "$work") || exit 1

cat > "$work/bob.py" <<'PY'
# bob: a real XMPP client.  recv: print the first chat message and quit.
# send TO BODY: send one message after login, then quit.
import asyncio, sys
import slixmpp

mode, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Bob(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__("bob@b.test/py", "bob-pw")
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)

    async def start(self, event):
        self.send_presence()
        await self.get_roster()
        print("READY", flush=True)
        if mode == "send":
            self.send_message(mto=sys.argv[4], mbody=sys.argv[5], mtype="chat")
            await asyncio.sleep(1)
            self.disconnect()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and mode == "recv":
            print("GOT %s %s" % (msg["from"].bare, msg["body"]), flush=True)
            self.disconnect()

b = Bob()
b.ca_certs = ca
b.connect(address=("127.0.0.1", port))
b.process(forever=False)
PY

wait_for() {   # wait_for FILE PATTERN SECONDS
    local deadline=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}

P=("$probe" --host 127.0.0.1 --port "$port" --tls starttls --ca-file "$ca" --timeout 20)

# 1. STARTTLS + SCRAM login to ONLINE; the contacts list has bob.
"${P[@]}" --login alice@a.test --password alice-pw --exit-after-online > "$work/p1.out" 2>&1
rc=$?
cat "$work/p1.out"
[ $rc = 0 ] && grep -q '^TLS ok' "$work/p1.out" && grep -q '^STATE online' "$work/p1.out" \
    && grep -q '^CONTACT bob@b.test .* Bob$' "$work/p1.out"
check "starttls + scram login, contacts list bob" $?

# 2. A message from the probe reaches bob's real client.
timeout 30 /usr/bin/python3 "$work/bob.py" recv "$port" "$ca" > "$work/bob1.out" 2>"$work/bob1.err" &
bobpid=$!; pids+=("$bobpid")
wait_for "$work/bob1.out" READY 15 || { echo "bob did not log in"; cat "$work/bob1.err"; }
"${P[@]}" --login alice@a.test --password alice-pw --send-to bob@b.test \
    --send-body 'hi bob <&> "quoted" ☺' > "$work/p2.out" 2>&1
rc=$?
cat "$work/p2.out"
wait "$bobpid"
cat "$work/bob1.out"
[ $rc = 0 ] && grep -q '^SENT 1' "$work/p2.out" && grep -qF 'GOT alice@a.test hi bob <&> "quoted" ☺' "$work/bob1.out"
check "message from the probe received by bob (slixmpp)" $?

# 3. A message from bob reaches the probe.
"${P[@]}" --login alice@a.test --password alice-pw --wait-message > "$work/p3.out" 2>&1 &
ppid=$!; pids+=("$ppid")
wait_for "$work/p3.out" '^STATE online' 15
timeout 30 /usr/bin/python3 "$work/bob.py" send "$port" "$ca" alice@a.test 'hello alice & co' \
    > "$work/bob2.out" 2>"$work/bob2.err"
wait "$ppid"
rc=$?
cat "$work/p3.out"
[ $rc = 0 ] && grep -qF 'MESSAGE bob@b.test py hello alice & co' "$work/p3.out"
check "message from bob (slixmpp) received by the probe" $?

# 4. A wrong password: auth_failed.
"${P[@]}" --login alice@a.test --password wrong --exit-after-online > "$work/p4.out" 2>&1
rc=$?
cat "$work/p4.out"
[ $rc = 3 ] && grep -q '^STATE auth_failed not-authorized' "$work/p4.out"
check "wrong password gives auth_failed" $?

# 5. A TLS name that the certificate does not match is refused.
"${P[@]}" --login alice@a.test --password alice-pw --tls-name b.test --exit-after-online > "$work/p5.out" 2>&1
rc=$?
cat "$work/p5.out"
[ $rc = 4 ] && grep -q '^TLS error' "$work/p5.out" && ! grep -q '^STATE online' "$work/p5.out"
check "certificate name mismatch refused" $?

if [ $fail != 0 ]; then
    echo "--- prosody log (tail)"; tail -n 40 "$work/prosody.log"
    exit 1
fi
echo "all xmpp probe checks passed"
exit 0
