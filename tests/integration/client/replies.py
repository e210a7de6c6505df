"""No silent drops (replies.sh runs this in a private network namespace, as
root, with prosody on the machine).

1. A 20,000-message backlog (23 MB: more than the 8 MiB a client may have
   waiting) reaches a client that reads slowly, complete, in seq order, each
   once; 50 messages that arrive during the replay come after it.  Then an
   ack from another device during a slow replay removes its messages at once:
   the slow device skips them, nothing twice, nothing after.
2. `contacts` over six accounts with 950-entry rosters (1.4 MB) is answered
   `limit`, and read whole in pages (offset, max).
3. A unified list that would pass the frame limit is refused with `limit`,
   nothing changes and the user still logs in; one that fits is stored.
4. `accounts` with 1,300 accounts of long names (1.1 MB): `limit`, or every
   account in pages; or, where quotas cap the accounts, a whole list.

Run with /usr/bin/python3 (Debian's python3-msgpack, python3-slixmpp)."""
import argparse
import os
import socket
import struct
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import HERE as LIB, JsonPeer, check, lib, lib_out, log, stop_at_end  # noqa: E402
from daemon import MIB, Conn, Imfused, frame  # noqa: E402

C2S = 15322
PORT = 17721
BACKLOG = 20000
LIVE = 50
ROSTER = 950
BIG_ACCOUNTS = 6
ACCOUNTS = 1300         # of ~840 bytes each in `accounts` (more with a detail): past 1 MiB


def prosody(cmd):
    lib("prosody.sh", cmd)


def wait_account(c, account, state, timeout=60.0):
    end = time.monotonic() + timeout
    while True:
        m = c.recv(max(0.1, end - time.monotonic()))
        if m is None:
            raise ConnectionError("closed while waiting for account %d %s" % (account, state))
        if m.get("op") == "account" and m.get("account") == account and m.get("state") == state:
            return m


def login(port, user="u", pw="u-pw"):
    c = Conn(port)
    r = c.request("login", user=user, password=pw, device="replies")
    check(r["op"] == "ok", "login of %s: %r" % (user, {k: r.get(k) for k in ("op", "code", "queued")}))
    return c, r


# ---------------------------------------------------------------------------------------

