"""A full disk under the store loses nothing (DEVELOPERS.md: "full disks").

The daemon's data directory is a small tmpfs (diskfull.sh) that this driver
fills to the last byte while bob, on a real prosody, sends alice messages.
The commits that need room fail; the daemon stays up, says why, withholds
the XEP-0198 acknowledgements and keeps the messages for retry.  Once room
is made, every message is committed and alice, logging in, gets them all,
in order, once.
"""
import errno
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import JsonPeer, Daemon, check, lib, run, stop_at_end, HERE as LIB  # noqa: E402
from imclient import Client  # noqa: E402
from testenv import SERVER_ADDR, server  # noqa: E402

XMPP_PORT, IMFUSE_PORT = 15222, 17700
N = 30


def stats(d):
    r = d.ctl_cmd("stats", "--json")
    if r.returncode != 0:
        raise RuntimeError("imfusectl stats: " + r.stderr.strip())
    s = json.loads(r.stdout)
    return s.get("stats", s)


def wait_stat(d, pred, what, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = stats(d)
        if pred(s):
            return s
        time.sleep(0.2)
    raise TimeoutError("timed out waiting for %s; last stats %r" % (what, s))


def fill(path):
    """Write until the file system refuses, big chunks then small ones."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 18, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break


def main(work):
    var = os.path.join(work, "var")
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    lib("prosody.sh", "prosody_set_roster %s alice a.test '[\"bob@a.test\"] = {subscription=\"both\"; groups={}; name=\"Bob\"};'" % pdir)
    lib("prosody.sh", "prosody_set_roster %s bob a.test '[\"alice@a.test\"] = {subscription=\"both\"; groups={}; name=\"Alice\"};'" % pdir)
    lib("prosody.sh", "prosody_start %s %d a.test" % (pdir, XMPP_PORT))
    lib("prosody.sh", "prosody_adduser %s alice a.test pw-alice && prosody_adduser %s bob a.test pw-bob" % (pdir, pdir))
    ca = os.path.join(pdir, "ca.pem")
    lib("prosody.sh", "prosody_cafile %s >/dev/null" % pdir)

    d = Daemon(work, IMFUSE_PORT, ca)
    d.start()
    check(d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n").returncode == 0, "imfusectl user add alice")
    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "alice-secret")["op"] == "ok", "alice logs in")
    a = c.call("link", network="xmpp", login="alice@a.test", password="pw-alice",
               server=server(XMPP_PORT), tls="starttls")["account"]
    c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == a and e.get("state") == "online",
                 30, "account online")
    bob = JsonPeer("xmpp bob", [os.path.join(LIB, "xmpp_peer.py"), "bob@a.test", "pw-bob",
                                SERVER_ADDR, str(XMPP_PORT), ca])
    bob.expect(lambda e: e["ev"] == "online", "bob online")
    bob.send("alice@a.test", "before")
    m = c.wait_event(lambda e: e.get("op") == "message", 30, "the first message")
    check(m["body"] == "before", "with room on disk a message is pushed: %r" % m["body"])
    c.call("ack", seq=m["seq"])
    c.close()                                   # alice is offline from here on

    filler = os.path.join(var, "filler")
    fill(filler)
    st = os.statvfs(var)
    check(st.f_bavail == 0, "the store's file system is full (%d KiB in the filler)"
          % (os.path.getsize(filler) >> 10))
    before = stats(d)

    # Big bodies, so the commits need pages the store's free list cannot give.
    bodies = ["full-%02d %s" % (i, "x" * 3000) for i in range(N)]
    for b in bodies:
        bob.send("alice@a.test", b)
    s = wait_stat(d, lambda s: s["store_commit_failures"] > before["store_commit_failures"],
                  "a failed commit")
    check(True, "commits fail while the disk is full (%d failures so far)" % s["store_commit_failures"])
    time.sleep(2)                               # several retry rounds, all on a full disk
    check(d.p.poll() is None, "the daemon is still running")
    with open(d.logpath) as f:
        log = f.read()
    check("store commit failed" in log and "disk is full" in log,
          "the log says why: %r" % [ln for ln in log.splitlines() if "commit failed" in ln][:1])
    s = stats(d)
    check(s["msgs_committed"] - before["msgs_committed"] < N,
          "not every message could be committed (%d of %d)" % (s["msgs_committed"] - before["msgs_committed"], N))

    # A user request that must write: an error that says so, or (if the
    # store's free pages happened to suffice) a change really saved.
    c2 = Client(port=IMFUSE_PORT)
    check(c2.login("alice", "alice-secret")["op"] == "ok", "alice can log in on a full disk (login writes nothing)")
    r = c2.request("set_unified", contacts=[{"name": "Bob", "members": [{"account": a, "address": "bob@a.test"}]}])
    if r["op"] == "error":
        check(r["code"] == "internal" and "storage" in r.get("message", ""),
              "set_unified on a full disk -> error internal: %r" % r.get("message"))
    else:
        check(c2.call("unified")["contacts"][0]["name"] == "Bob", "set_unified saved despite the full disk")
    # A send on a full disk: refused with a clear error (then the same cid,
    # sent again later, must really go out) or, if it fitted, sent.
    r = c2.request("send", to={"account": a, "address": "bob@a.test"}, body="sent on a full disk", cid="full-1")
    send_refused = r["op"] == "error"
    if send_refused:
        check(r["code"] == "internal" and "storage" in r.get("message", ""),
              "send on a full disk -> error internal: %r" % r.get("message"))
    else:
        check(r.get("msg", 0) > 0, "send on a full disk accepted (it fitted): msg %r" % r.get("msg"))

    os.remove(filler)
    s = wait_stat(d, lambda s: s["msgs_committed"] - before["msgs_committed"] >= N,
                  "all %d messages committed once there is room" % N, 90)
    check(True, "room again: all %d messages committed (%d failed commits in all)"
          % (N, s["store_commit_failures"] - before["store_commit_failures"]))

    r = c2.request("send", to={"account": a, "address": "bob@a.test"}, body="sent on a full disk", cid="full-1")
    check(r["op"] == "ok" and r.get("cid") == "full-1", "the same cid again with room: ok, msg %r" % r.get("msg"))
    e = bob.expect(lambda e: e["ev"] == "message", "the message sent on a full disk")
    check(e["body"] == "sent on a full disk", "bob received it (%s before)" % ("refused" if send_refused else "accepted"))
    try:
        e = bob.expect(lambda e: e["ev"] == "message", "a duplicate", timeout=3)
    except TimeoutError:
        e = None
    check(e is None, "and once: %r" % e)
    c2.close()

    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "alice-secret")["op"] == "ok", "alice logs in again")
    got = []
    while len(got) < N:
        m = c.wait_event(lambda e: e.get("op") == "message", 30, "message %d of %d" % (len(got) + 1, N))
        got.append(m["body"])
        c.call("ack", seq=m["seq"])
    check(got == bodies, "all %d messages delivered in order, none lost" % N)
    try:
        extra = c.wait_event(lambda e: e.get("op") == "message", 3, "no more")
    except TimeoutError:
        extra = None
    check(extra is None, "and each once (no duplicate after the retries): %r" % (extra and extra["body"][:8]))
    c.close()

    # A restart while the disk is full: what the store could not take was
    # never acknowledged to the server (XEP-0198), so the server keeps it
    # (prosody puts unacknowledged messages in offline storage) and it comes
    # back after the restart.
    fill(filler)
    before = stats(d)
    # More than the free pages the first round left in the store.
    later = ["restart-%02d %s" % (i, "y" * 3000) for i in range(2 * N)]
    for b in later:
        bob.send("alice@a.test", b)
    s = wait_stat(d, lambda s: s["store_commit_failures"] > before["store_commit_failures"], "a failed commit")
    time.sleep(1)
    s = stats(d)
    check(s["msgs_committed"] - before["msgs_committed"] < len(later),
          "%d of the %d messages committed before the restart" % (s["msgs_committed"] - before["msgs_committed"],
                                                                   len(later)))
    check(d.stop() == 0, "imfused stopped (SIGTERM, exit 0) while the disk is full")
    os.remove(filler)
    d.start()
    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "alice-secret")["op"] == "ok", "alice logs in after the restart")
    got = []
    while len(got) < len(later):
        m = c.wait_event(lambda e: e.get("op") == "message", 60, "message %d of %d" % (len(got) + 1, len(later)))
        got.append(m["body"])
        c.call("ack", seq=m["seq"])
    check(got == later, "all %d arrived after the restart, in order, once (queued ones from the store, "
          "the rest from the server)" % len(later) if got == later else "order: %r" % [b[:10] for b in got])
    c.close()
    bob.quit()
    check(d.stop() == 0, "imfused exits 0")


if __name__ == "__main__":
    WORK = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="imfuse-diskfull-")
    run(main, WORK)
