"""SIP/SIMPLE through the real imfuse daemon against a real kamailio (issue 3).

Run by sip.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

  1. alice (an imfuse user) links sip:alice@sip.test (tls none): REGISTER with
     digest auth -> account online
  2. add_contact sip:bob@sip.test -> contacts event (the list imfuse keeps)
  3. bob's own SIP UA (tests/integration/lib/sip_peer.py) registers; alice sends
     to bob -> bob receives it (MESSAGE 407-challenged, relayed over alice's and
     bob's own connections); a second send works too
  4. bob sends -> alice gets a `message` event from sip:bob@sip.test, network sip
  5. bob goes offline (un-REGISTER); alice's message is stored by msilo (202) and
     delivered when bob registers again
  6. a wrong linked password -> auth_failed
  7. unlink -> kamailio's location table no longer has alice (un-REGISTER), and
     bob's MESSAGE to alice is stored (202) instead of relayed
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from imclient import Client  # noqa: E402

BUILD = os.path.join(ROOT, os.environ.get("IMFUSE_BUILD", "build/asan"))
LIB = os.path.join(HERE, "..", "lib")
PY = "/usr/bin/python3"

SIP_PORT = 15060
IMFUSE_PORT = 17710
DOMAIN = "sip.test"

procs = []
kam_dirs = []
failures = 0
figures = {}


def log(*a):
    print(*a, flush=True)


def check(cond, what):
    global failures
    if cond:
        log("ok   - " + what)
    else:
        failures += 1
        log("FAIL - " + what)
        raise AssertionError(what)


def stop_proc(p, sig=signal.SIGTERM, wait=5.0):
    if p.poll() is not None:
        return p.returncode
    try:
        p.send_signal(sig)
        return p.wait(wait)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def wait_port(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def kam(cmd, capture=False):
    return subprocess.run(["bash", "-c", "source %s/kamailio.sh && %s" % (LIB, cmd)], check=True,
                          capture_output=capture, text=True)


class Daemon:
    def __init__(self, work):
        self.work = work
        self.data = os.path.join(work, "var")
        self.ctl = os.path.join(self.data, "imfused.sock")
        self.logpath = os.path.join(work, "imfused.log")
        self.p = None

    def start(self):
        logf = open(self.logpath, "a")
        self.p = subprocess.Popen(
            [os.path.join(BUILD, "imfused"), "--data", self.data,
             "--listen", "127.0.0.1:%d" % IMFUSE_PORT, "--control", self.ctl, "--log-level", "debug"],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        procs.append(("imfused", self.p))
        if not wait_port(IMFUSE_PORT):
            raise RuntimeError("imfused did not start; see " + self.logpath)

    def stop(self):
        return stop_proc(self.p)

    def ctl_cmd(self, *args, stdin=None):
        return subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", self.ctl] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=30)


class Peer:
    """bob's real SIP user agent."""

    def __init__(self, user, password):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([PY, os.path.join(LIB, "sip_peer.py"), user, DOMAIN, password,
                                   "127.0.0.1", str(SIP_PORT)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(("peer " + user, self.p))
        self.user = user
        self.online = self.expect(lambda e: e["ev"] == "online", "peer %s online" % user)

    def expect(self, pred, what, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self.p.stdout], [], [], end - time.monotonic())
            if not r:
                break
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("peer %s exited" % self.user)
            e = json.loads(line)
            if pred(e):
                return e
        raise TimeoutError("peer %s: timed out waiting for %s" % (self.user, what))

    def send(self, to, body):
        self.p.stdin.write(json.dumps({"cmd": "send", "to": to, "body": body}) + "\n")
        self.p.stdin.flush()
        return self.expect(lambda e: e["ev"] == "sent", "final answer to our MESSAGE", 40)

    def quit(self):
        try:
            self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.p.stdin.flush()
            self.expect(lambda e: e["ev"] == "bye", "un-REGISTER", 5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        stop_proc(self.p, wait=3)


def account_state(c, account, states, timeout=30.0):
    return c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == account
                        and e.get("state") in states, timeout, "account %d in %s" % (account, states))


def location_has(kdir, user):
    r = kam("kamailio_ctl %s ul.dump" % kdir, capture=True)
    return ("sip:%s@127.0.0.1:" % user) in r.stdout


def main():
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="imfuse-sip-")
    kdir = os.path.join(work, "kamailio")
    kam_dirs.append(kdir)
    log("# work directory " + work)

    for user, pw in (("alice", "pw-alice"), ("bob", "pw-bob")):
        kam("kamailio_adduser %s %s %s %s" % (kdir, user, DOMAIN, pw))
    kam("kamailio_start %s %d %s" % (kdir, SIP_PORT, DOMAIN))

    d = Daemon(work)
    d.start()
    r = d.ctl_cmd("user", "add", "alice", stdin="alice-secret\n")
    check(r.returncode == 0, "imfusectl user add alice (%s)" % r.stderr.strip())

    # ---- 1. link: REGISTER with digest auth ---------------------------------------
    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "alice-secret")["op"] == "ok", "alice logs in to imfuse")
    r = c.request("link", network="sip", login="sip:carol@sip.test", password="x",
                  server="127.0.0.1:%d" % SIP_PORT, tls="starttls")
    t0 = time.monotonic()
    a1 = c.call("link", network="sip", login="alice@SIP.test", password="pw-alice",
                server="127.0.0.1:%d" % SIP_PORT, tls="none", name="SIP")["account"]
    account_state(c, a1, ("online",), 20)
    figures["link -> online (REGISTER, 401, REGISTER, 200)"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(True, "1. sip account online (REGISTER with digest)")
    accs = {x["account"]: x for x in c.call("accounts")["accounts"]}
    check(accs[a1]["login"] == "sip:alice@sip.test" and accs[a1]["state"] == "online",
          "1. login normalised to sip:alice@sip.test: %r" % accs[a1])
    check(location_has(kdir, "alice"), "1. kamailio's location table has alice")
    if r["op"] == "ok":
        # tls=starttls is refused with a clear reason (at link or at start).
        e = account_state(c, r["account"], ("error",), 20)
        check("STARTTLS" in e.get("detail", ""), "tls=starttls refused: %r" % e.get("detail"))
        c.call("unlink", account=r["account"])
    else:
        check(r["code"] in ("bad_request", "unsupported"), "tls=starttls refused at link: %r" % r)

    # ---- 2. contacts kept by imfuse ------------------------------------------------
    c.call("add_contact", account=a1, address="bob@sip.test", name="Bob")
    e = c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == a1 and
                     any(x["address"] == "sip:bob@sip.test" for x in e["contacts"]), 20, "contacts with bob")
    bob_entry = [x for x in e["contacts"] if x["address"] == "sip:bob@sip.test"][0]
    check(bob_entry["network"] == "sip" and bob_entry["name"] == "Bob",
          "2. add_contact -> contacts event with sip:bob@sip.test: %r" % bob_entry)

    # ---- 3. alice -> bob -----------------------------------------------------------
    bob = Peer("bob", "pw-bob")
    figures["bob's UA REGISTER with digest"] = "%d ms" % bob.online["ms"]
    t0 = time.monotonic()
    r = c.call("send", to={"account": a1, "address": "sip:bob@sip.test"}, body="hello bob \u00e9\U0001F600")
    check(r["network"] == "sip" and r["address"] == "sip:bob@sip.test", "3. send accepted: %r" % r)
    got = bob.expect(lambda e: e["ev"] == "message", "message from alice")
    figures["alice send -> bob's UA receives"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(got["from"] == "sip:alice@sip.test" and got["body"] == "hello bob \u00e9\U0001F600" and
          got["ctype"].lower().startswith("text/plain"), "3. bob's SIP UA received it intact: %r" % got)
    c.call("send", to={"account": a1, "address": "sip:bob@sip.test"}, body="second")
    got = bob.expect(lambda e: e["ev"] == "message", "second message")
    check(got["body"] == "second", "3. a second send works (outbox not stuck)")

    # ---- 4. bob -> alice -----------------------------------------------------------
    t0 = time.monotonic()
    res = bob.send("sip:alice@sip.test", "hi alice <&>")
    m = c.wait_event(lambda e: e.get("op") == "message", 20, "message from bob")
    figures["bob send -> alice's imfuse client event"] = "%.0f ms" % ((time.monotonic() - t0) * 1000)
    check(res["status"] == 200, "4. bob's MESSAGE answered 200 by alice's session (after the commit): %r" % res)
    check(m["from"] == "sip:bob@sip.test" and m["network"] == "sip" and m["account"] == a1 and
          m["body"] == "hi alice <&>", "4. alice got a message event: %r" % m)
    c.call("ack", seq=m["seq"])

    # ---- 5. bob offline: stored by msilo, delivered at his next REGISTER ------------
    bob.quit()
    check(not location_has(kdir, "bob"), "5. bob un-REGISTERed")
    c.call("send", to={"account": a1, "address": "sip:bob@sip.test"}, body="while you were away")
    time.sleep(1.0)
    st = {x["account"]: x for x in c.call("accounts")["accounts"]}
    check(st[a1]["state"] == "online", "5. the account stays online after the 202")
    bob = Peer("bob", "pw-bob")
    got = bob.expect(lambda e: e["ev"] == "message", "stored message", 20)
    check(got["body"] == "while you were away" and got["from"] == "sip:alice@sip.test",
          "5. msilo delivered the stored message at bob's REGISTER: %r" % got)

    # ---- 6. wrong password -----------------------------------------------------------
    a2 = c.call("link", network="sip", login="sip:bob@sip.test", password="not-it",
                server="127.0.0.1:%d" % SIP_PORT, tls="none")["account"]
    e = account_state(c, a2, ("auth_failed",), 20)
    check("401" in e.get("detail", ""), "6. wrong password -> auth_failed: %r" % e.get("detail"))
    c.call("unlink", account=a2)

    # ---- 7. unlink: un-REGISTER ---------------------------------------------------
    c.call("unlink", account=a1)
    end = time.monotonic() + 5
    while location_has(kdir, "alice") and time.monotonic() < end:
        time.sleep(0.1)
    check(not location_has(kdir, "alice"), "7. unlink -> alice's binding removed from kamailio (un-REGISTER)")
    res = bob.send("sip:alice@sip.test", "are you there?")
    check(res["status"] == 202, "7. bob's MESSAGE to alice is now stored, not relayed: %r" % res)

    bob.quit()
    c.close()
    rc = d.stop()
    check(rc == 0, "imfused exits 0 on SIGTERM (rc %s)" % rc)
    figures["whole test"] = "%.1f s" % (time.monotonic() - t_start)


if __name__ == "__main__":
    rc = 0
    try:
        main()
    except Exception:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        for name, p in reversed(procs):
            stop_proc(p)
        for kd in kam_dirs:
            subprocess.run(["bash", "-c", "source %s/kamailio.sh; kamailio_stop %s" % (LIB, kd)])
    for k, v in figures.items():
        log("# %s: %s" % (k, v))
    log("%d checks failed%s" % (failures, ", and the run stopped on an exception" if rc else ""))
    sys.exit(1 if (rc or failures) else 0)
