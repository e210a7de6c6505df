#!/usr/bin/env bash
# tools/demo.sh (make demo) - a local prosody with two demo users, an echo
# bot as bob, and the appliance in the foreground with a user "me".  Prints
# the commands to try the whole flow with build/imfuse.  Ctrl-C stops it all.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export IMFUSE_TEST_SERVER_ADDR=127.0.0.1     # the demo stays on loopback, whatever the tests use
. tests/integration/lib/prosody.sh

demo=$top/demo
xmpp_port=15222
rm -rf "$demo"
mkdir -p "$demo"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    prosody_stop "$demo/prosody" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

prosody_set_roster "$demo/prosody" alice demo.test '["bob@demo.test"] = {subscription="both"; groups={Friends=true}; name="Bob"};'
prosody_set_roster "$demo/prosody" bob demo.test '["alice@demo.test"] = {subscription="both"; groups={}; name="Alice"};'
prosody_start "$demo/prosody" $xmpp_port demo.test
prosody_adduser "$demo/prosody" alice demo.test alice-pass
prosody_adduser "$demo/prosody" bob demo.test bob-pass
ca=$(prosody_cafile "$demo/prosody")

/usr/bin/python3 tests/integration/lib/xmpp_peer.py bob@demo.test bob-pass 127.0.0.1 $xmpp_port "$ca" --echo \
    >"$demo/bob.log" 2>&1 </dev/null &
pids+=($!)

build/imfused --data "$demo/var" --listen 127.0.0.1:7700 --control "$demo/var/imfused.sock" \
    --ca-file "$ca" 2>"$demo/imfused.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$demo/var/imfused.sock" ] && break; sleep 0.1; done
echo me-pass | build/imfusectl -s "$demo/var/imfused.sock" user add me >/dev/null

cat <<TXT

imfuse demo is running: prosody on 127.0.0.1:$xmpp_port (alice@demo.test, bob@demo.test),
bob is an echo bot, the appliance listens on 127.0.0.1:7700 with a user "me" (password me-pass).
Logs: demo/imfused.log, demo/bob.log.  In another terminal, from $top:

  export IMFUSE_PASSWORD=me-pass
  IMFUSE_LINK_PASSWORD=alice-pass build/imfuse -u me link xmpp alice@demo.test 127.0.0.1:$xmpp_port --wait 15
  build/imfuse -u me contacts
  build/imfuse -u me merge Bob 1:bob@demo.test
  build/imfuse -u me send Bob "hello bob"
  build/imfuse -u me listen --count 1
  build/imfusectl -s demo/var/imfused.sock accounts me

Ctrl-C here stops everything.
TXT
wait "${pids[1]}"
