"""Hostile clients against authentication (issue 9, rows 1, 2 and 7):
each attack of the audit, replayed against imfused, with the fixed
behaviour asserted (no timing assertions: orders and counts only).

Run by auth.sh inside a private network namespace, with /usr/bin/python3.
Clients bind source addresses of their own in IMFUSE_TEST_SOURCE_NET (testenv).

  1. 30 pipelined guesses in one write, the right one 25th: never logged in;
     30 guesses over 30 connections at once: at most 5 checked, none in;
     pipelined logins: every one answered, one session only.
  2. 60 logins from one address queued: another address's login is answered
     before the flood's remaining jobs; per-address cap answers `limit` at
     once; 40 pipelined registers: one at a time; registers rate-limited per
     address; `register` of an existing name costs a hash and says `exists`.
  7. the per-address lockout is not reset by another user's success there;
     NUL refused in addresses and bodies; set_unified's size capped (38k
     members: `limit` at once, not a stall).
"""
import os
import select
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import check, log, run, start_daemon, stop_proc  # noqa: E402
from imclient import Client  # noqa: E402
from testenv import SOURCE_NET, server  # noqa: E402

PORT = 17710
NET = ".".join(SOURCE_NET.split("/")[0].split(".")[:2])     # the /16 of client source addresses


def src(a, b):
    """A client source address of its own: NET.a.b."""
    return "%s.%d.%d" % (NET, a, b)


def replies(c, n, timeout=60.0):
    """The next n replies on c (events kept aside), in arrival order."""
    out = []
    end = time.monotonic() + timeout
    while len(out) < n:
        m = c.recv_frame(max(0.1, end - time.monotonic()))
        if m is None:
            raise RuntimeError("connection closed after %d of %d replies" % (len(out), n))
        if "id" in m:
            out.append(m)
    return out


def codes(rs):
    return [r.get("code", "ok") if r["op"] == "error" else "ok" for r in rs]


def start(work, name, config, extra=()):
    return start_daemon(work, name, PORT, config=config, extra=extra)


def stop(d):
    rc = stop_proc(d.p)
    check(rc == 0, "imfused exits 0 after SIGTERM (no leak, no sanitizer report): %r" % rc)


def row1_pipelined_guesses(work):
    log("# row 1: lockout counted at submission, one login at a time")
    d = start(work, "row1", {})
    d.add_user("victim", "right-password")
    d.add_user("carol", "carol-pw")

    # 30 guesses in one write on one connection, the right one 25th
    c = Client(port=PORT, src=src(1, 1))
    rs = c.pipeline([("login", {"user": "victim", "password": "right-password" if i == 25 else "guess-%d" % i})
                     for i in range(1, 31)])
    cs = codes(rs)
    check(len(rs) == 30, "30 pipelined logins: 30 replies, one per id")
    check("ok" not in cs, "30 pipelined guesses: none logs in (the right one was 25th) %r" % cs)
    check(cs.count("auth_failed") == 1 and cs.count("limit") == 29,
          "one login at a time: the first is checked (auth_failed), 29 get limit %r" % cs)
    r = c.request("ping")
    check(r["op"] == "ok", "the connection stays usable after")
    c.close()

    # 30 guesses over 30 connections at once, the right one 25th
    conns = [Client(port=PORT, src=src(2, i + 1)) for i in range(30)]
    for i, k in enumerate(conns):
        k.send_raw(Client.frame({"op": "login", "id": 1, "user": "victim",
                                 "password": "right-password" if i == 24 else "guess-%d" % i}))
    cs = [codes(replies(k, 1))[0] for k in conns]
    for k in conns:
        k.close()
    check("ok" not in cs, "30 parallel guesses: none logs in %r" % cs)
    check(cs.count("auth_failed") <= 5 and cs.count("auth_failed") + cs.count("limit") == 30,
          "30 parallel guesses: at most 5 checked (counted when submitted), the rest limit: %d checked"
          % cs.count("auth_failed"))
    c = Client(port=PORT, src=src(3, 1))
    r = c.login("victim", "right-password")
    check(r["op"] == "error" and r["code"] == "limit", "victim is locked out now, even with the right password")
    c.close()

    # pipelined logins with the right password: each answered, one session
    c = Client(port=PORT, src=src(4, 1))
    rs = c.pipeline([("login", {"user": "carol", "password": "carol-pw"})] * 2)
    check(codes(rs) == ["ok", "limit"], "two pipelined logins: ok, then limit (not lost) %r" % codes(rs))
    r = c.request("accounts")
    check(r["op"] == "ok", "logged in once: accounts answers")
    p = d.ctl_cmd("--json", "sessions")
    check(p.returncode == 0 and p.stdout.count('"carol"') == 1, "one session of carol, not two: " + p.stdout)
    c.close()
    st = d.stats()
    check(st["limit_auth_busy"] >= 30, "stats: limit_auth_busy counts the refused logins (%d)" % st["limit_auth_busy"])
    check(st["limit_lockout"] >= 25, "stats: limit_lockout counts the locked ones (%d)" % st["limit_lockout"])

    # the per-address cap: 30 logins at once from one address, 16 checked
    conns = [Client(port=PORT, src=src(5, 1)) for _ in range(30)]
    for i, k in enumerate(conns):
        k.send_raw(Client.frame({"op": "login", "id": 1, "user": "nobody%d" % i, "password": "x"}))
    rs = [replies(k, 1)[0] for k in conns]
    for k in conns:
        k.close()
    lim = [r for r in rs if r["op"] == "error" and r["code"] == "limit"]
    check(len(lim) >= 14 and any("auth-pending-per-address" in r["message"] for r in lim),
          "30 logins at once from one address: past auth-pending-per-address (16) limit at once, "
          "naming the limit (%d limited)" % len(lim))
    stop(d)


