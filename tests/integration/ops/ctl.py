"""imfusectl's operator commands against the real daemon, with prosody and
real XMPP users (issue 11, item 6).

Run by ctl.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

  1. Accounts in every state across two users; `accounts`, `accounts NAME`
     and `accounts --state S` (online, offline, auth_failed), in text and
     --json; a bad state is a usage error.
  2. user list, sessions, stats, help, config (with the origin of each
     value), log-level (at run time; config then says so), reload, top
     --once, top refreshing: each in text and with --json.
  3. backup FILE while bob (a real XMPP user) sends messages to alice and
     alice's client sends to carol: the backup is a consistent copy (a prefix
     of the messages, in order), a second one after the burst holds all of
     them, both open (mdb_stat, and a second imfused on the copy and the
     key replays them to alice); FILE must not exist.
  4. Errors say what to do next (unknown user, existing backup file, no
     daemon on the socket); kick and drain.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (BUILD, HERE as LIB, Daemon, JsonPeer, account_state, check, lib, lib_out, log,  # noqa: E402
                     procs, remove_at_end, run, stop_at_end)
from imclient import Client  # noqa: E402
from testenv import SERVER_ADDR, server  # noqa: E402

XMPP_PORT = 15244
IMFUSE_PORT = 17744
RESTORE_PORT = 17745
BURST = 300


def ctl(d, *args, stdin=None):
    return d.ctl_cmd(*args, stdin=stdin)


def ctl_json(d, *args):
    r = d.ctl_cmd("--json", *args)
    if r.returncode != 0:
        raise AssertionError("imfusectl --json %s: rc %d: %s" % (" ".join(args), r.returncode, r.stderr))
    lines = r.stdout.strip().splitlines()
    check(len(lines) == 1, "imfusectl --json %s prints one JSON object" % " ".join(args))
    return json.loads(lines[0])


def table(text):
    """Rows of an aligned table as lists of words (header first)."""
    return [line.split() for line in text.strip().splitlines()]


def replay(port, user, password, want):
    """Log in to an imfused on port and collect the replayed messages."""
    c = Client(port=port)
    r = c.login(user, password)
    check(r["op"] == "ok", "%s logs in to the restored copy: %r" % (user, r))
    got = []
    while len(got) < r["queued"]:
        got.append(c.wait_event(lambda e: e.get("op") == "message", 30, "replayed message"))
    c.close()
    return r["queued"], got


def main():
    work = tempfile.mkdtemp(prefix="imfuse-ctl.")
    remove_at_end(work)     # once its servers (their pid files are there) are stopped
    log("# work directory %s" % work)
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    lib("prosody.sh", "prosody_start %s %d a.test" % (pdir, XMPP_PORT))
    for u in ("alice", "bob", "carol"):
        lib("prosody.sh", "prosody_adduser %s %s a.test pw-%s" % (pdir, u, u))
    cafile = lib_out("prosody.sh", "prosody_cafile %s" % pdir)
    d = Daemon(work, IMFUSE_PORT, cafile=cafile)
    d.start()

    # 1. accounts in every state, across users
    for u in ("alice", "carol"):
        check(ctl(d, "user", "add", u, stdin="pw-%s\n" % u).returncode == 0, "user %s added" % u)
    a = Client(port=IMFUSE_PORT)
    check(a.login("alice", "pw-alice")["op"] == "ok", "alice logged in")
    x1 = a.call("link", network="xmpp", login="alice@a.test", password="pw-alice", server=server(XMPP_PORT),
                tls="starttls")["account"]
    x2 = a.call("link", network="xmpp", login="bob@a.test", password="wrong", server=server(XMPP_PORT),
                tls="starttls", name="not bob's password")["account"]
    i1 = a.call("link", network="irc", login="alice", password="", server=server(1), tls="none")["account"]
    account_state(a, x1, ("online",))
    account_state(a, x2, ("auth_failed",))
    account_state(a, i1, ("offline",))
    c = Client(port=IMFUSE_PORT)
    check(c.login("carol", "pw-carol")["op"] == "ok", "carol logged in")
    x3 = c.call("link", network="xmpp", login="carol@a.test", password="nope", server=server(XMPP_PORT),
                tls="starttls")["account"]
    account_state(c, x3, ("auth_failed",))

    r = ctl(d, "accounts")
    rows = table(r.stdout)
    check(r.returncode == 0 and rows[0][:3] == ["USER", "ACCOUNT", "NETWORK"] and len(rows) == 5,
          "1. accounts: every user's, with a USER column (%d rows)" % (len(rows) - 1))
    r = ctl(d, "accounts", "alice")
    check(r.returncode == 0 and table(r.stdout)[0][0] == "ACCOUNT" and len(table(r.stdout)) == 4,
          "accounts alice: her three")
    r = ctl(d, "accounts", "--state", "auth_failed")
    users = sorted(row[0] for row in table(r.stdout)[1:])
    check(r.returncode == 0 and users == ["alice", "carol"], "accounts --state auth_failed across users: %r" % users)
    j = ctl_json(d, "accounts", "--state", "online")
    check([(x["user"], x["account"], x["state"]) for x in j["accounts"]] == [("alice", x1, "online")],
          "--json accounts --state online: %r" % j)
    j = ctl_json(d, "accounts", "alice", "--state", "offline")
    check([x["account"] for x in j["accounts"]] == [i1] and j["accounts"][0]["network"] == "irc",
          "--json accounts alice --state offline")
    r = ctl(d, "accounts", "--state", "gone")
    check(r.returncode == 64 and "online|connecting|offline|auth_failed|error" in r.stderr,
          "accounts --state gone: usage error naming the states")
    r = ctl(d, "raw", '{"op":"accounts","state":"gone"}')
    check(r.returncode == 1 and "expected online" in r.stdout, "the daemon checks the state too")

    # 2. the other commands, text and --json
    r = ctl(d, "user", "list")
    check(r.returncode == 0 and [row[0] for row in table(r.stdout)] == ["NAME", "alice", "carol"], "user list")
    check([u["name"] for u in ctl_json(d, "user", "list")["users"]] == ["alice", "carol"], "--json user list")
    r = ctl(d, "sessions")
    check(r.returncode == 0 and len(table(r.stdout)) == 3, "sessions: two")
    check(len(ctl_json(d, "sessions")["sessions"]) == 2, "--json sessions")
    r = ctl(d, "stats")
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    j = ctl_json(d, "stats")
    check(r.returncode == 0 and lines.get("accounts_xmpp_auth_failed") == "2" and lines.get("accounts_irc_offline") == "1",
          "stats: accounts by network and state")
    check(j["stats"]["accounts_online"] == 1 and "sessions" in j["gauges"] and "msgs_in" not in j["gauges"],
          "--json stats: the gauges are named")
    r = ctl(d, "help")
    check(r.returncode == 0 and "accounts {name?, state?}" in r.stdout and "backup {file}" in r.stdout, "help")
    check(any(x["name"] == "reload" for x in ctl_json(d, "help")["commands"]), "--json help")
    r = ctl(d, "config")
    conf = {}
    for line in r.stdout.strip().splitlines():
        k, rest = line.split("=", 1)
        conf[k.strip()] = rest.split("#", 1)
    check(r.returncode == 0 and conf["log-level"][0].strip() == "debug" and "command line" in conf["log-level"][1]
          and conf["store-map-size"][0].strip() == "1G" and "default" in conf["store-map-size"][1],
          "config: values and where they come from")
    j = ctl_json(d, "config")
    keys = [x["key"] for x in j["config"]]
    check("snmp-agentx" in keys and "account-storm" in keys and all(set(x) == {"key", "value", "source"}
                                                                     for x in j["config"]), "--json config")
    r = ctl(d, "log-level", "warn")
    check(r.returncode == 0 and r.stdout.strip() == "log level warn (was debug)", "log-level warn: %r" % r.stdout)
    j = ctl_json(d, "log-level", "info")
    check(j == {"level": "info", "was": "warn"}, "--json log-level info: %r" % j)
    src = [x for x in ctl_json(d, "config")["config"] if x["key"] == "log-level"][0]
    check(src["value"] == "info" and "while running" in src["source"], "config says the level was set while running")
    r = ctl(d, "log-level", "loud")
    check(r.returncode == 64 and "error|warn|info|debug" in r.stderr, "log-level loud: a usage error")
    r = ctl(d, "reload")
    check(r.returncode == 0 and "log-level: info -> debug" in r.stdout,
          "reload: the command line's level again: %r" % r.stdout)
    check(ctl_json(d, "reload") == {"changed": [], "restart": []}, "--json reload: nothing changed")
    r = subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", d.ctl, "top", "--once", "--interval", "0.5"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and r.stdout.startswith("imfuse top") and "messages" in r.stdout
          and "accounts   online 1" in r.stdout, "top --once: %r" % r.stdout[:300])
    j = ctl_json(d, "top", "--once", "--interval", "0.3")
    check(0.25 < j["interval_s"] < 5 and "msgs_in" in j["rates"] and j["gauges"]["accounts_online"] == 1,
          "--json top --once: rates and gauges")
    # SIGINT ends top with exit status 0 even where it was started with
    # SIGINT ignored (a background job of a non-interactive shell, as make
    # test under `(...&)`), and SIGTERM as well; the last screen is whole.
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = subprocess.Popen([os.path.join(BUILD, "imfusectl"), "-s", d.ctl, "top", "--interval", "0.2"],
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        time.sleep(1.5)
        p.send_signal(sig)
        t = time.monotonic()
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        took = time.monotonic() - t
        last = out[out.rfind("imfuse top"):]
        check(out.count("imfuse top") >= 3 and p.returncode == 0 and "accounts " in last and "traffic " in last
              and last.endswith("\n"),
              "top (SIGINT ignored when started) refreshes (%d screens in 1.5 s), ends on %s with exit status %s "
              "(%.1f s after it), its last screen whole" % (out.count("imfuse top"), signal.Signals(sig).name,
                                                            p.returncode, took))

    # 3. backup while messages flow both ways
    bob = JsonPeer("bob", [os.path.join(LIB, "xmpp_peer.py"), "bob@a.test", "pw-bob", SERVER_ADDR,
                           str(XMPP_PORT), cafile])
    bob.expect(lambda e: e["ev"] == "online", "bob online")
    # alice writes to carol's XMPP client (bob's is busy sending: a peer's
    # send waits for its own "sent" and passes over what arrives meanwhile)
    carol = JsonPeer("carol", [os.path.join(LIB, "xmpp_peer.py"), "carol@a.test", "pw-carol", SERVER_ADDR,
                               str(XMPP_PORT), cafile])
    carol.expect(lambda e: e["ev"] == "online", "carol online")
    b1, b2 = os.path.join(work, "backup1.mdb"), os.path.join(work, "backup2.mdb")
    backup = None
    sent_out = 0
    for i in range(BURST):
        bob.send("alice@a.test", "m %d" % i)
        if i == BURST // 3:
            backup = subprocess.Popen([os.path.join(BUILD, "imfusectl"), "-s", d.ctl, "backup", b1],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if i % 10 == 0:
            a.call("send", to={"account": x1, "address": "carol@a.test"}, body="out %d" % i)
            sent_out += 1
    out, err = backup.communicate(timeout=60)
    check(backup.returncode == 0 and out.startswith("backup written to %s:" % b1) and "appliance.key" in out,
          "3. backup during the burst: %r %r" % (out.strip(), err.strip()))
    check(oct(os.stat(b1).st_mode & 0o777) == "0o600" and not os.path.exists(b1 + ".part"),
          "the copy is 0600, no .part left")
    got = 0
    end = time.monotonic() + 60
    while got < BURST and time.monotonic() < end:
        got = json.loads(ctl(d, "--json", "stats").stdout)["stats"]["msgs_committed"]
        time.sleep(0.2)
    check(got == BURST, "all %d messages committed" % BURST)
    for i in range(sent_out):
        carol.expect(lambda e: e["ev"] == "message" and e["body"] == "out %d" % (10 * i), "alice's message %d" % i)
    check(True, "carol got alice's %d messages sent meanwhile, in order" % sent_out)
    j = ctl_json(d, "backup", b2)
    check(j["bytes"] == os.path.getsize(b2) and j["bytes"] > 0, "--json backup after the burst: %r" % j)
    r = ctl(d, "backup", b2)
    check(r.returncode == 1 and "exists" in r.stderr and "new file name" in r.stderr,
          "a backup never replaces a file: %r" % r.stderr.strip())
    for f in (b1, b2):
        r = subprocess.run(["mdb_stat", "-n", "-a", f], capture_output=True, text=True)
        check(r.returncode == 0 and "Status of queue" in r.stdout, "mdb_stat -n -a %s opens it" % os.path.basename(f))

    for f, name in ((b1, "during"), (b2, "after")):
        rd = os.path.join(work, "restore-" + name)
        os.makedirs(rd, mode=0o700)
        shutil.copy(f, os.path.join(rd, "data.mdb"))
        shutil.copy(os.path.join(d.data, "appliance.key"), os.path.join(rd, "appliance.key"))
        os.chmod(os.path.join(rd, "appliance.key"), 0o600)
        logf = open(os.path.join(work, "restore-%s.log" % name), "w")
        p = subprocess.Popen([os.path.join(BUILD, "imfused"), "--data", rd, "--listen", "%s:%d" % ("127.0.0.1",
                              RESTORE_PORT), "--ca-file", cafile], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        procs.append(p)
        from testenv import wait_port
        check(wait_port("127.0.0.1", RESTORE_PORT, 20), "imfused starts on the copy made %s the burst" % name)
        n, msgs = replay(RESTORE_PORT, "alice", "pw-alice", BURST)
        bodies = [m["body"] for m in msgs]
        seqs = [m["seq"] for m in msgs]
        ok_prefix = bodies == ["m %d" % i for i in range(n)] and seqs == list(range(seqs[0], seqs[0] + n)) if n else True
        if name == "during":
            check(1 <= n <= BURST and ok_prefix,
                  "the copy made during the burst holds %d messages: the first ones, in order" % n)
        else:
            check(n == BURST and ok_prefix, "the copy made after holds all %d, in order" % n)
        p.send_signal(signal.SIGTERM)
        check(p.wait(30) == 0, "and stops")

    # 4. errors that say what to do, kick, drain
    r = ctl(d, "accounts", "nobody")
    check(r.returncode == 1 and "imfusectl user list" in r.stderr, "unknown user: %r" % r.stderr.strip())
    r = subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", os.path.join(work, "none.sock"), "stats"],
                       capture_output=True, text=True)
    check(r.returncode == 2 and "is imfused running?" in r.stderr, "no daemon: %r" % r.stderr.strip())
    j = ctl_json(d, "kick", "carol")
    check(j == {"kicked": 1}, "--json kick carol: %r" % j)
    r = ctl(d, "kick", "alice")
    check(r.returncode == 0 and r.stdout.strip() == "kicked alice (1 connections closed)", "kick alice")
    check(ctl_json(d, "drain") == {}, "--json drain")
    check(d.stop() == 0, "imfused stops with exit 0")


run(main)
