#!/usr/bin/env bash
# tests/integration/xmpp/probe.sh - the XMPP adapter (xmpp_ops, via xmpp_probe)
# against a real XMPP server, with a real XMPP client (slixmpp) on the other side.
# XMPP_SERVER picks the server: prosody (0.12, the default) or ejabberd (Debian
# bookworm's 23.01: tests/integration/xmpp/ejabberd.sh, which says what is
# checked there on top).
#
# Needs root (private network namespace via unshare -n), the server, openssl,
# /usr/bin/python3 with slixmpp; for ejabberd also setpriv and a user ejabberd
# (the node runs as that user).  Exits 77 with a reason when those are missing.
# Builds the probe with: make BUILD=$BUILD $BUILD/tests/integration/xmpp/xmpp_probe
# (BUILD defaults to build/asan); set XMPP_PROBE=path to use another binary.
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
server=${XMPP_SERVER:-prosody}
. "$top/tests/integration/lib/testenv.sh"
testenv_enter "$0" "$@"
case $server in
prosody)  testenv_need prosody ;;
ejabberd) testenv_need ejabberdctl setpriv
          id ejabberd >/dev/null 2>&1 || testenv_skip "no user ejabberd (apt-get install ejabberd)" ;;
*)        echo "XMPP_SERVER must be prosody or ejabberd, not $server" >&2; exit 2 ;;
esac
testenv_need openssl
testenv_need_py slixmpp python3-slixmpp
cd "$top" || exit 1
. "$top/tests/integration/lib/$server.sh"
. "$top/tests/integration/lib/xmpp_probe.sh"
probe_init "$server"
chmod 0711 "$work"              # ejabberd (user ejabberd) works in $srv
t_start=$SECONDS

# alice@a.test and bob@b.test, each on the other's roster (bob as "Bob" in
# group Friends), SCRAM only: PLAIN disabled (prosody), or never picked
# although offered, like SCRAM-SHA-1-PLUS (ejabberd, checked in its log).
case $server in
prosody)
    port=15222 srvlog=$srv/prosody.log bad_tls_name=b.test
    prosody_set_roster "$srv" alice a.test \
        '["bob@b.test"] = { subscription = "both"; name = "Bob"; groups = { Friends = true } };' || exit 1
    prosody_set_roster "$srv" bob b.test \
        '["alice@a.test"] = { subscription = "both"; name = "Alice"; groups = {} };' || exit 1
    PROSODY_DISABLE_PLAIN=1 prosody_start "$srv" "$port" a.test b.test || exit 1
    echo "prosody up after $((SECONDS - t_start)) s"
    prosody_adduser "$srv" alice a.test 'alice-pw' || exit 1
    prosody_adduser "$srv" bob b.test 'bob-pw' || exit 1
    ;;
ejabberd)
    # ejabberd picks the certificate by SNI: a name it has no certificate for
    # (with b.test it would present b.test's, which is then a correct match).
    port=15322 srvlog=$srv/logs/ejabberd.log bad_tls_name=wrong.test
    ejabberd_start "$srv" "$port" a.test b.test || exit 1
    echo "ejabberd up after $((SECONDS - t_start)) s"
    # Each ejabberdctl call starts an Erlang node (~0.7 s): run them in parallel.
    ejabberd_adduser "$srv" alice a.test 'alice-pw' & a1=$!
    ejabberd_adduser "$srv" bob b.test 'bob-pw' & a2=$!
    wait $a1 && wait $a2 || exit 1
    ejabberd_add_rosteritem "$srv" alice a.test bob@b.test Bob Friends both & a1=$!
    ejabberd_add_rosteritem "$srv" bob b.test alice@a.test Alice '' both & a2=$!
    wait $a1 && wait $a2 || exit 1
    ;;
esac
ca=$("${server}_cafile" "$srv") || exit 1
echo "users and rosters ready after $((SECONDS - t_start)) s"

probe_args "$port" "$ca"

