"""The whole imfuse flow over XMPP against a real prosody (issue: foundation).

Run by flow.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

Steps (letters as in the issue):
  a. the operator creates alice with imfusectl
  b. alice logs in, links alice@a.test and al@b.test (STARTTLS + SCRAM, PLAIN
     disabled on the server, certificates verified) and receives both contact lists
  c. she stores a unified contact "Bob" = bob@a.test + bob@b.test
  d. she sends to it and bob's own XMPP client receives it
  e. bob replies while she is online: pushed with a seq and the unified id
  f. she logs out, bob sends 3, she logs in and gets all 3 in order
  g. kill -9 with unacknowledged messages, restart: replayed; acknowledged not
  h. wrong password, malformed frame (others untouched), prosody down and back
  plus: wrong certificate name refused; no linked password in clear in LMDB;
  the CLI tools (imfusectl, imfuse) used for real.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (BUILD, HERE as LIB, Daemon, JsonPeer, account_state, check, lib,  # noqa: E402
                     lib_out, log, presence_event, run, stop_at_end)
from imclient import Client  # noqa: E402
from testenv import APPLIANCE_ADDR, SERVER_ADDR, hostport, server  # noqa: E402

XMPP_PORT = 15222
# SCRAM is proven by disabling PLAIN on the server.
PROSODY_START = "PROSODY_DISABLE_PLAIN=1 prosody_start %%s %d a.test b.test" % XMPP_PORT
IMFUSE_PORT = 17700
IMFUSE_TLS_PORT = 17701


def prosody(cmd):
    lib("prosody.sh", cmd)


def peer(jid, password, cafile):
    """bob's real XMPP client (slixmpp), online."""
    p = JsonPeer(jid, [os.path.join(LIB, "xmpp_peer.py"), jid, password, SERVER_ADDR, str(XMPP_PORT), cafile])
    p.expect(lambda e: e["ev"] == "online", "peer %s online" % jid)
    return p


def wait_states(c, want, timeout=30.0):
    """Poll the accounts op until every account in want {id: state} has its state."""
    end = time.monotonic() + timeout
    while True:
        accs = {a["account"]: a["state"] for a in c.call("accounts")["accounts"]}
        if all(accs.get(k) == v for k, v in want.items()):
            return True
        if time.monotonic() > end:
            raise TimeoutError("accounts %r, wanted %r" % (accs, want))
        time.sleep(0.2)


