"""Hostile clients against the appliance's connection limits (limits.sh runs
this inside a private network namespace, as root).

Every section starts its own imfused with a config file, attacks it the way
issue 9 found it could be attacked, and checks the fixed behaviour: what the
client sees (a `limit` error, a closed connection, replies), the counters of
`imfusectl stats`, the log, and the daemon's memory and CPU time where the
attack was about them.  Nothing is timed: waits have deadlines only.

Run with /usr/bin/python3 (Debian's python3-msgpack)."""
import argparse
import os
import resource
import select
import struct
import subprocess
import sys
import time

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import check, log, procs, stop_proc  # noqa: E402
from daemon import MIB, Conn, frame, remember_pid  # noqa: E402
import daemon  # noqa: E402

PY = "/usr/bin/python3"
WORK = None


def Imfused(name, port, conf, **kw):
    return daemon.Imfused(WORK, name, port, conf, **kw)


def refused(m, what):
    """m is the {error limit} without id that a refused or limited connection gets."""
    return (m is not None and m.get("op") == "error" and m.get("code") == "limit" and "id" not in m
            and what in m.get("message", ""))


# ---------------------------------------------------------------------------------------
# 1. the pre-login timeout and the idle timeout

def timeouts():
    log("# 1. an unauthenticated connection that stays idle; a logged-in one that goes quiet")
    d = Imfused("timeouts", 17711, {"prelogin-timeout": 2, "idle-timeout": 4})
    d.start()
    d.adduser("alice", "alice-pw")
    idle = Conn(d.port)
    good = Conn(d.port)
    r = good.request("login", user="alice", password="alice-pw")
    check(r["op"] == "ok", "a client logs in within the pre-login timeout")
    m = idle.recv(timeout=30)
    check(refused(m, "prelogin-timeout"), "an idle unauthenticated connection gets {error limit} without "
          "id: %r" % m)
    check(idle.recv(timeout=10) is None, "... and is closed")
    check(good.request("ping")["op"] == "ok", "the logged-in client is not on the pre-login clock")
    m = good.recv(timeout=30)
    check(refused(m, "idle-timeout"), "idle-timeout (on here) closes a silent logged-in client: %r" % m)
    check(good.recv(timeout=10) is None, "... and its connection ends")
    st = d.stats()
    check(st["prelogin_timeouts"] >= 1 and st["idle_timeouts"] == 1,
          "counted: prelogin_timeouts %d, idle_timeouts %d" % (st["prelogin_timeouts"], st["idle_timeouts"]))
    d.stop()


# ---------------------------------------------------------------------------------------
# 2. 200 partial 1 MiB frames before login

def unread(port):
    """Bytes waiting in the receive queues of the daemon's sockets on port (this namespace)."""
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1].split(":")[1], 16) == port:
                total += int(p[4].split(":")[1], 16)
    return total

