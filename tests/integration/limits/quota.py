"""Quotas against hostile clients and servers (issue 9, row 4), with a real
prosody for the XMPP parts.  Run by quota.sh inside a private network
namespace, with /usr/bin/python3.

  - 5,000 links: max-accounts-per-user of them get ok, the rest `limit`
    naming the limit; `accounts` still answers; max-sessions across users.
  - a roster of 1,200 contacts: the account keeps max-contacts-per-account
    (1,000) and says so in its detail; `contacts` answers; the account and
    its list survive a restart; add_contact past the cap gets `limit` on
    every network (XMPP on the server, IRC and SIP on the kept lists).
  - a hostile IRC server floods 1,000 CTCP requests: a bounded number of
    answers wait in the account's queue, so the user's next message is not
    stuck behind them (row 7).
  - 600 messages from a real XMPP user to an appliance user who does not
    acknowledge: the queue stops near max-queued-per-user (the server is
    not read, the account's detail says so, across a kill -9 and restart),
    and as the user acknowledges every message arrives, once and in order.
"""
import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (HERE as LIB, JsonPeer, account_state, check, lib, lib_out, log, run,  # noqa: E402
                     start_daemon, stop_at_end, stop_proc)
from imclient import Client  # noqa: E402
from testenv import SERVER_ADDR, server  # noqa: E402

XMPP_PORT = 15232
PORT = 17720
ROSTER = 1200
MESSAGES = 600
QUEUE_MAX = 150


def prosody(cmd):
    lib("prosody.sh", cmd)


def links(work):
    log("# accounts per user, sessions in total")
    d = start_daemon(work, "links", PORT, config={"max-sessions": 40, "max-contacts-per-account": 50})
    d.add_user("eve", "eve-pw")
    d.add_user("dan", "dan-pw")
    c = Client(port=PORT)
    check(c.login("eve", "eve-pw")["op"] == "ok", "eve logs in")
    got = []
    for k in range(0, 5000, 500):
        got += c.pipeline([("link", {"network": "irc", "login": "n%d" % i, "password": "", "server": server(1),
                                   "tls": "none"}) for i in range(k, k + 500)])
    ok = [r for r in got if r["op"] == "ok"]
    lim = [r for r in got if r["op"] == "error" and r["code"] == "limit"]
    check(len(ok) == 32 and len(lim) == 5000 - 32, "5,000 links: 32 ok (max-accounts-per-user), %d limit" % len(lim))
    check("max-accounts-per-user" in lim[0]["message"], "the limit is named: " + lim[0]["message"])
    r = c.request("accounts")
    check(r["op"] == "ok" and len(r["accounts"]) == 32, "accounts still answers, with 32 accounts")
    c.close()
    c = Client(port=PORT)
    c.login("dan", "dan-pw")
    got = c.pipeline([("link", {"network": "sip", "login": "sip:d%d@x.test" % i, "password": "",
                              "server": server(1), "tls": "none"}) for i in range(10)])
    codes = [r.get("code", "ok") for r in got]
    check(codes == ["ok"] * 8 + ["limit"] * 2 and "max-sessions" in got[-1]["message"],
          "max-sessions 40: dan's 9th link is refused, naming max-sessions %r" % codes)
    c.close()
    # kept lists (IRC, SIP): add_contact past max-contacts-per-account (50 here)
    for user, fmt in (("eve", "nick%d"), ("dan", "sip:u%d@s.test")):
        c = Client(port=PORT)
        c.login(user, user + "-pw")
        acct = c.call("accounts")["accounts"][0]
        got = c.pipeline([("add_contact", {"account": acct["account"], "address": fmt % i}) for i in range(51)])
        codes = [r.get("code", "ok") for r in got]
        check(codes == ["ok"] * 50 + ["limit"] and "max-contacts-per-account" in got[-1]["message"],
              "kept list (%s): 50 contacts, the 51st gets limit naming max-contacts-per-account"
              % acct["network"])
        c.close()
    st = d.stats()
    check(st["limit_accounts"] == 5000 - 32 and st["limit_sessions"] == 2 and st["max_sessions"] == 40,
          "stats: limit_accounts %d, limit_sessions %d" % (st["limit_accounts"], st["limit_sessions"]))
    check(stop_proc(d.p) == 0, "imfused exits 0")


def roster_body():
    items = []
    for i in range(ROSTER):
        if i % 40 == 0:     # some long names and many groups: kept within the entry's bounds
            groups = "; ".join('["group %02d of contact %d with a long name"] = true' % (g, i) for g in range(12))
            items.append('["c%d@a.test"] = {subscription="both"; name="%s"; groups={%s}};' % (i, "N" * 400, groups))
        else:
            items.append('["c%d@a.test"] = {subscription="both"; name="Contact %d"; groups={Friends=true}};' % (i, i))
    return " ".join(items)


