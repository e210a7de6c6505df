"""SIP/SIMPLE through the real imfuse daemon against a real kamailio (issue 3),
with presence (SUBSCRIBE/NOTIFY, PUBLISH) through kamailio's presence and
presence_xml modules.

Run by sip.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

  1. alice (an imfuse user) links sip:alice@sip.test (tls none): REGISTER with
     digest auth -> account online
  2. add_contact sip:bob@sip.test -> contacts event (the list imfuse keeps);
     alice's session SUBSCRIBEs to bob's presence: nothing is published for
     him yet -> `presence sip:bob@sip.test offline`
  3. bob's own SIP UA (tests/integration/lib/sip_peer.py) registers and
     PUBLISHes open -> alice gets `available`; bob's UA SUBSCRIBEs to alice and
     sees the presence alice's session PUBLISHed: open.  alice sends to bob ->
     bob receives it (MESSAGE 407-challenged, relayed over alice's and bob's
     own connections); a second send works too
  4. bob sends -> alice gets a `message` event from sip:bob@sip.test, network sip
  5. bob PUBLISHes closed -> `offline`, open again -> `available`
  6. bob goes offline (removes his publication, un-REGISTERs) -> `offline`;
     alice's message is stored by msilo (202) and delivered when bob
     registers again
  7. a wrong linked password -> auth_failed
  8. unlink -> alice's publication is removed (bob's UA sees her closed),
     kamailio's location table no longer has alice (un-REGISTER), and bob's
     MESSAGE to alice is stored (202) instead of relayed
"""
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (HERE as LIB, Daemon, JsonPeer, account_state, check, lib, lib_out, log,  # noqa: E402
                     run, stop_at_end, stop_proc)
from imclient import Client  # noqa: E402
from testenv import APPLIANCE_ADDR, SERVER_ADDR, server  # noqa: E402

SIP_PORT = 15060
IMFUSE_PORT = 17710
DOMAIN = "sip.test"
BOB = "sip:bob@sip.test"
ALICE = "sip:alice@sip.test"

figures = {}


