"""The XMPP flow with imfused --io dpdk on net_af_packet (issue: the kernel-bypass dataplane).

Run by af_packet.sh inside private network namespaces, with /usr/bin/python3:
imfused at the appliance address (testenv.py; 198.18.0.2) on one end of a
veth, lwIP on net_af_packet, in a namespace of its own; prosody, bob's XMPP
client and the imfuse clients at the server address (198.18.0.1) on the
other end.  The flows of tests/integration (xmpp/flow.sh, fusion, the
protocol checker) run on net_tap under tests/integration/dpdk/run.sh; this
one covers the other driver and what only a DPDK port has.  Every process
started here is stopped by PID at the end, even on failure.

Environment (set by af_packet.sh): testenv's, with IMFUSE_TEST_APPLIANCE_ARGS
selecting --io dpdk with the address and gateway taken from the interface,
and DPDK_RESTART_ARGS for the starts after kill -9 (the kernel no longer
holds them).

Steps: the address and gateway lent by the interface and the kernel's copy
removed; the operator adds alice; alice logs in over lwIP, links two XMPP
accounts (STARTTLS + SCRAM, certificates verified) that come online with
their contact lists; a unified contact; a message to bob's real client and
his reply; three messages while she is offline, delivered in order; kill -9
and restart with unacknowledged messages replayed; prosody stopped and
restarted (accounts offline, then back by themselves); a server at
127.0.0.1 or at the appliance's own address refused with a clear account
error; the per-lcore counters in imfusectl stats; exit 0 on SIGTERM.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (HERE as LIB, Daemon, JsonPeer, account_state, check, lib,  # noqa: E402
                     lib_out, log, presence_event, run, stop_at_end)
from imclient import Client  # noqa: E402
from testenv import APPLIANCE_ADDR, APPLIANCE_WRAP, SERVER_ADDR, hostport, server  # noqa: E402

XMPP_PORT = 15222
IMFUSE_PORT = 17700


def peer(jid, password, cafile):
    p = JsonPeer(jid, [os.path.join(LIB, "xmpp_peer.py"), jid, password, SERVER_ADDR, str(XMPP_PORT), cafile])
    p.expect(lambda e: e["ev"] == "online", "peer %s online" % jid)
    return p


def wait_states(c, want, timeout=60.0):
    end = time.monotonic() + timeout
    while True:
        accs = {a["account"]: a["state"] for a in c.call("accounts")["accounts"]}
        if all(accs.get(k) == v for k, v in want.items()):
            return True
        if time.monotonic() > end:
            raise TimeoutError("accounts %r, wanted %r" % (accs, want))
        time.sleep(0.2)


def prosody(cmd):
    lib("prosody.sh", cmd)


def main():
    work = tempfile.mkdtemp(prefix="imfuse-dpdk-")
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    log("# net_af_packet: imfused at %s on a DPDK port, servers at %s; work directory %s"
        % (APPLIANCE_ADDR, SERVER_ADDR, work))

    # ---- prosody on the kernel side ---------------------------------------------
    prosody("prosody_set_roster %s alice a.test '[\"bob@a.test\"] = {subscription=\"both\"; "
            "groups={Friends=true}; name=\"Bob A\"};'" % pdir)
    prosody("prosody_set_roster %s bob a.test '[\"alice@a.test\"] = {subscription=\"both\"; groups={}; "
            "name=\"Alice\"};'" % pdir)
    prosody("prosody_set_roster %s al b.test '[\"bob@b.test\"] = {subscription=\"both\"; groups={}; "
            "name=\"Bob B\"};'" % pdir)
    start = "PROSODY_DISABLE_PLAIN=1 prosody_start %s %d a.test b.test" % (pdir, XMPP_PORT)
    prosody(start)
    for user, host in (("alice", "a.test"), ("bob", "a.test"), ("al", "b.test"), ("bob", "b.test")):
        prosody("prosody_adduser %s %s %s pw-%s-%s" % (pdir, user, host, user, host))
    cafile = lib_out("prosody.sh", "prosody_cafile %s" % pdir)

    d = Daemon(work, IMFUSE_PORT, cafile)
    d.start()
    check(True, "imfused --io dpdk listens on %s:%d (lwIP on net_af_packet)" % (APPLIANCE_ADDR, IMFUSE_PORT))
    logtext = open(d.logpath).read()
    check("dpdk-address taken from imf-app: %s/24" % APPLIANCE_ADDR in logtext,
          "af_packet: the address was taken from the interface")
    check("dpdk gateway %s" % SERVER_ADDR in logtext, "af_packet: dpdk-gateway auto found %s" % SERVER_ADDR)
    out = subprocess.run(APPLIANCE_WRAP + ["ip", "-4", "addr", "show", "dev", "imf-app"], capture_output=True,
                         text=True).stdout
    check(APPLIANCE_ADDR not in out, "af_packet: the kernel no longer holds %s (%r)" % (APPLIANCE_ADDR, out.strip()))
    d.extra = os.environ["DPDK_RESTART_ARGS"].split()

    # ---- a. the operator creates alice -------------------------------------------
    r = d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n")
    check(r.returncode == 0, "a. imfusectl user add alice (%s)" % r.stderr.strip())

    # ---- b. login over lwIP, two accounts, contact lists ----------------------------
    c = Client(port=IMFUSE_PORT)
    r = c.login("alice", "alice-secret", "phone")
    check(r["op"] == "ok" and r["queued"] == 0, "b. alice logs in through the DPDK port")
    srv = server(XMPP_PORT)
    a1 = c.call("link", network="xmpp", login="alice@a.test", password="pw-alice-a.test", server=srv,
                tls="starttls", name="A")["account"]
    a2 = c.call("link", network="xmpp", login="al@b.test", password="pw-al-b.test", server=srv,
                tls="starttls", name="B")["account"]
    account_state(c, a1, ("online",))
    account_state(c, a2, ("online",))
    check(True, "b. both emulated sessions online over lwIP (STARTTLS + SCRAM, certificates verified)")
    e1 = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a1, 20, "contacts a1")
    check([x["address"] for x in e1["contacts"]] == ["bob@a.test"] and e1["contacts"][0]["name"] == "Bob A",
          "b. contact list of alice@a.test: %r" % e1["contacts"])

    # ---- c. unified contact --------------------------------------------------------
    r = c.call("set_unified", contacts=[{"name": "Bob", "prefer": a1, "members": [
        {"account": a1, "address": "bob@a.test"}, {"account": a2, "address": "bob@b.test"}]}])
    bob_id = r["contacts"][0]["id"]

    # ---- d. to bob's real client ------------------------------------------------------
    bob = peer("bob@a.test", "pw-bob-a.test", cafile)
    presence_event(c, a1, "bob@a.test", "available", 20)
    body = "hello over DPDK <Bob> & \"friends\" \u00e9\U0001F600"
    r = c.call("send", to={"contact": bob_id}, body=body, cid="m1")
    check(r["account"] == a1 and r["address"] == "bob@a.test", "d. send routed to the preferred member")
    got = bob.expect(lambda e: e["ev"] == "message", "message from alice")
    check(got["from"] == "alice@a.test" and got["body"] == body, "d. bob's XMPP client received it intact")

    # ---- e. bob replies ------------------------------------------------------------------
    bob.send("alice@a.test", "hi alice")
    m = c.wait_event(lambda e: e.get("op") == "message", 20, "message")
    check(m["from"] == "bob@a.test" and m["body"] == "hi alice" and m["contact"] == bob_id,
          "e. reply pushed with seq and unified id")
    c.call("ack", seq=m["seq"])
    last_seq = m["seq"]

    # ---- f. offline, in order ---------------------------------------------------------------
    c.call("logout")
    c.close()
    for i in range(3):
        bob.send("alice@a.test", "offline %d" % i)
    time.sleep(1.0)
    c = Client(port=IMFUSE_PORT)
    r = c.login("alice", "alice-secret", "laptop")
    check(r["op"] == "ok" and r["queued"] == 3, "f. login reports 3 queued (%r)" % r)
    ms = [c.wait_event(lambda e: e.get("op") == "message", 10, "queued message") for _ in range(3)]
    check([x["body"] for x in ms] == ["offline 0", "offline 1", "offline 2"] and ms[0]["seq"] > last_seq,
          "f. all 3 delivered in order")
    c.call("ack", seq=ms[0]["seq"])

    # ---- g. kill -9 and restart ---------------------------------------------------------------
    d.kill9()
    c.close()
    d.start()
    c = Client(port=IMFUSE_PORT)
    r = c.login("alice", "alice-secret", "laptop")
    check(r["op"] == "ok" and r["queued"] == 2, "g. after kill -9, 2 unacknowledged remain (%r)" % r)
    ms = [c.wait_event(lambda e: e.get("op") == "message", 10, "replayed message") for _ in range(2)]
    check([x["body"] for x in ms] == ["offline 1", "offline 2"], "g. replayed in order; the acked one is not")
    c.call("ack", seq=ms[-1]["seq"])
    wait_states(c, {a1: "online", a2: "online"})
    check(True, "g. both accounts back online over lwIP after the restart")

    # ---- h. prosody down and back --------------------------------------------------------------
    bob.quit()
    prosody("prosody_stop %s" % pdir)
    account_state(c, a1, ("offline",), 20)
    check(True, "h. prosody stopped -> accounts offline")
    prosody(start)
    account_state(c, a1, ("online",), 60)
    account_state(c, a2, ("online",), 60)
    check(True, "h. prosody restarted -> back online by themselves")
    bob = peer("bob@a.test", "pw-bob-a.test", cafile)
    presence_event(c, a1, "bob@a.test", "available", 20)
    c.call("send", to={"account": a1, "address": "bob@a.test"}, body="after the restarts")
    got = bob.expect(lambda e: e["ev"] == "message", "message after the restarts")
    check(got["body"] == "after the restarts", "h. bob receives alice's message after both restarts")
    bob.send("alice@a.test", "me too")
    m = c.wait_event(lambda e: e.get("op") == "message" and e.get("body") == "me too", 20, "bob's answer")
    c.call("ack", seq=m["seq"])
    bob.quit()

    # ---- loopback and self refused with words, no crash ---------------------------------------
    for where, words in (("127.0.0.1:%d" % XMPP_PORT, "loopback"), (hostport(APPLIANCE_ADDR, 7700), "own")):
        a = c.call("link", network="xmpp", login="bob@b.test", password="pw-bob-b.test", server=where,
                   tls="starttls")["account"]
        e = c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == a and
                         e.get("state") in ("offline", "error") and words in e.get("detail", ""), 20,
                         "account refused (%s)" % words)
        check(True, "a server at %s is refused: %r" % (where, e.get("detail")))
        c.call("unlink", account=a)
    check(c.call("ping")["op"] == "ok", "imfused still serves after the refusals")

    # ---- counters ---------------------------------------------------------------------------------
    r = d.ctl_cmd("--json", "stats")
    st = json.loads(r.stdout)["stats"] if r.returncode == 0 else {}
    check(st.get("io_rx_packets", 0) > 0 and st.get("io_tx_packets", 0) > 0 and st.get("io_rx_bytes", 0) > 0,
          "imfusectl stats: packets and bytes per lcore (%s in, %s out)" % (st.get("io_rx_packets"),
                                                                         st.get("io_tx_packets")))
    check(st.get("tcp_open", 0) >= 3 and "tcp_retransmits" in st and "io_nombuf_drops" in st,
          "imfusectl stats: TCP connections open (%s), retransmits, drops" % st.get("tcp_open"))
    check(st.get("msgs_in", 0) >= 1 and st.get("msgs_out", 0) >= 1,
          "imfusectl stats: messages converted both ways (%s in, %s out)" % (st.get("msgs_in"), st.get("msgs_out")))

    c.close()
    rc = d.stop()
    check(rc == 0, "imfused --io dpdk exits 0 on SIGTERM (rc %s)" % rc)
    prosody("prosody_stop %s" % pdir)


if __name__ == "__main__":
    run(main)