def roster_and_queue(work, pdir, cafile):
    log("# contacts per account, queued messages per user")
    d = start_daemon(work, "q", PORT, cafile, config={"max-queued-per-user": QUEUE_MAX})
    d.add_user("me", "me-pw")
    c = Client(port=PORT)
    check(c.login("me", "me-pw")["op"] == "ok", "me logs in")
    a = c.call("link", network="xmpp", login="alice@a.test", password="pw-alice",
               server=server(XMPP_PORT), tls="starttls")["account"]
    account_state(c, a, ("online",), 60)
    e = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a, 30, "contacts event")
    check(len(e["contacts"]) == 1000, "a roster of %d: the contacts event carries 1000 (got %d)"
          % (ROSTER, len(e["contacts"])))
    check(all(len(x["name"].encode()) <= 255 and len(x["groups"]) <= 8 for x in e["contacts"]),
          "every entry within its bounds (name <= 255 bytes, <= 8 groups)")
    acc = [x for x in c.call("accounts")["accounts"] if x["account"] == a][0]
    check("contact list cut to 1000 of %d" % ROSTER in acc.get("detail", "") and
          "max-contacts-per-account" in acc.get("detail", ""), "the account says so: %r" % acc.get("detail"))
    r = c.request("contacts")
    check(r["op"] == "ok" and len(r["contacts"]) == 1000, "contacts answers with 1000")
    r = c.request("add_contact", account=a, address="newone@a.test")
    check(r["op"] == "error" and r["code"] == "limit" and "max-contacts-per-account" in r["message"],
          "XMPP add_contact past the cap -> limit naming it")
    st = d.stats()
    check(st["limit_contacts"] >= 2 and st["max_contacts_per_account"] == 1000, "stats: limit_contacts %d"
          % st["limit_contacts"])

    # the store keeps the account and its list (it was over 1 MiB before)
    c.close()
    check(stop_proc(d.p) == 0, "imfused exits 0")
    d.start()
    c = Client(port=PORT)
    c.login("me", "me-pw")
    accs = {x["account"]: x for x in c.call("accounts")["accounts"]}
    check(a in accs, "after a restart the account is there")
    n = len(c.call("contacts")["contacts"])
    check(n == 1000, "... with its list of 1000 from the store (%d)" % n)
    wait_online(c, a)

    # ---- the queue: 600 messages, the user acknowledges only later ----
    bob = JsonPeer("bob", [os.path.join(LIB, "xmpp_peer.py"), "bob@a.test", "pw-bob", SERVER_ADDR,
                           str(XMPP_PORT), cafile])
    bob.expect(lambda e: e["ev"] == "online", "bob online")
    sent = [0]

    def send_some(k, total):
        for _ in range(k):
            if sent[0] < total:
                bob.send("alice@a.test", "m%d" % sent[0])
                sent[0] += 1

    def pause_seen():
        drain(c, 0.05)
        return any(e.get("op") == "account" and e.get("account") == a and "paused" in e.get("detail", "")
                   for e in c.events)

    # the server sends at a steady pace until the queue is full
    end = time.monotonic() + 120
    while sent[0] < MESSAGES and not pause_seen() and time.monotonic() < end:
        send_some(10, MESSAGES)
    check(pause_seen(), "the user's queue reached max-queued-per-user %d: the account's detail says paused "
          "(after %d sent)" % (QUEUE_MAX, sent[0]))
    st = d.stats()
    check(st["queue_full_users"] == 1 and st["accounts_paused"] == 1 and st["limit_queue_full"] >= 1,
          "stats: queue_full_users 1, accounts_paused 1")
    send_some(MESSAGES, MESSAGES)       # the rest: the server holds them, imfuse does not read them
    time.sleep(2)
    queued = d.stats()["store_queued"]
    check(QUEUE_MAX <= queued < MESSAGES, "the queue stopped near the cap: %d queued of %d sent" % (queued, MESSAGES))
    acc = [x for x in c.call("accounts")["accounts"] if x["account"] == a][0]
    check(acc["state"] == "online" and "max-queued-per-user" in acc.get("detail", ""),
          "the session stays online, its detail names the limit: %r" % acc.get("detail"))

    # acknowledging makes room: every message arrives, once and in order
    seen, seqs = [], []
    end = time.monotonic() + 240
    while len(seen) < MESSAGES and time.monotonic() < end:
        try:
            m = c.wait_event(lambda e: e.get("op") == "message", 15, "message")
        except TimeoutError:
            break
        seqs.append(m["seq"])
        seen.append(m["body"])
        if len(seqs) % 25 == 0:
            c.call("ack", seq=m["seq"])
    if seqs:
        c.call("ack", seq=seqs[-1])
    check(seen == ["m%d" % i for i in range(MESSAGES)],
          "all %d messages arrived, once each and in order (%d seen)" % (MESSAGES, len(seen)))
    check(seqs == sorted(set(seqs)), "seqs strictly increase")
    time.sleep(1)
    st = d.stats()
    check(st["queue_full_users"] == 0 and st["accounts_paused"] == 0 and st["store_queued"] == 0,
          "all acknowledged: the queue is empty and nothing is paused")
    check(st["limit_queue_full"] >= 2, "the queue filled more than once on the way (%d)" % st["limit_queue_full"])

    # exact across kill -9: fill it again, restart, still full, then drained
    sent[0] = 0
    c.events.clear()
    end = time.monotonic() + 120
    while not pause_seen() and time.monotonic() < end:
        send_some(5, 10 * QUEUE_MAX)
    queued = d.stats()["store_queued"]
    check(queued >= QUEUE_MAX, "full again: %d queued" % queued)
    d.kill9()
    d.start()
    c.close()
    c = Client(port=PORT)
    r = c.login("me", "me-pw")
    check(r["op"] == "ok" and r["queued"] == queued, "after kill -9: login reports the %d queued" % queued)
    deadline = time.monotonic() + 10
    while d.stats()["queue_full_users"] != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    check(d.stats()["queue_full_users"] == 1, "after the restart the queue is still full (counted from the store)")
    acc = [x for x in c.call("accounts")["accounts"] if x["account"] == a][0]
    check("paused" in acc.get("detail", ""), "the account waits, paused: %s %r" % (acc["state"], acc.get("detail")))
    last = None
    for _ in range(queued):
        last = c.wait_event(lambda e: e.get("op") == "message", 15, "replayed message")
    c.call("ack", seq=last["seq"])
    wait_online(c, a)
    deadline = time.monotonic() + 10
    while d.stats()["queue_full_users"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    st = d.stats()
    check(st["queue_full_users"] == 0 and st["accounts_paused"] == 0, "acknowledged: room again, the account online")
    bob.quit()
    c.close()
    check(stop_proc(d.p) == 0, "imfused exits 0")


def wait_online(c, a, timeout=60.0):
    """Poll accounts until account a is online (its events may have passed before login)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(x["account"] == a and x["state"] == "online" for x in c.call("accounts")["accounts"]):
            return
        time.sleep(0.2)
    raise TimeoutError("account %d not online" % a)


def drain(c, t):
    """Read whatever frames arrive within t seconds into c.events."""
    end = time.monotonic() + t
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        try:
            m = c.recv_frame(left)
        except TimeoutError:
            return
        if m is None:
            return
        c.events.append(m)


def ctcp_flood(work):
    """A hostile IRC server (this test) floods the account with 1,000 CTCP
    VERSION requests, then the user sends a message: the account's queue holds
    a bounded number of answers, so the message is not stuck behind 1,000 of
    them (control lines leave first)."""
    log("# CTCP answers bounded (a hostile IRC server)")
    lsock = socket.socket()
    lsock.bind((SERVER_ADDR, 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    d = start_daemon(work, "ctcp", PORT)
    d.add_user("ann", "ann-pw")
    c = Client(port=PORT)
    c.login("ann", "ann-pw")
    a = c.call("link", network="irc", login="ann", password="", server=server(port), tls="none")["account"]
    lsock.settimeout(30)
    conn, _ = lsock.accept()
    conn.settimeout(30)
    buf = b""
    while b"USER " not in buf:
        data = conn.recv(4096)
        check(bool(data), "the appliance registers with the server")
        buf += data
    flood = b":irc.test 001 ann :Welcome ann\r\n:irc.test 376 ann :End of MOTD\r\n"
    flood += b"".join(b":m%d!m@h PRIVMSG ann :\x01VERSION\x01\r\n" % (i % 9) for i in range(1000))
    conn.sendall(flood)
    wait_online(c, a)
    c.call("send", to={"account": a, "address": "bob"}, body="hello bob")
    answers, got = 0, False
    buf = b""
    end = time.monotonic() + 60
    while not got and time.monotonic() < end:
        data = conn.recv(65536)
        if not data:
            break
        buf += data
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if b"\x01VERSION imfuse\x01" in line:
                answers += 1
            elif line.startswith(b"PRIVMSG bob :hello bob"):
                got = True
                break
    check(got, "the user's message reaches the server after the flood")
    check(answers <= 12, "only a bounded number of CTCP answers went before it: %d of 1000 requests" % answers)
    conn.close()
    lsock.close()
    c.close()
    check(stop_proc(d.p) == 0, "imfused exits 0")


def main():
    work = tempfile.mkdtemp(prefix="imfuse-quota-")
    log("# work directory " + work)
    ctcp_flood(work)
    links(work)
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    with open(os.path.join(work, "roster.lua"), "w") as f:
        f.write(roster_body())
    prosody("prosody_set_roster %s alice a.test \"$(cat %s)\"" % (pdir, os.path.join(work, "roster.lua")))
    prosody("prosody_start %s %d a.test" % (pdir, XMPP_PORT))
    prosody("prosody_adduser %s alice a.test pw-alice" % pdir)
    prosody("prosody_adduser %s bob a.test pw-bob" % pdir)
    cafile = lib_out("prosody.sh", "prosody_cafile %s" % pdir)
    roster_and_queue(work, pdir, cafile)


if __name__ == "__main__":
    run(main)
