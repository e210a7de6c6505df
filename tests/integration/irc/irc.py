"""imfuse over IRC against real ngircd (ISON path) and inspircd (MONITOR path).

Run by irc.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

For each server, through the real daemon (build/asan/imfused unless
IMFUSE_BUILD says otherwise) and bob's real IRC client (irc_peer.py):
  1. alice links an `irc` account (tls none) -> account online
  2. add_contact bob -> contacts event
  3. bob connects -> presence `available` (ngircd: ISON, inspircd: MONITOR)
  4. a message to bob arrives; a 1500-byte UTF-8 message arrives as several
     lines, intact when joined; "/me waves" arrives as a CTCP ACTION
  5. bob replies -> alice gets a `message` event (from "bob", network "irc")
  6. nick in use: a second account whose nick is taken -> online, with a
     detail naming the alternate nick
  7. a burst of IRC_BURST (default 60) messages, on both servers at once,
     with the servers' default flood protection: all arrive at bob in order,
     none lost, alice never disconnected (60 is six times inspircd's fakelag
     threshold and far past ngircd's penalty; the adapter paces 5 lines, then
     one a second, so each extra message costs the suite a second)
  8. bob quits -> presence `offline`
Also SASL PLAIN through inspircd + atheme-services (right password ->
online, wrong -> auth_failed), skipped with a note when atheme is missing.
IRC_ONLY=ngircd|inspircd|sasl runs one part; IRC_BURST sets the burst size.
"""
import os
import shutil
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (HERE as LIB, Daemon, JsonPeer, account_state, check, lib, log,  # noqa: E402
                     presence_event, run, stop_at_end)
from imclient import Client  # noqa: E402
from testenv import SERVER_ADDR, server  # noqa: E402

BURST = int(os.environ.get("IRC_BURST", "60"))
ONLY = os.environ.get("IRC_ONLY", "")          # "ngircd", "inspircd" or "sasl": one part only

NGIRCD_PORT = 16667
INSPIRCD_PORT = 16668
SASL_PORT = 16669           # inspircd linked to atheme
LINK_PORT = 17000
IMFUSE_PORT = 17701


def ircd(cmd):
    lib("ircd.sh", cmd)


def peer(nick, port):
    """A real IRC user (python3-irc), online."""
    p = JsonPeer(nick, [os.path.join(LIB, "irc_peer.py"), nick, SERVER_ADDR, str(port)], fatal=("error",))
    p.expect(lambda e: e["ev"] == "online", "peer %s online" % nick)
    return p


