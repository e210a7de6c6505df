#!/usr/bin/env bash
# tests/integration/xmpp/jabberd2.sh - the XMPP adapter (xmpp_ops, via xmpp_probe)
# against a real jabberd2 (Debian bookworm's 2.7.0: router + sm + c2s, SQLite
# storage, SASL by GNU SASL), with a real XMPP client (slixmpp) on the other
# side: probe.sh's checks against a third server implementation.
#
#  - STARTTLS required (nothing but <starttls/> before it), the certificate
#    verified against the test certs; a TLS name it does not match is refused.
#  - SASL: the server offers SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS), PLAIN
#    and DIGEST-MD5; the adapter must pick SCRAM-SHA-256 (never -PLUS), then,
#    with the server restarted offering less, SCRAM-SHA-1 and PLAIN inside
#    TLS (each checked in c2s's log).  A wrong password is auth_failed.
#  - bind (jabberd2 offers no session feature), roster get as the contacts
#    list, a roster push (another session of the same user adds a contact),
#    presence of the contact, messages both ways with XML escaping and UTF-8,
#    a message stored offline and delivered at the next login (once).
#  - Keepalive: c2s sends a whitespace keepalive after 1 s idle; the probe
#    stays online through them.
#  - XEP-0198: jabberd2 2.7 advertises only the pre-standard
#    "http://www.xmpp.org/extensions/xep-0198.html#ns" <ack/> (checked in its
#    features), not urn:xmpp:sm:3: the adapter must not enable it (it would
#    then wait for an <a/> that never comes before reporting SENT).
#
# jabberd2 2.7 discards whatever it reads together with a TLS close_notify,
# so stanzas a client sends right before closing TLS without first waiting
# for the server's </stream:stream> (RFC 6120 4.4) may be lost: the probe
# does exactly that, so every check keeps it connected until its last stanza
# has had an effect.
#
# Needs root (private network namespace via unshare -n), jabberd2, openssl,
# /usr/bin/python3 with slixmpp.  Exits 77 with a reason when those are
# missing.  BUILD and XMPP_PROBE as in probe.sh.
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
. "$top/tests/integration/lib/testenv.sh"
testenv_enter "$0" "$@"
testenv_need jabberd2-c2s openssl
testenv_need_py slixmpp python3-slixmpp
cd "$top" || exit 1
. "$top/tests/integration/lib/jabberd2.sh"
. "$top/tests/integration/lib/xmpp_probe.sh"
probe_init jabberd2

port=15422
c2slog=$srv/logs/c2s.log
t_start=$SECONDS
# Lines c2s logged since the mark (log_mark): the SASL mechanism of each login.
log_mark() { mark=$(stat -c %s "$c2slog" 2>/dev/null || echo 0); }
log_since() { tail -c +$((mark + 1)) "$c2slog"; }
# Restart the server offering the SASL mechanisms $1 (users and rosters stay).
restart_with() {
    jabberd2_stop "$srv" || exit 1
    JABBERD2_SASL=$1 JABBERD2_KEEPALIVE=1 jabberd2_start "$srv" "$port" a.test b.test || exit 1
}

all_mechs="scram-sha-256 scram-sha-256-plus scram-sha-1 scram-sha-1-plus plain digest-md5"
JABBERD2_SASL=$all_mechs JABBERD2_KEEPALIVE=1 jabberd2_start "$srv" "$port" a.test b.test || exit 1
echo "jabberd2 up after $((SECONDS - t_start)) s"
# alice@a.test and bob@b.test, each on the other's roster (bob as "Bob" in
# group Friends); dump@a.test only reads the stream features.
jabberd2_adduser "$srv" alice a.test 'alice-pw' || exit 1
jabberd2_adduser "$srv" bob b.test 'bob-pw' || exit 1
jabberd2_adduser "$srv" dump a.test 'dump-pw' || exit 1
jabberd2_add_rosteritem "$srv" alice a.test bob@b.test Bob Friends both || exit 1
jabberd2_add_rosteritem "$srv" bob b.test alice@a.test Alice '' both || exit 1
ca=$(jabberd2_cafile "$srv") || exit 1

cat > "$work/features.py" <<'PY'
# What the server offers, read with a plain socket: the features before TLS,
# after STARTTLS (certificate verified), after a PLAIN login of dump@a.test;
# then idle until the first bytes arrive (10 s at most): a keepalive is whitespace.
import re, socket, ssl, sys, time, base64
addr, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
HDR = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
       b"xmlns:stream='http://etherx.jabber.org/streams' to='a.test' version='1.0'>")

def until(sock, pat, secs=10):
    buf, end = b"", time.monotonic() + secs
    while not re.search(pat, buf):
        sock.settimeout(max(0.1, end - time.monotonic()))
        d = sock.recv(65536)
        if not d:
            sys.exit("closed after: %r" % buf)
        buf += d
    return buf.decode()