def main():
    work = tempfile.mkdtemp(prefix="imfuse-flow-")
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    log("# work directory " + work)

    # ---- servers ------------------------------------------------------------
    prosody("prosody_set_roster %s alice a.test '[\"bob@a.test\"] = {subscription=\"both\"; "
            "groups={Friends=true}; name=\"Bob A\"};'" % pdir)
    prosody("prosody_set_roster %s bob a.test '[\"alice@a.test\"] = {subscription=\"both\"; groups={}; name=\"Alice\"};'" % pdir)
    prosody("prosody_set_roster %s al b.test '[\"bob@b.test\"] = {subscription=\"both\"; groups={}; name=\"Bob B\"};'" % pdir)
    prosody("prosody_set_roster %s bob b.test '[\"al@b.test\"] = {subscription=\"both\"; groups={}; name=\"Al\"};'" % pdir)
    prosody(PROSODY_START % pdir)
    for user, host in (("alice", "a.test"), ("bob", "a.test"), ("al", "b.test"), ("bob", "b.test")):
        prosody("prosody_adduser %s %s %s pw-%s-%s" % (pdir, user, host, user, host))
    cafile = lib_out("prosody.sh", "prosody_cafile %s" % pdir)

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=imfuse.test", "-addext", "subjectAltName=DNS:imfuse.test",
                    "-keyout", os.path.join(work, "client-tls.key"),
                    "-out", os.path.join(work, "client-tls.crt")], check=True, capture_output=True)
    d = Daemon(work, IMFUSE_PORT, cafile, listen_tls=(IMFUSE_TLS_PORT, os.path.join(work, "client-tls.crt"),
                                                      os.path.join(work, "client-tls.key")))
    d.start()

    # ---- a. the operator creates alice ---------------------------------------
    r = d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n")
    check(r.returncode == 0, "a. imfusectl user add alice (%s)" % r.stderr.strip())
    r = d.ctl_cmd("--json", "user", "list")
    users = json.loads(r.stdout)["users"]
    check([u["name"] for u in users] == ["alice"], "a. imfusectl user list shows alice")

    # ---- the client listeners: plain and TLS; registration closed ------------
    import ssl
    ctx = ssl.create_default_context(cafile=os.path.join(work, "client-tls.crt"))
    tc = Client(port=IMFUSE_TLS_PORT, tls_ctx=ctx, tls_name="imfuse.test")
    r = tc.login("alice", "alice-secret", "tls")
    check(r["op"] == "ok", "TLS client listener: login over TLS (certificate checked as imfuse.test)")
    r = tc.request("register", user="mallory", password="x")
    check(r["op"] == "error" and r["code"] == "bad_request", "register while logged in -> bad_request")
    tc.close()
    anon = Client(port=IMFUSE_PORT)
    r = anon.request("register", user="mallory", password="x")
    check(r["op"] == "error" and r["code"] == "unsupported", "register without --open-registration -> unsupported")
    r = anon.request("contacts")
    check(r["op"] == "error" and r["code"] == "not_logged_in", "contacts before login -> not_logged_in")
    anon.close()

    # ---- b. login, link two accounts, both contact lists ---------------------
    c = Client(port=IMFUSE_PORT)
    r = c.login("alice", "alice-secret", "phone")
    check(r["op"] == "ok" and r["user"] == "alice" and r["queued"] == 0, "b. alice logs in")
    a1 = c.call("link", network="xmpp", login="alice@a.test", password="pw-alice-a.test",
                server=server(XMPP_PORT), tls="starttls", name="A")["account"]
    a2 = c.call("link", network="xmpp", login="Al@B.test", password="pw-al-b.test",
                server=server(XMPP_PORT), tls="starttls", name="B")["account"]
    check(a1 != a2, "b. two accounts linked (%d, %d)" % (a1, a2))
    account_state(c, a1, ("online",))
    account_state(c, a2, ("online",))
    check(True, "b. both emulated logins online with STARTTLS + SCRAM (PLAIN disabled on the server)")
    e1 = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a1, 20, "contacts a1")
    e2 = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a2, 20, "contacts a2")
    check([x["address"] for x in e1["contacts"]] == ["bob@a.test"] and e1["contacts"][0]["name"] == "Bob A"
          and e1["contacts"][0]["groups"] == ["Friends"] and e1["contacts"][0]["network"] == "xmpp",
          "b. contact list of alice@a.test: %r" % e1["contacts"])
    check([x["address"] for x in e2["contacts"]] == ["bob@b.test"], "b. contact list of al@b.test")
    accs = c.call("accounts")["accounts"]
    check(sorted((x["account"], x["login"], x["state"]) for x in accs) ==
          sorted([(a1, "alice@a.test", "online"), (a2, "al@b.test", "online")]), "b. accounts op")
    allc = c.call("contacts")["contacts"]
    check(sorted(x["address"] for x in allc) == ["bob@a.test", "bob@b.test"], "b. contacts op")

    # ---- c. unified contact ---------------------------------------------------
    r = c.call("set_unified", contacts=[{"name": "Bob", "prefer": a1, "members": [
        {"account": a1, "address": "bob@a.test"}, {"account": a2, "address": "Bob@b.test"}]}])
    bob_id = r["contacts"][0]["id"]
    stored = c.call("unified")["contacts"]
    check(stored == [{"id": bob_id, "name": "Bob", "prefer": a1, "members": [
        {"account": a1, "address": "bob@a.test"}, {"account": a2, "address": "bob@b.test"}]}],
        "c. unified list stored exactly: %r" % stored)
    r = c.request("set_unified", contacts=[{"name": "X", "members": [{"account": a1, "address": "bob@a.test"}]},
                                           {"name": "Y", "members": [{"account": a1, "address": "bob@a.test"}]}])
    check(r["op"] == "error" and r["code"] == "bad_request", "c. a member in two unified contacts is refused")

    # ---- d. send to the unified contact: bob's client receives it -------------
    bob = peer("bob@a.test", "pw-bob-a.test", cafile)
    presence_event(c, a1, "bob@a.test", "available", 20)
    check(True, "d. bob's client online -> presence event available")
    r = c.call("send", to={"contact": bob_id}, body="hello <Bob> & \"friends\" \u00e9\U0001F600", cid="m1")
    check(r["account"] == a1 and r["address"] == "bob@a.test" and r["network"] == "xmpp" and r["cid"] == "m1",
          "d. send routed to the preferred member %r" % r)
    got = bob.expect(lambda e: e["ev"] == "message", "message from alice")
    check(got["from"] == "alice@a.test" and got["body"] == "hello <Bob> & \"friends\" \u00e9\U0001F600",
          "d. bob's XMPP client received it intact")
    r2 = c.call("send", to={"contact": bob_id}, body="hello again", cid="m1")
    check(r2["msg"] == r["msg"], "d. a repeated cid is not sent twice (same msg id)")

    # ---- contacts kept on the XMPP server: add and remove ----------------------
    c.call("add_contact", account=a1, address="Carol@A.test", name="Carol")
    e = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a1 and
                     any(x["address"] == "carol@a.test" for x in e["contacts"]), 20, "roster push with carol")
    check(any(x["name"] == "Carol" for x in e["contacts"]), "add_contact -> roster set, contacts event with carol")
    c.call("remove_contact", account=a1, address="carol@a.test")
    e = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a1 and
                     not any(x["address"] == "carol@a.test" for x in e["contacts"]), 20, "roster push without carol")
    check([x["address"] for x in e["contacts"]] == ["bob@a.test"], "remove_contact -> contacts event without carol")

    # ---- auth_failed is final until update_account ------------------------------
    a4 = c.call("link", network="xmpp", login="bob@b.test", password="not-it",
                server=server(XMPP_PORT), tls="starttls")["account"]
    account_state(c, a4, ("auth_failed",), 20)
    time.sleep(3)
    st = {x["account"]: x["state"] for x in c.call("accounts")["accounts"]}
    check(st[a4] == "auth_failed", "a wrong linked password -> auth_failed, not retried")
    c.call("update_account", account=a4, password="pw-bob-b.test")
    account_state(c, a4, ("online",), 20)
    check(True, "update_account with the right password -> online")
    c.call("unlink", account=a4)
    check(all(x["account"] != a4 for x in c.call("accounts")["accounts"]), "unlink removes the account")

    # ---- e. bob replies while alice is online -------------------------------
    bob.send("alice@a.test", "hi alice")
    m = c.wait_event(lambda e: e.get("op") == "message", 20, "message")
    check(m["from"] == "bob@a.test" and m["body"] == "hi alice" and m["account"] == a1 and
          m["contact"] == bob_id and m["network"] == "xmpp" and isinstance(m["seq"], int) and
          isinstance(m["ts"], int), "e. reply pushed with seq and unified id: %r" % m)
    c.call("ack", seq=m["seq"])
    last_seq = m["seq"]

    # ---- f. offline delivery in order ---------------------------------------
    c.call("logout")
    c.close()
    for i in range(3):
        bob.send("alice@a.test", "offline %d" % i)
    time.sleep(1.0)
    c = Client(port=IMFUSE_PORT)
    r = c.login("alice", "alice-secret", "laptop")
    check(r["op"] == "ok" and r["queued"] == 3, "f. login reports 3 queued (%r)" % r)
    ms = [c.wait_event(lambda e: e.get("op") == "message", 10, "queued message") for _ in range(3)]
    check([x["body"] for x in ms] == ["offline 0", "offline 1", "offline 2"] and
          ms[0]["seq"] > last_seq and ms[0]["seq"] < ms[1]["seq"] < ms[2]["seq"],
          "f. all 3 delivered in order")
    c.call("ack", seq=ms[0]["seq"])          # acknowledge only the first

    # ---- g. kill -9 and restart -----------------------------------------------
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
    check(True, "g. both accounts back online after restart")
    r = c.request("ack", seq=ms[-1]["seq"] + 100)
    check(r["op"] == "error" and r["code"] == "bad_request", "g. ack above the highest pushed is refused")

    # ---- h. bad input and dead servers ------------------------------------------
    bad = Client(port=IMFUSE_PORT)
    r = bad.login("alice", "wrong")
    check(r["op"] == "error" and r["code"] == "auth_failed", "h. wrong password -> auth_failed")
    bad.send_raw(b"\x00\x00\x00\x02\x92\x01")       # an array, not a map
    r = bad.recv_frame()
    check(r["op"] == "error" and r["code"] == "bad_request" and "id" not in r, "h. malformed frame -> error without id")
    check(bad.recv_frame() is None, "h. ... and that connection is closed")
    check(c.call("ping")["op"] == "ok", "h. other sessions untouched")

    bob.quit()
    prosody("prosody_stop %s" % pdir)
    account_state(c, a1, ("offline",), 20)
    account_state(c, a2, ("offline",), 20)
    check(True, "h. prosody stopped -> both accounts offline")
    prosody(PROSODY_START % pdir)
    account_state(c, a1, ("online",), 60)
    account_state(c, a2, ("online",), 60)
    check(True, "h. prosody restarted -> back online by themselves")
    bob = peer("bob@a.test", "pw-bob-a.test", cafile)

    # ---- certificate checked against the right name ----------------------------------
    a3 = c.call("link", network="xmpp", login="bob@b.test", password="pw-bob-b.test",
                server=server(XMPP_PORT), tls="starttls",
                options={"tls_name": "wrong.test"})["account"]
    e = account_state(c, a3, ("error",), 20)
    check("wrong.test" in e.get("detail", ""), "wrong certificate name refused: %r" % e.get("detail"))
    c.call("unlink", account=a3)

    # ---- server names are resolved on the controlplane ------------------------------
    a5 = c.call("link", network="xmpp", login="bob@b.test", password="pw-bob-b.test",
                server="nowhere.invalid:%d" % XMPP_PORT, tls="starttls")["account"]
    e = account_state(c, a5, ("error",), 30)
    check("cannot resolve nowhere.invalid" in e.get("detail", ""),
          "a server name that does not resolve -> error with the resolver's words: %r" % e.get("detail"))
    c.call("unlink", account=a5)

    # ---- the CLI client ------------------------------------------------------
    env = dict(os.environ, IMFUSE_PASSWORD="alice-secret")
    cli = [os.path.join(BUILD, "imfuse"), "-S", hostport(APPLIANCE_ADDR, IMFUSE_PORT), "-u", "alice"]
    r = subprocess.run(cli + ["send", "Bob", "from the cli"], env=env, capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "imfuse send Bob (%s%s)" % (r.stdout.strip(), r.stderr.strip()))
    got = bob.expect(lambda e: e["ev"] == "message", "message from the cli")
    check(got["body"] == "from the cli", "bob received the CLI's message")
    bob.send("alice@a.test", "to the cli")
    r = subprocess.run(cli + ["listen", "--count", "1", "--timeout", "20"], env=env,
                       capture_output=True, text=True, timeout=40)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    check(r.returncode == 0 and any(x.get("body") == "to the cli" for x in lines),
          "imfuse listen printed and acked the message (%r)" % r.stdout)
    r = d.ctl_cmd("--json", "accounts", "alice")
    check(r.returncode == 0 and len(json.loads(r.stdout)["accounts"]) == 2, "imfusectl accounts alice")
    r = d.ctl_cmd("--json", "sessions")
    check(r.returncode == 0 and any(s["user"] == "alice" for s in json.loads(r.stdout)["sessions"]),
          "imfusectl sessions")

    # ---- no linked password in clear ---------------------------------------------
    c.close()
    bob.quit()
    rc = d.stop()
    check(rc == 0, "imfused exits 0 on SIGTERM (rc %s)" % rc)
    blob = open(os.path.join(d.data, "data.mdb"), "rb").read()
    check(b"pw-alice-a.test" not in blob and b"pw-al-b.test" not in blob and b"pw-bob-b.test" not in blob,
          "the LMDB file holds no linked password in clear")
    check(b"alice-secret" not in blob, "... nor the user's password")
    prosody("prosody_stop %s" % pdir)


if __name__ == "__main__":
    run(main)