# 1. STARTTLS (required by the server) + SCRAM login to ONLINE; the roster
#    arrives as the contacts list.
"${P[@]}" --login alice@a.test --password alice-pw --exit-after-online > "$work/p1.out" 2>&1
rc=$?
cat "$work/p1.out"
[ $rc = 0 ] && grep -q '^STARTTLS' "$work/p1.out" && grep -q '^TLS ok' "$work/p1.out" \
    && grep -q '^STATE online' "$work/p1.out" && grep -q '^CONTACTS 1$' "$work/p1.out" \
    && grep -q '^CONTACT bob@b.test .* Bob$' "$work/p1.out"
rc=$?
if [ $server = ejabberd ]; then
    [ $rc = 0 ] && wait_for "$srvlog" 'Accepted c2s SCRAM-SHA-1 authentication for alice@a.test' 3
    check "starttls + scram-sha-1 (not -plus) login, contacts list bob" $?
else
    check "starttls + scram login, contacts list bob" $rc
fi

# 1b. The same login with the key derivation handed to the glue (io->kdf, as
#     the relay's worker pool will take it): the adapter waits for kdf_done.
"${P[@]}" --login alice@a.test --password alice-pw --exit-after-online --kdf-async > "$work/p1b.out" 2>&1
rc=$?
cat "$work/p1b.out"
[ $rc = 0 ] && grep -q '^KDF sha[0-9]* [0-9][0-9]*$' "$work/p1b.out" && grep -q '^STATE online' "$work/p1b.out"
check "scram login with the key derived outside the adapter (io->kdf)" $?

# 2. A message from the probe reaches bob's real client.
xmpp_user recv "$port" "$ca" bob@b.test/py bob-pw > "$work/bob1.out" 2>"$work/bob1.err" &
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
xmpp_user send "$port" "$ca" bob@b.test/py bob-pw alice@a.test 'hello alice & co' \
    > "$work/bob2.out" 2>"$work/bob2.err"
wait "$ppid"
rc=$?
cat "$work/p3.out"
[ $rc = 0 ] && grep -qF 'MESSAGE bob@b.test py hello alice & co' "$work/p3.out"
check "message from bob (slixmpp) received by the probe" $?

# 3b. ejabberd: the next login gets no second copy of that message: the probe
#     committed it, and logout acknowledged it (XEP-0198 <a/> before the close;
#     without it ejabberd re-stores unacknowledged messages offline).
#     Meanwhile a roster change made on the server arrives as a new contacts list.
if [ $server = ejabberd ]; then
    "${P[@]}" --login alice@a.test --password alice-pw --wait-message --timeout 4 > "$work/p3b.out" 2>&1 &
    ppid=$!; pids+=("$ppid")
    wait_for "$work/p3b.out" '^STATE online' 15
    ejabberd_add_rosteritem "$srv" alice a.test carol@a.test Carol 'G1;G2' both
    wait "$ppid"
    rc=$?
    cat "$work/p3b.out"
    [ $rc = 5 ] && grep -q '^STATE online' "$work/p3b.out" && ! grep -q '^MESSAGE' "$work/p3b.out"
    check "a committed message is not delivered again at the next login" $?
    grep -q '^CONTACTS 2$' "$work/p3b.out" && grep -q '^CONTACT carol@a.test unknown Carol$' "$work/p3b.out"
    check "roster push from the server gives a new contacts list" $?
fi

# 4. A wrong password: auth_failed.
probe_check_auth_failed "$work/p4.out" "wrong password gives auth_failed"

# 4b. The same with the derivation handed off: the proof is still checked.
"${P[@]}" --login alice@a.test --password wrong --exit-after-online --kdf-async > "$work/p4b.out" 2>&1
rc=$?
cat "$work/p4b.out"
[ $rc = 3 ] && grep -q '^KDF ' "$work/p4b.out" && grep -q '^STATE auth_failed not-authorized' "$work/p4b.out"
check "wrong password gives auth_failed with the derivation handed off" $?

# 5. A TLS name that the certificate does not match is refused.
probe_check_tls_name "$work/p5.out" "$bad_tls_name" "certificate name mismatch refused"

echo "checks done after $((SECONDS - t_start)) s"
if [ $fail != 0 ]; then
    echo "--- $server log (tail)"; tail -n 40 "$srvlog"
    exit 1
fi
echo "all xmpp probe checks against $server passed"
exit 0