def flood_order(work):
    log("# row 2: a flood of logins from one address does not delay another's")
    d = start(work, "row2", {"auth-pending-per-address": 100, "login-failures-per-address": 1000})
    d.add_user("alice", "alice-pw")
    flood = [Client(port=PORT, src=src(6, 1)) for _ in range(60)]
    for i, k in enumerate(flood):
        k.send_raw(Client.frame({"op": "login", "id": 1, "user": "u%d" % i, "password": "wrong"}))
    # wait until the flood is in the pool (queued behind the two threads)
    end = time.monotonic() + 30
    while d.stats()["auth_pending"] < 30 and time.monotonic() < end:
        time.sleep(0.02)
    alice = Client(port=PORT, src=src(7, 1))
    pending = d.stats()["auth_pending"]
    check(pending >= 30, "the flood's logins wait in the pool (%d pending)" % pending)
    alice.send_raw(Client.frame({"op": "login", "id": 1, "user": "alice", "password": "alice-pw"}))
    # read everything, recording the order of the answers
    order = []
    socks = {k.sock.fileno(): ("flood", k) for k in flood}
    socks[alice.sock.fileno()] = ("alice", alice)
    left = dict(socks)
    end = time.monotonic() + 120
    while left and time.monotonic() < end:
        r, _, _ = select.select(list(left), [], [], 1.0)
        for fd in r:
            who, k = left[fd]
            m = k.recv_frame(5)
            if m is not None and "id" in m:
                order.append((who, m))
                del left[fd]
    check(not left, "every login is answered (%d left)" % len(left))
    pos = [i for i, (who, _) in enumerate(order) if who == "alice"]
    check(pos and order[pos[0]][1]["op"] == "ok", "alice logs in")
    # flood answers that came after alice's login was sent but before its answer:
    # the two running and one more in turn (fair), never the flood's backlog
    ahead = (pos[0] if pos else 60) - (60 - pending)
    check(pos and ahead <= 6, "alice's login is answered before the flood's remaining jobs: %d of the %d "
          "pending flood logins were answered first" % (ahead, pending))
    check(all(m["op"] == "error" and m["code"] == "auth_failed" for who, m in order if who == "flood"),
          "every flood login is checked and refused (auth_failed)")
    for k in flood:
        k.close()
    alice.close()
    stop(d)


def registers(work):
    log("# row 2: registrations: one at a time, rate-limited, same cost for an existing name")
    d = start(work, "reg", {"register-per-address": 5}, extra=["--open-registration"])
    c = Client(port=PORT, src=src(8, 1))
    rs = c.pipeline([("register", {"user": "r%d" % i, "password": "pw"}) for i in range(1, 41)])
    cs = codes(rs)
    check(cs.count("ok") == 1 and cs.count("limit") == 39,
          "40 pipelined registers: 1 made, 39 limit (one at a time) %r" % cs)
    c.close()
    p = d.ctl_cmd("--json", "user", "list")
    check(p.returncode == 0 and p.stdout.count('"name"') == 1, "one user made: " + p.stdout)

    # an existing name: exists, after a hash like any other
    before = d.stats()["auth_jobs"]
    c = Client(port=PORT, src=src(8, 2))
    r = c.request("register", user="r1", password="other")
    check(r["op"] == "error" and r["code"] == "exists", "register of an existing name -> exists")
    check(d.stats()["auth_jobs"] == before + 1, "... after hashing the password like for a new name")
    # the address's rate: 5 an hour (r1 above spent one)
    got = []
    for i in range(8):
        r = c.request("register", user="s%d" % i, password="pw")
        got.append(r.get("code", "ok") if r["op"] == "error" else "ok")
    check(got.count("ok") == 4 and got[4:] == ["limit"] * 4,
          "register-per-address 5: the 6th registration from one address gets limit %r" % got)
    r = c.request("register", user="s99", password="pw")
    check("register-per-address" in r.get("message", ""), "the limit is named: " + r.get("message", ""))
    c.close()
    c = Client(port=PORT, src=src(9, 1))
    r = c.request("register", user="t1", password="pw")
    check(r["op"] == "ok", "another address still registers")
    c.close()
    st = d.stats()
    check(st["limit_register"] >= 5, "stats: limit_register %d" % st["limit_register"])
    stop(d)