s = socket.create_connection((addr, port))
s.sendall(HDR)
print("PRE-TLS", until(s, rb"</stream:features>").split("<stream:features", 1)[1])
s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
until(s, rb"<proceed")
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="a.test")
t.sendall(HDR)
f = until(t, rb"</stream:features>")
print("MECHS", " ".join(re.findall(r"<mechanism>([^<]*)</mechanism>", f)))
t.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
          + base64.b64encode(b"\0dump\0dump-pw") + b"</auth>")
until(t, rb"<success")
t.sendall(HDR)
print("POST-AUTH", until(t, rb"</stream:features>").split("?>", 1)[1])
t.settimeout(0.2)
end, ws = time.monotonic() + 10, b""
while time.monotonic() < end and not ws:
    try:
        ws += t.recv(4096)
    except (socket.timeout, ssl.SSLWantReadError):
        pass
print("IDLE-BYTES %d non-space %d" % (len(ws), len(ws.strip())))
PY

peer() { xmpp_user "$1" "$port" "$ca" "${@:2}"; }
echo "users and rosters ready after $((SECONDS - t_start)) s"

probe_args "$port" "$ca"

# 0. What jabberd2 offers (for the log, and the facts the checks below rely
#    on): only STARTTLS (required) before TLS; the configured mechanisms
#    after it; bind without session, and the pre-standard XEP-0198 <ack/>
#    after SASL; whitespace keepalives on an idle stream.
timeout 30 /usr/bin/python3 "$work/features.py" "$IMFUSE_TEST_SERVER_ADDR" "$port" "$ca" > "$work/f.out" 2>&1
rc=$?
cat "$work/f.out"
[ $rc = 0 ] && grep -q "^PRE-TLS .*<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required" "$work/f.out" \
    && ! grep -q '^PRE-TLS .*<mechanisms' "$work/f.out" \
    && grep -q '^MECHS .*SCRAM-SHA-256-PLUS' "$work/f.out" && grep -q '^MECHS .*PLAIN' "$work/f.out" \
    && grep -q "^POST-AUTH .*<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" "$work/f.out" \
    && grep -q '^POST-AUTH .*xep-0198.html#ns' "$work/f.out" && ! grep -q '^POST-AUTH .*urn:xmpp:sm:' "$work/f.out" \
    && grep -q '^IDLE-BYTES [1-9][0-9]* non-space 0$' "$work/f.out"
check "jabberd2 features: starttls required, mechanisms, bind, legacy ack, keepalives" $?

# 1. STARTTLS + the strongest SCRAM offered (SCRAM-SHA-256, not -PLUS) to
#    ONLINE; the roster arrives as the contacts list.
log_mark
"${P[@]}" --login alice@a.test --password alice-pw --exit-after-online > "$work/p1.out" 2>&1
rc=$?
cat "$work/p1.out"
[ $rc = 0 ] && grep -q '^STARTTLS' "$work/p1.out" && grep -q '^TLS ok' "$work/p1.out" \
    && grep -q '^STATE online' "$work/p1.out" && grep -q '^CONTACTS 1$' "$work/p1.out" \
    && grep -q '^CONTACT bob@b.test unknown Bob$' "$work/p1.out" \
    && log_since | grep -q 'SCRAM-SHA-256 authentication succeeded: alice@a.test .* TLS' \
    && ! log_since | grep -q -- '-PLUS'
check "starttls + scram-sha-256 (not -plus) login, contacts list bob" $?

# 2. A message from the probe reaches bob's real client: escaping, UTF-8.
#    The probe stays until bob's answer (see the close_notify note above).
peer recv bob@b.test/py bob-pw 'got it' > "$work/bob1.out" 2>"$work/bob1.err" &
bobpid=$!; pids+=("$bobpid")
wait_for "$work/bob1.out" READY 15 || { echo "bob did not log in"; cat "$work/bob1.err"; }
"${P[@]}" --login alice@a.test --password alice-pw --send-to bob@b.test \
    --send-body 'hi bob <&> "quoted" ☺' --wait-message > "$work/p2.out" 2>&1
rc=$?
cat "$work/p2.out"
wait "$bobpid"
cat "$work/bob1.out"
[ $rc = 0 ] && grep -q '^SENT 1' "$work/p2.out" && grep -qxF 'GOT alice@a.test hi bob <&> "quoted" ☺' "$work/bob1.out" \
    && grep -qxF 'MESSAGE bob@b.test py got it' "$work/p2.out"
check "message from the probe received by bob (slixmpp)" $?