def slow_read(port, want, on_count=None, quiet=None, deadline=600):
    """Log in with a 16 KiB receive buffer and read 4 KiB at a time, slowly,
    until want(msgs) or, with quiet, when nothing came for quiet seconds.
    on_count(n) is called as messages arrive.  Returns (login reply, [(seq, body)])."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(quiet or 30)
    s.connect(("127.0.0.1", port))
    s.sendall(frame({"op": "login", "id": 1, "user": "u", "password": "u-pw", "device": "slow"}))
    buf = b""
    msgs = []
    reply = None
    end = time.monotonic() + deadline
    while not want(msgs) and time.monotonic() < end:
        try:
            data = s.recv(4096)
        except TimeoutError:
            if quiet:
                break
            raise
        if not data:
            break
        buf += data
        off = 0
        while len(buf) - off >= 4:
            n = struct.unpack(">I", buf[off:off + 4])[0]
            if len(buf) - off < 4 + n:
                break
            m = msgpack.unpackb(buf[off + 4:off + 4 + n], raw=False)
            off += 4 + n
            if m.get("op") == "message":
                msgs.append((m["seq"], m["body"].split(" ", 1)[0]))
            elif m.get("id") == 1:
                reply = m
        buf = buf[off:]
        if on_count:
            on_count(len(msgs))
        time.sleep(0.001)
    return s, reply, msgs


def replay(d, cafile):
    log("# 1. a %d-message backlog and a slow reader" % BACKLOG)
    c, _ = login(d.port)
    acc = c.request("link", network="xmpp", login="alice@a.test", password="alice-pw",
                    server="127.0.0.1:%d" % C2S, tls="starttls")["account"]
    wait_account(c, acc, "online")
    check(True, "alice's XMPP account is online")
    c.request("logout")
    c.close()
    bob = JsonPeer("bob", [os.path.join(LIB, "xmpp_peer.py"), "bob@a.test", "bob-pw", "127.0.0.1", str(C2S),
                           cafile])
    bob.expect(lambda e: e["ev"] == "online", "bob online")

    def burst(n, prefix, pad=""):
        bob.p.stdin.write('{"cmd": "burst", "to": "alice@a.test", "n": %d, "prefix": "%s"%s}\n' %
                          (n, prefix, ', "pad": "%s"' % pad if pad else ""))
        bob.p.stdin.flush()

    burst(BACKLOG, "r", "p" * 1000)
    bob.expect(lambda e: e["ev"] == "sent", "bob's burst", 120)
    d.wait_stat(lambda s: s["store_queued"] >= BACKLOG, "%d messages queued" % BACKLOG, 600)
    check(True, "%d messages queued for the user, who is offline" % BACKLOG)

    live = {"sent": False}

    def during(n):
        if not live["sent"] and n >= 2000:
            burst(LIVE, "live")                 # these arrive while the replay is under way
            live["sent"] = True

    s, reply, msgs = slow_read(d.port, lambda m: len(m) >= BACKLOG + LIVE, during)
    check(reply is not None and reply["op"] == "ok" and reply["queued"] == BACKLOG,
          "login reports %d queued" % BACKLOG)
    seqs = [q for q, _ in msgs]
    bodies = [b for _, b in msgs]
    log("  %d messages received" % len(msgs))
    check(len(msgs) == BACKLOG + LIVE, "all %d queued and %d live messages arrived (%d)" %
          (BACKLOG, LIVE, len(msgs)))
    check(all(a < b for a, b in zip(seqs, seqs[1:])), "in strictly increasing seq order, none twice")
    check(bodies[:BACKLOG] == ["r%06d" % i for i in range(BACKLOG)], "the backlog in the order it was sent")
    check(bodies[BACKLOG:] == ["live%06d" % i for i in range(LIVE)], "the live messages after it, in order")
    st = d.stats()
    check(st["clients_dropped"] == 0 and st["replays_paced"] >= 10,
          "the slow reader was never dropped; the replay came in %d paced batches" % (st["replays_paced"] + 1))
    s.sendall(frame({"op": "ack", "id": 2, "seq": seqs[-1]}))
    s.close()
    d.wait_stat(lambda x: x["store_queued"] == 0, "the queue emptied by the ack")

    log("# 1b. another device acknowledges while a slow one is still replaying")
    SMALL = 10000                               # 10 MB: more than the sockets' buffers hold
    burst(SMALL, "s", "p" * 1000)
    bob.expect(lambda e: e["ev"] == "sent", "bob's second burst", 120)
    d.wait_stat(lambda x: x["store_queued"] >= SMALL, "%d messages queued" % SMALL, 300)
    fast = {}

    def fast_device():
        f, r = login(d.port)
        seqs = []
        while len(seqs) < SMALL:
            m = f.recv(120)
            if m is None:
                break
            if m.get("op") == "message":
                seqs.append(m["seq"])
        fast["got"] = len(seqs)
        fast["ack"] = f.request("ack", seq=seqs[-1], timeout=60)["op"] if seqs else None
        f.close()
    th = threading.Thread(target=fast_device, daemon=True)

    def start_fast(n):
        if n >= 200 and not th.is_alive() and "got" not in fast:
            th.start()
            th.join(300)                        # the slow one waits: its backlog is the ack's
    s, reply, msgs = slow_read(d.port, lambda m: False, start_fast, quiet=3)
    s.close()
    seqs = [q for q, _ in msgs]
    bodies = [b for _, b in msgs]
    check(fast.get("got") == SMALL and fast.get("ack") == "ok",
          "the other device read all %d and acknowledged them (%r)" % (SMALL, fast))
    check(reply is not None and reply["queued"] == SMALL and 200 <= len(msgs) < SMALL and
          bodies == ["s%06d" % i for i in range(len(msgs))] and
          all(a < b for a, b in zip(seqs, seqs[1:])),
          "the slow device got %d of them in order, none twice, and skipped what the ack removed "
          "(the ack's ok followed the commit)" % len(msgs))
    d.wait_stat(lambda x: x["store_queued"] == 0, "the ack removed them all at once")
    g, r = login(d.port)
    check(r.get("queued") == 0, "a login after that ack replays none of it")
    g.close()
    bob.quit()
    return acc


# ---------------------------------------------------------------------------------------

def contacts(d):
    log("# 2. contacts past the frame limit: %d accounts of %d contacts" % (BIG_ACCOUNTS, ROSTER))
    c, _ = login(d.port)
    want = {(e["account"], e["address"]) for e in c.request("contacts")["contacts"]}   # earlier accounts'
    for k in range(BIG_ACCOUNTS):
        acc = c.request("link", network="xmpp", login="r%d@a.test" % k, password="r-pw",
                        server="127.0.0.1:%d" % C2S, tls="starttls")["account"]
        end = time.monotonic() + 120
        while True:
            m = c.recv(max(0.1, end - time.monotonic()))
            if m and m.get("op") == "contacts" and m.get("account") == acc:
                break
        check(len(m["contacts"]) == ROSTER, "account %d: the contacts event carries its %d contacts" %
              (acc, ROSTER))
        want |= {(acc, "c%04d@a.test" % i) for i in range(ROSTER)}
    r = c.request("contacts")
    check(r["op"] == "error" and r["code"] == "limit" and "pages" in r["message"],
          "contacts (%d entries, over 1 MiB) -> limit, with the way out: %r" % (len(want), r.get("message")))
    got = set()
    offset = pages = 0
    total = None
    while True:
        r = c.request("contacts", offset=offset, timeout=60)
        check(r["op"] == "ok", "contacts {offset: %d} -> ok" % offset)
        total = r["total"]
        got |= {(e["account"], e["address"]) for e in r["contacts"]}
        offset += len(r["contacts"])
        pages += 1
        if offset >= total or not r["contacts"]:
            break
    check(total == len(want) and got == want, "in %d pages every contact, once (%d of %d)" %
          (pages, len(got), len(want)))
    r = c.request("contacts", offset=10, max=5)
    check(r["op"] == "ok" and len(r["contacts"]) == 5 and r["total"] == len(want), "a page of 5 at offset 10")
    r = c.request("contacts", offset="ten")
    check(r["op"] == "error" and r["code"] == "bad_request", "a mistyped offset -> bad_request")
    st = d.stats()
    check(st["replies_limit"] >= 1, "counted: replies_limit %d" % st["replies_limit"])
    c.close()


# ---------------------------------------------------------------------------------------

def unified(d, acc):
    log("# 3. a unified list that would pass the frame limit")
    c, _ = login(d.port)

    def contact(i):
        return {"name": ("n%05d " % i) + "n" * 240, "members": [{"account": acc,
                "address": ("m%05d" % i) + "x" * 230 + "@a.test"}]}
    big = []
    while len(frame({"op": "set_unified", "id": 99, "contacts": big + [contact(len(big))]})) <= MIB:
        big.append(contact(len(big)))
    r = c.request("set_unified", contacts=big, timeout=60)
    check(r["op"] == "error" and r["code"] == "limit", "set_unified of %d contacts (a frame of almost 1 MiB, "
          "with ids over it) -> limit: %r" % (len(big), r.get("message")))
    check(c.request("unified")["contacts"] == [], "nothing was changed")
    c.close()
    c, _ = login(d.port)
    check(True, "and the user still logs in")
    fits = big[:len(big) * 2 // 3]
    r = c.request("set_unified", contacts=fits, timeout=60)
    check(r["op"] == "ok" and len(r["contacts"]) == len(fits), "a list of %d contacts that fits is stored" %
          len(fits))
    c.close()
    c, _ = login(d.port)
    u = c.request("unified", timeout=60)
    check(u["op"] == "ok" and u["contacts"] == r["contacts"], "after a new login, unified returns it exactly")
    c.close()


# ---------------------------------------------------------------------------------------

def accounts(d):
    log("# 4. accounts past the frame limit")
    c, _ = login(d.port)
    linked = set(a["account"] for a in c.request("accounts")["accounts"])
    capped = None
    batch = 100
    for k in range(0, ACCOUNTS, batch):
        for i in range(k, k + batch):
            c.send({"op": "link", "id": 10000 + i, "network": "xmpp",
                    "login": ("a%04d" % i) + "l" * 240 + "@a.test", "password": "",
                    "server": ("h%04d" % i) + "h" * 240 + ".invalid:5222", "tls": "none",
                    "name": ("name %04d " % i) + "n" * 240})
        seen = 0
        while seen < batch:
            m = c.recv(60)
            if m is None:
                raise ConnectionError("closed while linking")
            if m.get("id", 0) >= 10000:
                seen += 1
                if m["op"] == "ok":
                    linked.add(m["account"])
                elif m["code"] == "limit" and capped is None:
                    capped = m["message"]
        if capped:
            break
    log("  %d accounts linked%s" % (len(linked), "; capped: " + capped if capped else ""))
    r = c.request("accounts", timeout=60)
    if capped:
        check(r["op"] == "ok" and {a["account"] for a in r["accounts"]} == linked,
              "with the accounts capped by a quota, accounts lists them all in one reply")
    else:
        check(r["op"] == "error" and r["code"] == "limit",
              "accounts (%d of them, over 1 MiB) -> limit: %r" % (len(linked), r.get("message")))
        got = set()
        offset = 0
        while True:
            r = c.request("accounts", offset=offset, timeout=60)
            check(r["op"] == "ok", "accounts {offset: %d} -> ok" % offset)
            got |= {a["account"] for a in r["accounts"]}
            offset += len(r["accounts"])
            if offset >= r["total"] or not r["accounts"]:
                break
        check(got == linked and r["total"] == len(linked), "every account, in pages (%d)" % len(got))
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    work = a.work
    pdir = os.path.join(work, "prosody")
    os.makedirs(pdir, exist_ok=True)
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    prosody("PROSODY_REQUIRE_TLS=0 prosody_start %s %d a.test" % (pdir, C2S))
    prosody("prosody_adduser %s alice a.test alice-pw" % pdir)
    prosody("prosody_adduser %s bob a.test bob-pw" % pdir)
    prosody("prosody_set_roster %s alice a.test '[\"bob@a.test\"] = { subscription = \"both\"; groups = {} };'" %
            pdir)
    prosody("prosody_set_roster %s bob a.test '[\"alice@a.test\"] = { subscription = \"both\"; groups = {} };'" %
            pdir)
    name = "N" * 150
    body = os.path.join(work, "roster.lua")
    with open(body, "w") as f:
        f.write("\n".join('["c%04d@a.test"] = { subscription = "none"; name = "%s"; groups = { Big = true } };'
                          % (i, name) for i in range(ROSTER)))
    for k in range(BIG_ACCOUNTS):
        prosody("prosody_adduser %s r%d a.test r-pw" % (pdir, k))
        prosody('prosody_set_roster %s r%d a.test "$(cat %s)"' % (pdir, k, body))
    cafile = lib_out("prosody.sh", "prosody_cafile %s" % pdir)

    d = Imfused(work, "replies", PORT, {}, extra=["--ca-file", cafile])
    d.start()
    d.adduser("u", "u-pw")
    sections = a.only.split(",") if a.only else ("replay", "contacts", "unified", "accounts")
    acc = None
    if "replay" in sections:
        acc = replay(d, cafile)
    if "contacts" in sections:
        contacts(d)
    if "unified" in sections:
        if acc is None:
            c, _ = login(d.port)
            acc = c.request("link", network="xmpp", login="alice@a.test", password="alice-pw",
                            server="127.0.0.1:%d" % C2S, tls="starttls")["account"]
            c.close()
        unified(d, acc)
    if "accounts" in sections:
        accounts(d)
    d.stop()


if __name__ == "__main__":
    harness.run(main)