def scenario(c, name, port, login, options, presence_timeout, taken_nick):
    """Steps 1-6 on one server; returns (account id, bob's peer)."""
    tag = "[%s] " % name
    a = c.call("link", network="irc", login=login, password="", server=server(port),
               tls="none", name=name, options=options)["account"]
    e = account_state(c, a, ("online",))
    check(e["network"] == "irc" and e["login"] == login, tag + "1. account %d online: %r" % (a, e))

    c.call("add_contact", account=a, address="Bob")
    ev = c.wait_event(lambda x: x.get("op") == "contacts" and x.get("account") == a
                      and any(m["address"] == "bob" for m in x["contacts"]), 10, "contacts with bob")
    check([m["address"] for m in ev["contacts"]] == ["bob"] and ev["contacts"][0]["network"] == "irc",
          tag + "2. add_contact bob -> contacts event %r" % ev["contacts"])

    t = time.monotonic()
    bob = peer("bob", port)
    presence_event(c, a, "bob", "available", presence_timeout)
    check(True, tag + "3. bob connects -> presence available after %.1f s" % (time.monotonic() - t))

    r = c.call("send", to={"account": a, "address": "bob"}, body="hello bob \u00e9\u20ac\U0001F600", cid=name + "-1")
    check(r["network"] == "irc" and r["address"] == "bob", tag + "4. send accepted %r" % r)
    got = bob.expect(lambda x: x["ev"] == "message" and x["from"] == login, "hello")
    check(got["from"] == login and got["body"] == "hello bob \u00e9\u20ac\U0001F600",
          tag + "4. bob's client received it: %r" % got)

    long_body = "".join("\u00e9\u20ac\U0001F600abc"[i % 6] for i in range(700))
    while len(long_body.encode()) < 1500:
        long_body += "x"
    check(len(long_body.encode()) >= 1500, tag + "4. long body is %d bytes" % len(long_body.encode()))
    c.call("send", to={"account": a, "address": "bob"}, body=long_body)
    parts = []
    while len("".join(parts)) < len(long_body):
        parts.append(bob.expect(lambda x: x["ev"] == "message" and x["from"] == login,
                                "a piece of the long message")["body"])
    check(len(parts) >= 3 and "".join(parts) == long_body,
          tag + "4. %d-byte message arrived as %d lines, intact when joined" % (len(long_body.encode()), len(parts)))

    c.call("send", to={"account": a, "address": "bob"}, body="/me waves")
    got = bob.expect(lambda x: x["ev"] in ("action", "message") and x["from"] == login, "action")
    check(got["ev"] == "action" and got["body"] == "waves", tag + "4. /me waves arrived as CTCP ACTION: %r" % got)

    bob.send(login, "hi alice \u00fc")
    m = c.wait_event(lambda x: x.get("op") == "message" and x.get("account") == a, 20, "message from bob")
    check(m["from"] == "bob" and m["network"] == "irc" and m["body"] == "hi alice \u00fc",
          tag + "5. bob's reply pushed: %r" % m)
    c.call("ack", seq=m["seq"])

    a2 = c.call("link", network="irc", login=taken_nick, password="", server=server(port),
                tls="none", name=name + "-taken")["account"]
    e = account_state(c, a2, ("online",))
    if "in use" not in e.get("detail", ""):
        e = c.wait_event(lambda x: x.get("op") == "account" and x.get("account") == a2
                         and "in use" in x.get("detail", ""), 10, "nick-in-use detail")
    check(e["state"] == "online" and ("nick %s is in use; using %s_" % (taken_nick, taken_nick)) in e["detail"],
          tag + "6. nick %s taken -> online with detail %r" % (taken_nick, e.get("detail")))
    c.call("unlink", account=a2)
    return a, bob


def burst(c, runs):
    """Step 7 on every (name, account, bob, login) at once."""
    c.events = [e for e in c.events if e.get("op") != "account"]   # judge only what follows
    t0 = time.monotonic()
    for name, a, bob, login in runs:
        for i in range(BURST):
            c.call("send", to={"account": a, "address": "bob"}, body="burst %s %03d" % (name, i))
    log("# %d messages accepted per server in %.1f s" % (BURST, time.monotonic() - t0))
    for name, a, bob, login in runs:
        got = []
        deadline = BURST * 1.2 + 60
        while len(got) < BURST:
            e = bob.expect(lambda x: x["ev"] == "message" and x["from"] == login, "burst message %d" % len(got),
                           timeout=max(1.0, deadline - (time.monotonic() - t0)))
            got.append(e["body"])
        dt = time.monotonic() - t0
        check(got == ["burst %s %03d" % (name, i) for i in range(BURST)],
              "[%s] 7. all %d burst messages arrived in order, none lost, in %.1f s (%.2f lines/s)"
              % (name, BURST, dt, BURST / dt))
    bad = [e for e in c.events if e.get("op") == "account" and e.get("state") != "online"
           and e.get("account") in [r[1] for r in runs]]
    accs = {x["account"]: x["state"] for x in c.call("accounts")["accounts"]}
    check(not bad and all(accs.get(r[1]) == "online" for r in runs),
          "7. every account stayed online during the bursts (%r, %r)" % (bad, accs))


def raw_register(port, nick, password):
    """Register nick with atheme's NickServ from a plain socket client."""
    s = socket.create_connection((SERVER_ADDR, port), timeout=20)
    s.sendall(("NICK %s\r\nUSER %s 0 * :%s\r\n" % (nick, nick, nick)).encode())
    buf, sent, end = b"", False, time.monotonic() + 20
    try:
        while time.monotonic() < end:
            data = s.recv(4096)
            if not data:
                break
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith("PING"):
                    s.sendall(("PONG" + text[4:] + "\r\n").encode())
                elif " 001 " in text and not sent:
                    s.sendall(("PRIVMSG NickServ :REGISTER %s %s@mail.test\r\n" % (password, nick)).encode())
                    sent = True
                elif text.startswith(":NickServ!") and "registered" in text.lower():
                    s.sendall(b"QUIT :done\r\n")
                    return True
        return False
    finally:
        s.close()