# 3. Online: a roster push (alice's second session adds carol), bob's
#    presence, then a message from bob; meanwhile c2s sends keepalives.
"${P[@]}" --login alice@a.test --password alice-pw --wait-message --timeout 60 > "$work/p3.out" 2>&1 &
ppid=$!; pids+=("$ppid")
wait_for "$work/p3.out" '^STATE online' 15
peer roster alice@a.test/py2 alice-pw carol@a.test Carol > "$work/alice2.out" 2>"$work/alice2.err"
cat "$work/alice2.out"
wait_for "$work/p3.out" '^CONTACT carol@a.test' 10
sleep 3                                     # idle: c2s sends a keepalive after 1 s
peer send bob@b.test/py bob-pw alice@a.test 'hello alice & co <b> ☺ é' > "$work/bob2.out" 2>"$work/bob2.err"
wait "$ppid"
rc=$?
cat "$work/p3.out"
grep -q '^ROSTER-SET result' "$work/alice2.out" && grep -q '^CONTACTS 2$' "$work/p3.out" \
    && grep -q '^CONTACT carol@a.test unknown Carol$' "$work/p3.out" \
    && grep -q '^CONTACT bob@b.test .* Bob$' "$work/p3.out"
check "roster push from another session gives a new contacts list" $?
grep -q '^PRESENCE bob@b.test available$' "$work/p3.out"
check "presence of bob (slixmpp) reported" $?
[ $rc = 0 ] && grep -qxF 'MESSAGE bob@b.test py hello alice & co <b> ☺ é' "$work/p3.out" \
    && ! grep -q '^STATE error' "$work/p3.out"
check "message from bob (slixmpp) received by the probe, online through keepalives" $?

# 4. A message to alice while she is offline is stored and delivered at her
#    next login, once (the login after that gets nothing).
peer send bob@b.test/py bob-pw alice@a.test 'while you were out' > "$work/bob3.out" 2>"$work/bob3.err"
"${P[@]}" --login alice@a.test --password alice-pw --wait-message > "$work/p4.out" 2>&1
rc=$?
cat "$work/p4.out"
"${P[@]}" --login alice@a.test --password alice-pw --wait-message --timeout 6 > "$work/p4b.out" 2>&1
rc2=$?
[ $rc = 0 ] && grep -qxF 'MESSAGE bob@b.test py while you were out' "$work/p4.out" \
    && [ $rc2 = 5 ] && grep -q '^STATE online' "$work/p4b.out" && ! grep -q '^MESSAGE' "$work/p4b.out"
check "offline message delivered at the next login, once" $?

# 5. A wrong password: auth_failed.
probe_check_auth_failed "$work/p5.out" "wrong password gives auth_failed (every mechanism offered)"

# 6. A TLS name that the certificates do not match is refused.
probe_check_tls_name "$work/p6.out" wrong.test "certificate name mismatch refused"

# 7. Offering SCRAM-SHA-1 (and -PLUS), PLAIN, DIGEST-MD5: SCRAM-SHA-1.
restart_with "scram-sha-1 scram-sha-1-plus plain digest-md5"
log_mark
"${P[@]}" --login alice@a.test --password alice-pw --exit-after-online > "$work/p7.out" 2>&1
rc=$?
cat "$work/p7.out"
[ $rc = 0 ] && grep -q '^CONTACTS 2$' "$work/p7.out" \
    && log_since | grep -q 'SCRAM-SHA-1 authentication succeeded: alice@a.test .* TLS' \
    && ! log_since | grep -q -- '-PLUS'
check "scram-sha-1 (not -plus) login when no scram-sha-256 is offered" $?
probe_check_auth_failed "$work/p7b.out" "wrong password gives auth_failed (scram-sha-1, plain offered)"

# 8. Offering only PLAIN and DIGEST-MD5: PLAIN, inside TLS.
restart_with "plain digest-md5"
log_mark
"${P[@]}" --login alice@a.test --password alice-pw --exit-after-online > "$work/p8.out" 2>&1
rc=$?
cat "$work/p8.out"
[ $rc = 0 ] && grep -q '^TLS ok' "$work/p8.out" && grep -q '^CONTACTS 2$' "$work/p8.out" \
    && log_since | grep -q 'PLAIN authentication succeeded: alice@a.test .* TLS'
check "plain login inside tls when no scram is offered" $?
probe_check_auth_failed "$work/p8b.out" "wrong password gives auth_failed (plain, digest-md5 offered)"

echo "checks done after $((SECONDS - t_start)) s"
if [ $fail != 0 ]; then
    for f in c2s sm router; do echo "--- jabberd2 $f log (tail)"; tail -n 30 "$srv/logs/$f.log"; done
    exit 1
fi
echo "all xmpp probe checks against jabberd2 passed"
exit 0