def memory():
    log("# 2. 200 connections, each with a partial 1 MiB frame, none logged in")
    d = Imfused("memory", 17712, {"prelogin-timeout": 300, "max-conns-per-address": 1000},
                asan="quarantine_size_mb=4:thread_local_quarantine_size_kb=64")
    d.start()
    d.adduser("alice", "alice-pw")
    base = d.rss()
    part = struct.pack(">I", MIB) + b"x" * (MIB - 1)       # one byte short of a whole frame
    conns = []
    for _ in range(200):
        c = Conn(d.port, timeout=20)
        try:
            c.sock.sendall(part)
        except OSError:
            pass                                            # closed for the budget meanwhile
        conns.append(c)
    end = time.monotonic() + 120
    while unread(d.port) and time.monotonic() < end:
        time.sleep(0.1)
    check(unread(d.port) == 0, "the daemon read everything sent to it")
    st = d.stats()
    rss = d.rss()
    log("  prelogin_bytes %d, clients_prelogin %d, prelogin_evicted %d; RSS %d MiB -> %d MiB" %
        (st["prelogin_bytes"], st["clients_prelogin"], st["prelogin_evicted"], base // MIB, rss // MIB))
    check(st["prelogin_bytes"] <= 32 * MIB, "the receive buffers of connections not logged in stay "
          "within prelogin-memory (32 MiB): %d bytes" % st["prelogin_bytes"])
    check(st["prelogin_evicted"] >= 150, "past it the connections with the largest partial frames were "
          "closed (%d)" % st["prelogin_evicted"])
    check(rss - base < 100 * MIB, "200 partial 1 MiB frames cost the daemon %d MiB (not 200)" %
          ((rss - base) // MIB))
    told = 0
    for c in conns:
        try:
            m = c.recv(timeout=0.5)
        except (TimeoutError, OSError):
            continue
        if refused(m, "prelogin-memory"):
            told += 1
    check(told >= 100, "the closed ones were told why ({error limit}: prelogin-memory), %d of them" % told)
    for c in conns:
        c.close()
    c = Conn(d.port)
    check(c.request("login", user="alice", password="alice-pw")["op"] == "ok" and
          c.request("ping")["op"] == "ok", "a real client still logs in")
    c.close()
    d.stop()


# ---------------------------------------------------------------------------------------
# 3. caps per address and in total

def verdict(c, timeout=10.0):
    """'ok' when the connection answers a ping, else the limit error's message."""
    try:
        c.send({"op": "ping", "id": 1})
    except OSError:
        pass
    try:
        m = c.recv(timeout)
    except TimeoutError:
        return "timeout"
    if m and m.get("op") == "ok":
        return "ok"
    if m and m.get("code") == "limit" and "id" not in m:
        return m.get("message", "")
    return repr(m)


def caps():
    log("# 3. max-conns-per-address and max-conns")
    d = Imfused("caps", 17713, {"max-conns": 30, "max-conns-per-address": 10})
    d.start()
    a = [Conn(d.port, "127.0.0.1") for _ in range(12)]
    v = [verdict(c) for c in a]
    check(v.count("ok") == 10 and sum("max-conns-per-address" in x for x in v) == 2,
          "12 connections from one address: 10 served, 2 refused with {error limit} (%r)" % v[-2:])
    b = [Conn(d.port, "127.0.0.2") for _ in range(10)] + [Conn(d.port, "127.0.0.3") for _ in range(10)]
    check(all(verdict(c) == "ok" for c in b), "10 more from each of two other addresses: served")
    e = [Conn(d.port, "127.0.0.4") for _ in range(3)]
    v = [verdict(c) for c in e]
    check(all("max-conns" in x and "per-address" not in x for x in v),
          "past max-conns (30) every new connection is refused: %r" % v[0])
    for c in a[:5]:
        c.close()
    d.wait_stat(lambda s: s["clients_open"] == 25, "5 closed")
    f = [Conn(d.port, "127.0.0.4") for _ in range(3)]
    check(all(verdict(c) == "ok" for c in f), "room again once some leave")
    st = d.stats()
    check(st["refused_per_address"] == 2 and st["refused_max_conns"] == 3,
          "counted: refused_per_address %d, refused_max_conns %d" % (st["refused_per_address"],
                                                                     st["refused_max_conns"]))
    for c in a + b + e + f:
        c.close()
    d.stop()


# ---------------------------------------------------------------------------------------
# 4. 1,200 connections against a 1,024-file limit; accept failing with EMFILE

def idle_cpu(d, what, secs=3.0):
    c0 = d.cpu()
    time.sleep(secs)
    used = d.cpu() - c0
    check(used < 0.2 * secs, "%s: the daemon is idle (%.2f s of CPU in %.0f s)" % (what, used, secs))


def settle(conns, timeout=90.0):
    """Ping every connection; return {conn: verdict} once each answered or was refused."""
    pending = {}
    for c in conns:
        try:
            c.send({"op": "ping", "id": 1})
        except OSError:
            pass
        pending[c.sock.fileno()] = c
    out = {}
    end = time.monotonic() + timeout
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending and time.monotonic() < end:
        ready = [fd for fd, _ in poller.poll(1000)]
        for fd in ready:
            if fd not in pending:
                continue
            poller.unregister(fd)
            c = pending[fd]
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            c.buf += data
            if len(c.buf) >= 4 and len(c.buf) >= 4 + struct.unpack(">I", c.buf[:4])[0]:
                m = msgpack.unpackb(c.buf[4:4 + struct.unpack(">I", c.buf[:4])[0]], raw=False)
                out[c] = "ok" if m.get("op") == "ok" else (m.get("message", "") if m.get("code") == "limit"
                                                          else repr(m))
                del pending[fd]
                if out[c] != "ok":
                    c.close()       # refused: let its lingering socket go
            elif not data:
                out[c] = "closed"
                del pending[fd]
                c.close()
            else:
                poller.register(fd, select.POLLIN)
    for c in pending.values():
        out[c] = "no answer"
    return out


def files():
    log("# 4. 1,200 connections against a 1,024-file limit, then accept failing with EMFILE")
    d = Imfused("files", 17714, {"max-conns-per-address": 100000, "prelogin-timeout": 3600}, nofile=1024)
    d.start()
    check("max-conns 10000 lowered to 768" in d.log(), "max-conns is kept below the file limit (768 of 1024)")
    conns = [Conn(d.port, timeout=30) for _ in range(1200)]
    v = settle(conns)
    served = [c for c in conns if v[c] == "ok"]
    refused_n = sum("max-conns" in x for x in v.values())
    check(len(served) == 768 and refused_n == 432,
          "768 connections served, 432 refused with {error limit} (%d, %d; others: %r)" %
          (len(served), refused_n, [x for x in v.values() if x != "ok" and "max-conns" not in x][:3]))
    idle_cpu(d, "768 idle connections, 432 refused")
    st = d.stats()
    check(st["clients_open"] == 768 and st["refused_max_conns"] == 432,
          "counted: clients_open %d, refused_max_conns %d" % (st["clients_open"], st["refused_max_conns"]))

    # accept failing for want of files: the listener pauses instead of spinning
    for c in served[:200]:
        c.close()
    d.wait_stat(lambda s: s["clients_open"] == 568, "200 closed")
    limit = d.fd_limit_leaving(20)
    resource.prlimit(d.p.pid, resource.RLIMIT_NOFILE, (limit, 1024))   # soft only
    waiting = [Conn(d.port, timeout=30) for _ in range(100)]
    end = time.monotonic() + 20
    while "accepting clients paused" not in d.log() and time.monotonic() < end:
        time.sleep(0.2)
    check("accepting clients paused" in d.log(), "accept fails with EMFILE: the log says so")
    idle_cpu(d, "80 connections waiting while accept fails with EMFILE")
    st = d.stats()      # the control socket's reserve file lets the operator in
    check(st["accept_paused"] > 0, "the listener pauses instead of spinning (accept_paused %d)" %
          st["accept_paused"])
    resource.prlimit(d.p.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    v = settle(waiting, 60)
    check(all(x == "ok" for x in v.values()), "once files are free again every waiting connection is "
          "served (%d of 100)" % sum(x == "ok" for x in v.values()))
    for c in served[200:] + waiting:
        c.close()
    d.stop()


# ---------------------------------------------------------------------------------------
# 5. a client that never reads its replies

def output():
    log("# 5. a logged-in client asks for a 450 KB reply 200 times and never reads")
    d = Imfused("output", 17715, {})
    d.start()
    d.adduser("alice", "alice-pw")
    c = Conn(d.port)
    check(c.request("login", user="alice", password="alice-pw")["op"] == "ok", "logged in")
    acc = c.request("link", network="xmpp", login="alice@a.test", password="pw", server="127.0.0.1:9",
                    tls="none")
    check(acc["op"] == "ok", "an account linked (its server is down: no matter)")
    uni = [{"name": "contact %04d " % i + "n" * 240, "members": [{"account": acc["account"],
            "address": "u%04d@a.test" % i}]} for i in range(1500)]
    r = c.request("set_unified", contacts=uni, timeout=60)
    check(r["op"] == "ok", "a unified list of 1,500 contacts stored")
    one = len(frame({"op": "ok", "id": 1 << 16, "contacts": r["contacts"]}))
    base = d.rss()
    first = 1 << 16                     # every id packs in 5 bytes
    n = 200
    c.sock.sendall(b"".join(frame({"op": "unified", "id": first + i}) for i in range(n)))
    # the replies would be n * one bytes: the daemon stops at its high watermark
    st = d.wait_stat(lambda s: s["clients_read_paused"] >= 1, "the daemon to stop reading the client")
    time.sleep(1.0)
    st = d.stats()
    grew = d.rss() - base
    log("  one reply %d KiB; the daemon's RSS +%d MiB; bytes_out %d KiB" % (one // 1024, grew // MIB,
                                                                          st["bytes_out"] // 1024))
    check(st["clients_dropped"] == 0, "the client is paused, not dropped (%d)" % st["clients_dropped"])
    check(grew < 64 * MIB, "the daemon holds little for it (RSS +%d MiB for %d MiB of replies)" %
          (grew // MIB, n * one // MIB))
    check(st["frames_in"] < 2 + 2 + n, "it stopped taking requests (%d of %d read)" % (st["frames_in"] - 4, n))
    got = 0
    ok = True
    while got < n:
        m = c.recv(timeout=60)
        if m is None:
            break
        if "id" not in m:
            continue                    # an account event
        ok = ok and m.get("op") == "ok" and m.get("id") == first + got and len(m.get("contacts", ())) == 1500
        got += 1
    check(got == n and ok, "once it reads, all %d replies arrive, whole and in order (%d)" % (n, got))
    check(d.stats()["clients_dropped"] == 0, "and the client was never dropped")
    c.close()
    d.stop()


# ---------------------------------------------------------------------------------------
# 6. a dead peer after login, found by TCP keepalive; a quiet live one is kept

HOLDER_CLIENT = r"""
import socket, struct, sys, time, msgpack
def frame(o):
    b = msgpack.packb(o, use_bin_type=True); return struct.pack(">I", len(b)) + b
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
s.sendall(frame({"op": "login", "id": 1, "user": "alice", "password": "alice-pw", "device": "dead"}))
buf = b""
while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
    buf += s.recv(65536)
print("ready" if msgpack.unpackb(buf[4:], raw=False).get("op") == "ok" else "failed", flush=True)
sys.stdin.read()
"""


def sh(*cmd):
    subprocess.run(list(cmd), check=True, capture_output=True)


def keepalive():
    log("# 6. a peer that vanishes after login (TCP keepalive), a live one that stays quiet")
    sh("ip", "link", "add", "imfka0", "type", "veth", "peer", "name", "imfka1")
    sh("ip", "addr", "add", "198.18.5.1/24", "dev", "imfka0")
    sh("ip", "link", "set", "imfka0", "up")
    holder = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    procs.append(holder)
    remember_pid(WORK, holder.pid)
    time.sleep(0.2)
    ns = ["nsenter", "-t", str(holder.pid), "-n"]
    sh("ip", "link", "set", "imfka1", "netns", str(holder.pid))
    sh(*ns, "ip", "link", "set", "lo", "up")
    sh(*ns, "ip", "addr", "add", "198.18.5.2/24", "dev", "imfka1")
    sh(*ns, "ip", "link", "set", "imfka1", "up")
    d = Imfused("keepalive", 17716, {"tcp-keepalive": 1}, listen_host="0.0.0.0")
    d.start()
    d.adduser("alice", "alice-pw")
    quiet = Conn(d.port)
    check(quiet.request("login", user="alice", password="alice-pw", device="quiet")["op"] == "ok",
          "a live client logs in and then stays quiet")
    dead = subprocess.Popen(ns + [PY, "-c", HOLDER_CLIENT, "198.18.5.1", str(d.port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    procs.append(dead)
    remember_pid(WORK, dead.pid)
    check(dead.stdout.readline().strip() == "ready", "a client in another namespace logs in over a veth")
    check(d.stats()["sessions"] == 2, "two sessions")
    sh(*ns, "ip", "link", "set", "imfka1", "down")      # its host is gone: nothing answers any more
    st = d.wait_stat(lambda s: s["clients_timed_out"] >= 1, "keepalive to give up on the dead peer", 60)
    check(st["sessions"] == 1, "the dead peer's session is closed by TCP keepalive (clients_timed_out %d)" %
          st["clients_timed_out"])
    check(quiet.request("ping")["op"] == "ok", "the live client, quiet all along, is still served")
    check("the peer stopped answering" in d.log(), "the log names the dead peer")
    quiet.close()
    stop_proc(dead)
    d.stop()
    stop_proc(holder)


# ---------------------------------------------------------------------------------------
# 7. the TLS listener's suites

def tls():
    log("# 7. the TLS listener offers ECDHE with AEAD suites only")
    dd = os.path.join(WORK, "tls")
    os.makedirs(dd, exist_ok=True)
    key, crt = os.path.join(dd, "key.pem"), os.path.join(dd, "crt.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=imfuse.test", "-keyout", key, "-out", crt], check=True, capture_output=True)
    d = Imfused("tls", 17717, {}, extra=["--listen-tls", "127.0.0.1:17718", "--tls-cert", crt,
                                         "--tls-key", key])
    d.start()

    def hello(cipher):
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:17718", "-tls1_2", "-cipher",
                            cipher, "-brief"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
        return r.returncode == 0 and "Ciphersuite" in r.stderr + r.stdout
    for c in ("AES128-SHA", "AES256-GCM-SHA384", "AES256-SHA256", "ECDHE-RSA-AES128-SHA",
              "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-GCM-SHA256"):
        check(not hello(c), "%s (static RSA, CBC or SHA-1, or finite-field DH) is refused" % c)
    for c in ("ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"):
        check(hello(c), "%s is accepted" % c)
    d.stop()


def main():
    global WORK
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    WORK = a.work
    for name, fn in (("timeouts", timeouts), ("memory", memory), ("caps", caps), ("files", files),
                     ("output", output), ("keepalive", keepalive), ("tls", tls)):
        if not a.only or name in a.only.split(","):
            fn()


if __name__ == "__main__":
    harness.run(main)