def nat_and_nul(work):
    log("# row 7: lockouts per address not reset by another user; NUL; set_unified size")
    d = start(work, "row7", {"login-failures-per-address": 6, "max-unified-members": 2000})
    d.add_user("mallory", "mallory-pw")
    d.add_user("alice", "alice-pw")
    c = Client(port=PORT, src=src(10, 1))
    for i in range(5):
        r = c.login("nobody%d" % i, "x")
        check(r["code"] == "auth_failed", "failure %d from one address" % (i + 1))
    r = c.login("mallory", "mallory-pw")
    check(r["op"] == "ok", "mallory logs in to her own account from the same address")
    c.close()
    c = Client(port=PORT, src=src(10, 1))
    r = c.login("nobody9", "x")
    check(r["code"] == "auth_failed", "failure 6 from one address")
    r = c.login("alice", "alice-pw")
    check(r["op"] == "error" and r["code"] == "limit",
          "the address is locked after 6 failures: mallory's success in between did not reset it")
    c.close()
    c = Client(port=PORT, src=src(11, 1))
    r = c.login("alice", "alice-pw")
    check(r["op"] == "ok", "alice from another address logs in")

    # NUL in addresses and bodies: bad_request, nothing sent
    r = c.request("send", to={"account": 1, "address": "b\x00ob"}, body="hi")
    check(r["op"] == "error" and r["code"] == "bad_request" and "NUL" in r["message"],
          "send to b\\0ob -> bad_request naming NUL: %r" % r)
    r = c.request("send", to={"account": 1, "address": "bob"}, body="a\x00b")
    check(r["op"] == "error" and r["code"] == "bad_request" and "NUL" in r["message"], "body with NUL -> bad_request")
    r = c.request("link", network="irc", login="b\x00ob", password="", server=server(1), tls="none")
    check(r["op"] == "error" and r["code"] == "bad_request" and "NUL" in r["message"], "link login with NUL: %r" % r)
    r = c.request("link", network="irc", login="bob", password="p\x00w", server=server(1), tls="none")
    check(r["op"] == "error" and r["code"] == "bad_request", "link password with NUL")
    acc = c.call("link", network="irc", login="alicebot", password="", server=server(1), tls="none")["account"]
    r = c.request("add_contact", account=acc, address="b\x00ob")
    check(r["op"] == "error" and r["code"] == "bad_request", "add_contact address with NUL")
    r = c.request("set_unified", contacts=[{"name": "B", "members": [{"account": acc, "address": "b\x00ob"}]}])
    check(r["op"] == "error" and r["code"] == "bad_request", "set_unified member address with NUL")

    # set_unified: 38,000 members -> limit at once; then 2000 with a duplicate at the end
    big = [{"name": "c%d" % i, "members": [{"account": acc, "address": "n%d_%d" % (i, j)} for j in range(64)]}
           for i in range(600)]
    r = c.request("set_unified", contacts=big)
    check(r["op"] == "error" and r["code"] == "limit" and "max-unified-members" in r["message"],
          "set_unified with 38,400 members -> limit naming max-unified-members")
    dup = [{"name": "c%d" % i, "members": [{"account": acc, "address": "n%d" % i}]} for i in range(1999)]
    dup.append({"name": "last", "members": [{"account": acc, "address": "n0"}]})
    r = c.request("set_unified", contacts=dup)
    check(r["op"] == "error" and r["code"] == "bad_request" and "listed twice" in r["message"],
          "a duplicate among 2000 members -> bad_request: " + r.get("message", ""))
    ok = [{"name": "c%d" % i, "members": [{"account": acc, "address": "n%d" % i}]} for i in range(2000)]
    r = c.request("set_unified", contacts=ok)
    check(r["op"] == "ok" and len(r["contacts"]) == 2000, "2000 members -> ok")
    r = c.request("ping")
    check(r["op"] == "ok", "the appliance answers after")
    # the frame limit: 3800 contacts with 255-byte names fit a request, not the reply
    fat = [{"name": "x" * 255, "members": []} for _ in range(3800)]
    r = c.request("set_unified", contacts=fat)
    check(r["op"] == "error" and r["code"] == "limit" and "frame" in r["message"],
          "a unified list over the frame limit -> limit (not a lost reply)")
    r = c.request("unified")
    check(r["op"] == "ok" and len(r["contacts"]) == 2000, "the stored list is unchanged")
    c.close()
    stop(d)


def main():
    work = tempfile.mkdtemp(prefix="imfuse-auth-")
    log("# work directory " + work)
    row1_pipelined_guesses(work)
    flood_order(work)
    registers(work)
    nat_and_nul(work)


if __name__ == "__main__":
    run(main)
