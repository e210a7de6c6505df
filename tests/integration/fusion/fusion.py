"""Fusion across three networks (issue 3): one unified contact "Bob" with
members on XMPP (prosody), IRC (ngircd or inspircd, argv[1]) and SIP
(kamailio).  alice sends three messages while her accounts go down one by
one; each must leave on the expected network and reach bob's real client
there.  bob answers on each network; alice receives every answer tagged with
the same unified contact.  Run by fusion.sh inside a private network namespace.
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import harness  # noqa: E402
from harness import JsonPeer, Daemon, lib, run, stop_at_end, HERE as LIB  # noqa: E402
from imclient import Client  # noqa: E402
from testenv import SERVER_ADDR, server  # noqa: E402

IRCD = sys.argv[1] if len(sys.argv) > 1 else "ngircd"
XMPP_PORT, IRC_PORT, SIP_PORT, IMFUSE_PORT = 15222, 16667, 15060, 17700
PROSODY = "prosody_start %%s %d a.test" % XMPP_PORT


def check(cond, what):
    harness.check(cond, "[%s] %s" % (IRCD, what))


def state_is(c, account, states, timeout=60.0):
    return c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == account
                        and e.get("state") in states, timeout, "account %d in %s" % (account, states))


def xmpp_bob(ca):
    p = JsonPeer("xmpp bob", [os.path.join(LIB, "xmpp_peer.py"), "bob@a.test", "pw-bob",
                              SERVER_ADDR, str(XMPP_PORT), ca])
    p.expect(lambda e: e["ev"] == "online", "xmpp bob online")
    return p


def irc_bob():
    p = JsonPeer("irc bob", [os.path.join(LIB, "irc_peer.py"), "bob", SERVER_ADDR, str(IRC_PORT)])
    p.expect(lambda e: e["ev"] == "online", "irc bob online")
    return p


def main():
    work = tempfile.mkdtemp(prefix="imfuse-fusion-%s-" % IRCD)
    pdir, idir, kdir = (os.path.join(work, x) for x in ("prosody", "ircd", "kamailio"))
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    stop_at_end("ircd.sh", "%s_stop %s" % (IRCD, idir))
    stop_at_end("kamailio.sh", "kamailio_stop %s" % kdir)
    os.makedirs(idir)
    lib("prosody.sh", "prosody_set_roster %s alice a.test '[\"bob@a.test\"] = {subscription=\"both\"; groups={}; name=\"Bob\"};'" % pdir)
    lib("prosody.sh", "prosody_set_roster %s bob a.test '[\"alice@a.test\"] = {subscription=\"both\"; groups={}; name=\"Alice\"};'" % pdir)
    lib("prosody.sh", PROSODY % pdir)
    lib("prosody.sh", "prosody_adduser %s alice a.test pw-alice && prosody_adduser %s bob a.test pw-bob" % (pdir, pdir))
    ca = os.path.join(pdir, "ca.pem")
    lib("prosody.sh", "prosody_cafile %s >/dev/null" % pdir)
    lib("ircd.sh", "%s_start %s %d" % (IRCD, idir, IRC_PORT))
    lib("kamailio.sh", "kamailio_adduser %s alice sip.test pw-alice && kamailio_adduser %s bob sip.test pw-bob"
        % (kdir, kdir))
    lib("kamailio.sh", "kamailio_start %s %d sip.test" % (kdir, SIP_PORT))

    d = Daemon(work, IMFUSE_PORT, ca)
    d.start()
    r = d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n")
    check(r.returncode == 0, "imfusectl user add alice")

    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "alice-secret")["op"] == "ok", "alice logs in")
    ax = c.call("link", network="xmpp", login="alice@a.test", password="pw-alice",
                server=server(XMPP_PORT), tls="starttls")["account"]
    ai = c.call("link", network="irc", login="alice", password="",
                server=server(IRC_PORT), tls="none")["account"]
    asip = c.call("link", network="sip", login="sip:alice@sip.test", password="pw-alice",
                  server=server(SIP_PORT), tls="none")["account"]
    for a in (ax, ai, asip):
        state_is(c, a, ("online",), 30)
    check(True, "three accounts online: xmpp %d, irc %d, sip %d" % (ax, ai, asip))
    c.call("add_contact", account=ai, address="bob", name="Bob")
    c.call("add_contact", account=asip, address="bob@sip.test", name="Bob")
    allc = sorted((x["network"], x["address"]) for x in c.call("contacts")["contacts"])
    check(allc == [("irc", "bob"), ("sip", "sip:bob@sip.test"), ("xmpp", "bob@a.test")],
          "contacts on three networks: %r" % allc)

    bx, bi = xmpp_bob(ca), irc_bob()
    bs = JsonPeer("sip bob", [os.path.join(LIB, "sip_peer.py"), "bob", "sip.test", "pw-bob",
                              SERVER_ADDR, str(SIP_PORT)])
    bs.expect(lambda e: e["ev"] == "online", "sip bob online")

    uid = c.call("set_unified", contacts=[{"name": "Bob", "prefer": ax, "members": [
        {"account": ax, "address": "bob@a.test"}, {"account": ai, "address": "bob"},
        {"account": asip, "address": "sip:bob@sip.test"}]}])["contacts"][0]["id"]

    # 1. everything up: the preferred member (XMPP)
    r = c.call("send", to={"contact": uid}, body="one")
    check(r["network"] == "xmpp" and r["account"] == ax, "message 1 routed to xmpp: %r" % r)
    check(bx.expect(lambda e: e["ev"] == "message", "xmpp msg")["body"] == "one",
          "message 1 received by bob's XMPP client")

    # 2. XMPP down: the first member in list order whose account is online (IRC)
    bx.quit()
    lib("prosody.sh", "prosody_stop %s" % pdir)
    state_is(c, ax, ("offline",), 20)
    r = c.call("send", to={"contact": uid}, body="two")
    check(r["network"] == "irc" and r["account"] == ai, "message 2 routed to irc: %r" % r)
    check(bi.expect(lambda e: e["ev"] == "message", "irc msg")["body"] == "two",
          "message 2 received by bob's IRC client")

    # 3. IRC down too: SIP
    bi.quit()
    lib("ircd.sh", "%s_stop %s" % (IRCD, idir))
    state_is(c, ai, ("offline",), 20)
    r = c.call("send", to={"contact": uid}, body="three")
    check(r["network"] == "sip" and r["account"] == asip, "message 3 routed to sip: %r" % r)
    check(bs.expect(lambda e: e["ev"] == "message", "sip msg")["body"] == "three",
          "message 3 received by bob's SIP client")

    # 4. all down: account_offline
    bs.quit()
    lib("kamailio.sh", "kamailio_stop %s" % kdir)
    state_is(c, asip, ("offline",), 40)
    r = c.request("send", to={"contact": uid}, body="four")
    check(r["op"] == "error" and r["code"] == "account_offline", "no account online -> account_offline")

    # 5. servers back; bob answers on each network, all tagged with the unified contact
    lib("prosody.sh", PROSODY % pdir)
    lib("ircd.sh", "%s_start %s %d" % (IRCD, idir, IRC_PORT))
    lib("kamailio.sh", "kamailio_start %s %d sip.test" % (kdir, SIP_PORT))
    for a in (ax, ai, asip):
        state_is(c, a, ("online",), 90)
    check(True, "all three accounts back online by themselves")
    bx, bi = xmpp_bob(ca), irc_bob()
    bs = JsonPeer("sip bob", [os.path.join(LIB, "sip_peer.py"), "bob", "sip.test", "pw-bob",
                              SERVER_ADDR, str(SIP_PORT)])
    bs.expect(lambda e: e["ev"] == "online", "sip bob online again")
    bx.send("alice@a.test", "answer on xmpp")
    bi.send("alice", "answer on irc")
    bs.send("sip:alice@sip.test", "answer on sip")
    got = {}
    for _ in range(3):
        m = c.wait_event(lambda e: e.get("op") == "message", 30, "bob's answers")
        got[m["network"]] = m
        c.call("ack", seq=m["seq"])
    check(sorted(got) == ["irc", "sip", "xmpp"], "answers arrived on all three networks")
    check(all(m["contact"] == uid for m in got.values()),
          "every answer carries the unified contact %d: %r" % (uid, {k: v.get("contact") for k, v in got.items()}))
    check(got["irc"]["from"] == "bob" and got["sip"]["from"] == "sip:bob@sip.test" and
          got["xmpp"]["from"] == "bob@a.test", "from in each network's address form")
    for p in (bx, bi, bs):
        p.quit()
    c.close()
    check(d.stop() == 0, "imfused exits 0")


if __name__ == "__main__":
    run(main)
