"""Server-chosen work bounded (issue 9, row 3), against a real prosody whose
users were registered with high SCRAM iteration counts
(default_iteration_count).  Run by scram.sh inside a private network
namespace, with /usr/bin/python3.

  - big.test asks for 1,000,000 iterations: the account goes to `error`
    with a detail naming the count (not auth_failed), and nothing is derived;
  - 30 accounts on cap.test (100,000 iterations, the cap) log in while
    another client keeps pinging: the derivations run on the auth pool
    (kdf_requests, kdf_derived), and pings are answered while they are still
    pending, so the dataplane is never the one doing them;
  - prosody restarts: all 30 reconnect with keys from the cache
    (kdf_cache_hits), nothing derived again.
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import check, lib, lib_out, log, run, start_daemon, stop_at_end, stop_proc  # noqa: E402
from imclient import Client  # noqa: E402
from testenv import server  # noqa: E402

XMPP_PORT = 15242
PORT = 17730
N = 30
ENV = "PROSODY_ITERATIONS='big.test=1000000 cap.test=100000' "


def prosody(cmd):
    lib("prosody.sh", ENV + cmd)


def states(c):
    return {x["account"]: (x["state"], x.get("detail", "")) for x in c.call("accounts")["accounts"]}


def wait_all_online(c, ids, timeout=180.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = states(c)
        if all(st.get(i, ("",))[0] == "online" for i in ids):
            return True
        time.sleep(0.3)
    return False


def main():
    work = tempfile.mkdtemp(prefix="imfuse-scram-")
    log("# work directory " + work)
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    prosody("PROSODY_DISABLE_PLAIN=1 prosody_start %s %d big.test cap.test" % (pdir, XMPP_PORT))
    prosody("prosody_adduser %s victim big.test pw-victim" % pdir)
    for i in range(N):
        prosody("prosody_adduser %s u%d cap.test pw-u%d" % (pdir, i, i))
    cafile = lib_out("prosody.sh", "prosody_cafile %s" % pdir)

    d = start_daemon(work, "d", PORT, cafile)
    d.add_user("me", "me-pw")
    c = Client(port=PORT)
    check(c.login("me", "me-pw")["op"] == "ok", "me logs in")

    # ---- a server asking for 1,000,000 iterations -------------------------------
    big = c.call("link", network="xmpp", login="victim@big.test", password="pw-victim",
                 server=server(XMPP_PORT), tls="starttls")["account"]
    e = c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == big and
                     e.get("state") in ("error", "auth_failed", "online"), 60, "big.test's outcome")
    check(e["state"] == "error" and "1000000 iterations" in e.get("detail", "") and
          "100000" in e.get("detail", ""),
          "i=1,000,000 -> account error naming the count and the cap: %r" % e.get("detail"))
    st = d.stats()
    check(st["kdf_requests"] == 0 and st["kdf_derived"] == 0, "nothing was derived for it")
    c.call("unlink", account=big)

    # ---- 30 accounts at the cap, a client pinging meanwhile ----------------------
    pinger = Client(port=PORT)
    check(pinger.login("me", "me-pw")["op"] == "ok", "a second client logs in")
    rs = c.pipeline([("link", {"network": "xmpp", "login": "u%d@cap.test" % i, "password": "pw-u%d" % i,
                               "server": server(XMPP_PORT), "tls": "starttls"}) for i in range(N)])
    check(all(r["op"] == "ok" for r in rs), "30 accounts linked at once")
    ids = [r["account"] for r in rs]
    pings = pings_ok = answered_pending = 0
    end = time.monotonic() + 240
    while time.monotonic() < end:
        r = pinger.request("ping")
        pings += 1
        pings_ok += r["op"] == "ok"
        st = d.stats()
        if st["kdf_requests"] > st["kdf_derived"] + st["kdf_cache_hits"]:
            answered_pending += 1       # a ping answered while a derivation was out
        if st["kdf_derived"] + st["kdf_cache_hits"] >= N and wait_all_online(c, ids, 0.1):
            break
    check(wait_all_online(c, ids), "all %d accounts online (SCRAM at 100,000 iterations)" % N)
    st = d.stats()
    check(st["kdf_requests"] >= N and st["kdf_derived"] >= N,
          "the derivations went to the auth pool: kdf_requests %d, kdf_derived %d"
          % (st["kdf_requests"], st["kdf_derived"]))
    check(pings_ok == pings, "every ping answered (%d)" % pings)
    check(answered_pending >= 1, "pings were answered while derivations were pending (%d of %d pings)"
          % (answered_pending, pings))
    derived = st["kdf_derived"]

    # ---- reconnects cost nothing: the keys come from the cache -------------------
    prosody("prosody_stop %s" % pdir)
    end = time.monotonic() + 60
    while time.monotonic() < end and any(s[0] == "online" for s in states(c).values()):
        time.sleep(0.3)
    prosody("PROSODY_DISABLE_PLAIN=1 prosody_start %s %d big.test cap.test" % (pdir, XMPP_PORT))
    check(wait_all_online(c, ids), "after prosody's restart all %d accounts are online again" % N)
    st = d.stats()
    check(st["kdf_derived"] == derived and st["kdf_cache_hits"] >= N,
          "the reconnects derived nothing: kdf_derived %d (was %d), kdf_cache_hits %d"
          % (st["kdf_derived"], derived, st["kdf_cache_hits"]))
    check(pinger.request("ping")["op"] == "ok", "the other client still answered")
    pinger.close()
    c.close()
    check(stop_proc(d.p) == 0, "imfused exits 0")


if __name__ == "__main__":
    run(main)