def sasl_scenario(c, work):
    """inspircd + atheme-services: SASL PLAIN, right and wrong password."""
    if not shutil.which("atheme-services"):
        log("# skipped SASL: atheme-services is not installed")
        return
    ins2, ath = os.path.join(work, "inspircd-sasl"), os.path.join(work, "atheme")
    stop_at_end("ircd.sh", "inspircd_stop " + ins2)
    stop_at_end("ircd.sh", "atheme_stop " + ath)
    ircd("INSPIRCD_LINK_PORT=%d inspircd_start %s %d" % (LINK_PORT, ins2, SASL_PORT))
    ircd("atheme_start %s %d" % (ath, LINK_PORT))
    check(raw_register(SASL_PORT, "sasluser", "sasl-pw-1"), "[sasl] sasluser registered with atheme's NickServ")
    a = c.call("link", network="irc", login="sasluser", password="sasl-pw-1", server=server(SASL_PORT),
               tls="none", name="sasl", options={"sasl": "yes"})["account"]
    e = account_state(c, a, ("online", "auth_failed", "error"))
    check(e["state"] == "online", "[sasl] SASL PLAIN with the right password -> online: %r" % e)
    c.call("unlink", account=a)
    b = c.call("link", network="irc", login="SaslUser", password="wrong-pw", server=server(SASL_PORT),
               tls="none", name="sasl-bad", options={"sasl": "yes"})["account"]
    e = account_state(c, b, ("online", "auth_failed", "error"))
    check(e["state"] == "auth_failed" and "SASL" in e.get("detail", ""),
          "[sasl] a wrong password -> auth_failed with the server's text: %r" % e.get("detail"))
    c.call("unlink", account=b)


def main():
    work = tempfile.mkdtemp(prefix="imfuse-irc-")
    log("# work directory " + work)
    ng, ins = os.path.join(work, "ngircd"), os.path.join(work, "inspircd")
    stop_at_end("ircd.sh", "ngircd_stop " + ng)
    stop_at_end("ircd.sh", "inspircd_stop " + ins)
    ircd("ngircd_start %s %d" % (ng, NGIRCD_PORT))
    ircd("inspircd_start %s %d" % (ins, INSPIRCD_PORT))

    d = Daemon(work, IMFUSE_PORT)
    d.start()
    r = d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n")
    check(r.returncode == 0, "imfusectl user add alice (%s)" % r.stderr.strip())
    c = Client(port=IMFUSE_PORT, timeout=30)
    r = c.login("alice", "alice-secret", "test")
    check(r["op"] == "ok", "alice logs in")

    if ONLY in ("", "sasl"):
        sasl_scenario(c, work)
    runs = []
    if ONLY in ("", "ngircd"):
        # ngircd has no MONITOR: ISON, polled every 3 s for a quick test.
        a_ng, bob_ng = scenario(c, "ngircd", NGIRCD_PORT, "alice", {"ison_interval": "3"}, 15, "bob")
        runs.append(("ngircd", a_ng, bob_ng, "alice"))
    if ONLY in ("", "inspircd"):
        # inspircd: MONITOR, so presence is pushed at once.
        a_in, bob_in = scenario(c, "inspircd", INSPIRCD_PORT, "alicia", {}, 10, "bob")
        runs.append(("inspircd", a_in, bob_in, "alicia"))
    if runs:
        burst(c, runs)

    for name, a, bob, login in runs:
        bob.quit()
        presence_event(c, a, "bob", "offline", 15)
        check(True, "[%s] 8. bob quits -> presence offline (%s)" % (name, "ISON" if name == "ngircd" else "MONITOR"))

    c.close()
    rc = d.stop()
    check(rc == 0, "imfused exits 0 on SIGTERM (rc %s)" % rc)


if __name__ == "__main__":
    run(main)