class SipUA(JsonPeer):
    """bob's real SIP user agent; registered once constructed."""

    def __init__(self, user, password):
        super().__init__("sip " + user, [os.path.join(LIB, "sip_peer.py"), user, DOMAIN, password,
                                         SERVER_ADDR, str(SIP_PORT)], fatal=("error", "closed"))
        self.online = self.expect(lambda e: e["ev"] == "online", "peer %s online" % user, 20)

    def cmd(self, **c):
        self.p.stdin.write(json.dumps(c) + "\n")
        self.p.stdin.flush()

    def send(self, to, body):
        self.cmd(cmd="send", to=to, body=body)
        return self.expect(lambda e: e["ev"] == "sent", "final answer to our MESSAGE", 40)

    def publish(self, basic):
        self.cmd(cmd="publish", basic=basic)
        return self.expect(lambda e: e["ev"] == "published" and e["basic"] == basic, "PUBLISH %s" % basic)

    def subscribe(self, to):
        self.cmd(cmd="subscribe", to=to)
        return self.expect(lambda e: e["ev"] == "subscribed" and e["to"] == to, "SUBSCRIBE %s" % to)

    def presence(self, frm, basic, timeout=30.0):
        """The next NOTIFY about frm whose PIDF says basic."""
        return self.expect(lambda e: e["ev"] == "presence" and e["from"] == frm and e["basic"] == basic,
                           "%s %s" % (frm, basic), timeout)

    def quit(self):
        try:
            self.cmd(cmd="quit")
            self.expect(lambda e: e["ev"] == "bye", "un-REGISTER", 10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        stop_proc(self.p, wait=3)


def next_presence(c, account, address, timeout=30.0):
    """The next presence event for address (whatever it says), so that the
    order of the changes is checked, not just that one happened once."""
    return c.wait_event(lambda e: e.get("op") == "presence" and e.get("account") == account
                        and e.get("address") == address, timeout,
                        "presence of %s on account %d" % (address, account))["presence"]


def location_has(kdir, user, addr):
    """Whether kamailio's location table binds user to a Contact at addr (the
    address the user's TCP connection comes from)."""
    return ("sip:%s@%s:" % (user, addr)) in lib_out("kamailio.sh", "kamailio_ctl %s ul.dump" % kdir)


def main():
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="imfuse-sip-")
    kdir = os.path.join(work, "kamailio")
    log("# work directory " + work)

    for user, pw in (("alice", "pw-alice"), ("bob", "pw-bob")):
        lib("kamailio.sh", "kamailio_adduser %s %s %s %s" % (kdir, user, DOMAIN, pw))
    stop_at_end("kamailio.sh", "kamailio_stop %s" % kdir)
    lib("kamailio.sh", "kamailio_start %s %d %s" % (kdir, SIP_PORT, DOMAIN))

    d = Daemon(work, IMFUSE_PORT)
    d.start()
    r = d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n")
    check(r.returncode == 0, "imfusectl user add alice (%s)" % r.stderr.strip())

    # ---- 1. link: REGISTER with digest auth ---------------------------------------
    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "alice-secret")["op"] == "ok", "alice logs in to imfuse")
    r = c.request("link", network="sip", login="sip:carol@sip.test", password="x",
                  server=server(SIP_PORT), tls="starttls")
    t0 = time.monotonic()
    a1 = c.call("link", network="sip", login="alice@SIP.test", password="pw-alice",
                server=server(SIP_PORT), tls="none", name="SIP")["account"]
    account_state(c, a1, ("online",), 20)
    figures["link -> online (REGISTER, 401, REGISTER, 200)"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(True, "1. sip account online (REGISTER with digest)")
    accs = {x["account"]: x for x in c.call("accounts")["accounts"]}
    check(accs[a1]["login"] == ALICE and accs[a1]["state"] == "online",
          "1. login normalised to sip:alice@sip.test: %r" % accs[a1])
    check(location_has(kdir, "alice", APPLIANCE_ADDR), "1. kamailio's location table has alice")
    if r["op"] == "ok":
        # tls=starttls is refused with a clear reason (at link or at start).
        e = account_state(c, r["account"], ("error",), 20)
        check("STARTTLS" in e.get("detail", ""), "tls=starttls refused: %r" % e.get("detail"))
        c.call("unlink", account=r["account"])
    else:
        check(r["code"] in ("bad_request", "unsupported"), "tls=starttls refused at link: %r" % r)

    # ---- 2. contacts kept by imfuse; presence subscribed --------------------------
    t0 = time.monotonic()
    c.call("add_contact", account=a1, address="bob@sip.test", name="Bob")
    e = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a1 and
                     any(x["address"] == BOB for x in e["contacts"]), 20, "contacts with bob")
    bob_entry = [x for x in e["contacts"] if x["address"] == BOB][0]
    check(bob_entry["network"] == "sip" and bob_entry["name"] == "Bob",
          "2. add_contact -> contacts event with sip:bob@sip.test: %r" % bob_entry)
    p = next_presence(c, a1, BOB)
    figures["add_contact -> first presence event (SUBSCRIBE, 200, NOTIFY)"] = \
        "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(p == "offline", "2. SUBSCRIBE to bob: nothing published for him -> offline (%s)" % p)

    # ---- 3. bob online; presence both ways; alice -> bob ----------------------------
    bob = SipUA("bob", "pw-bob")
    figures["bob's UA REGISTER with digest"] = "%d ms" % bob.online["ms"]
    check(location_has(kdir, "bob", SERVER_ADDR), "3. kamailio's location table has bob")
    t0 = time.monotonic()
    res = bob.publish("open")
    check(res["status"] == 200 and res["expires"] > 0, "3. bob's UA PUBLISHed open: %r" % res)
    p = next_presence(c, a1, BOB)
    figures["bob's PUBLISH open -> alice's presence event"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(p == "available", "3. bob published open -> alice gets presence %s available (%s)" % (BOB, p))
    contacts = {x["address"]: x for x in c.call("contacts")["contacts"]}
    check(contacts[BOB]["presence"] == "available", "3. contacts lists bob available: %r" % contacts[BOB])
    res = bob.subscribe(ALICE)
    check(res["status"] in (200, 202), "3. bob's UA SUBSCRIBEd to alice: %r" % res)
    e = bob.presence(ALICE, "open")
    check(e["state"].startswith("active"), "3. bob's UA sees alice's PUBLISHed presence: open (%r)" % e)

    t0 = time.monotonic()
    r = c.call("send", to={"account": a1, "address": BOB}, body="hello bob \u00e9\U0001F600")
    check(r["network"] == "sip" and r["address"] == BOB, "3. send accepted: %r" % r)
    got = bob.expect(lambda e: e["ev"] == "message", "message from alice")
    figures["alice send -> bob's UA receives"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(got["from"] == ALICE and got["body"] == "hello bob \u00e9\U0001F600" and
          got["ctype"].lower().startswith("text/plain"), "3. bob's SIP UA received it intact: %r" % got)
    c.call("send", to={"account": a1, "address": BOB}, body="second")
    got = bob.expect(lambda e: e["ev"] == "message", "second message")
    check(got["body"] == "second", "3. a second send works (outbox not stuck)")

    # ---- 4. bob -> alice -----------------------------------------------------------
    t0 = time.monotonic()
    res = bob.send(ALICE, "hi alice <&>")
    m = c.wait_event(lambda e: e.get("op") == "message", 20, "message from bob")
    figures["bob send -> alice's imfuse client event"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(res["status"] == 200, "4. bob's MESSAGE answered 200 by alice's session (after the commit): %r" % res)
    check(m["from"] == BOB and m["network"] == "sip" and m["account"] == a1 and
          m["body"] == "hi alice <&>", "4. alice got a message event: %r" % m)
    c.call("ack", seq=m["seq"])

    # ---- 5. bob closed, then open again ---------------------------------------------
    t0 = time.monotonic()
    bob.publish("closed")
    p = next_presence(c, a1, BOB)
    figures["bob's PUBLISH closed -> alice's presence event"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(p == "offline", "5. bob published closed -> alice gets offline (%s)" % p)
    bob.publish("open")
    p = next_presence(c, a1, BOB)
    check(p == "available", "5. bob published open again -> available (%s)" % p)

    # ---- 6. bob offline: presence, then stored by msilo and delivered at his next REGISTER
    bob.quit()
    p = next_presence(c, a1, BOB)
    check(p == "offline", "6. bob removed his publication and un-REGISTERed -> offline (%s)" % p)
    check(not location_has(kdir, "bob", SERVER_ADDR), "6. bob un-REGISTERed")
    c.call("send", to={"account": a1, "address": BOB}, body="while you were away")
    time.sleep(1.0)
    st = {x["account"]: x for x in c.call("accounts")["accounts"]}
    check(st[a1]["state"] == "online", "6. the account stays online after the 202")
    bob = SipUA("bob", "pw-bob")
    got = bob.expect(lambda e: e["ev"] == "message", "stored message", 20)
    check(got["body"] == "while you were away" and got["from"] == ALICE,
          "6. msilo delivered the stored message at bob's REGISTER: %r" % got)
    bob.subscribe(ALICE)
    bob.presence(ALICE, "open")

    # ---- 7. wrong password -----------------------------------------------------------
    a2 = c.call("link", network="sip", login=BOB, password="not-it",
                server=server(SIP_PORT), tls="none")["account"]
    e = account_state(c, a2, ("auth_failed",), 20)
    check("401" in e.get("detail", ""), "7. wrong password -> auth_failed: %r" % e.get("detail"))
    c.call("unlink", account=a2)

    # ---- 8. unlink: publication removed, un-REGISTER ----------------------------------
    c.call("unlink", account=a1)
    e = bob.presence(ALICE, "closed")
    check(True, "8. unlink -> bob's UA sees alice closed (publication removed): %r" % e)
    end = time.monotonic() + 5
    while location_has(kdir, "alice", APPLIANCE_ADDR) and time.monotonic() < end:
        time.sleep(0.1)
    check(not location_has(kdir, "alice", APPLIANCE_ADDR), "8. unlink -> alice's binding removed from kamailio (un-REGISTER)")
    res = bob.send(ALICE, "are you there?")
    check(res["status"] == 202, "8. bob's MESSAGE to alice is now stored, not relayed: %r" % res)

    bob.quit()
    c.close()
    rc = d.stop()
    check(rc == 0, "imfused exits 0 on SIGTERM (rc %s)" % rc)
    figures["whole test"] = "%.1f s" % (time.monotonic() - t_start)
    for k, v in figures.items():
        log("# %s: %s" % (k, v))


if __name__ == "__main__":
    run(main)
