"""Shared pieces of the Python integration drivers: checks counted and
printed, processes stopped by PID, real user clients driven over line-JSON,
the daemon under test, waits for its account and presence events, and a
main() runner that cleans up on every exit.

Run the drivers with /usr/bin/python3 (Debian's python3-* packages)."""
import json
import os
import shutil
import select
import signal
import subprocess
import sys
import time

from testenv import APPLIANCE_ADDR, APPLIANCE_ARGS, APPLIANCE_WRAP, hostport, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("IMFUSE_BUILD", "build/asan"))
PY = "/usr/bin/python3"

procs = []      # every process started, stopped by PID at the end
daemons = []    # every Daemon made: run() shows their logs when the run fails
at_end = []     # (library script, command) run by run() after every process is stopped
work_dirs = []  # deleted by run() last, when the run passed (remove_at_end)
failures = 0    # checks failed so far


def log(*a):
    print(*a, flush=True)


def check(cond, what):
    """Print "ok   - WHAT" or "FAIL - WHAT"; a failure is counted and raised."""
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


def stop_all():
    for p in reversed(procs):
        stop_proc(p)


def lib(script, cmd, strict=True):
    """Run a function of a sourceable bash library in tests/integration/lib;
    a non-zero exit raises unless strict is false."""
    subprocess.run(["bash", "-c", "source %s/%s && %s" % (HERE, script, cmd)], check=strict)


def lib_out(script, cmd):
    """lib(), returning what the command printed, stripped."""
    return subprocess.run(["bash", "-c", "source %s/%s && %s" % (HERE, script, cmd)],
                          capture_output=True, text=True, check=True).stdout.strip()


def stop_at_end(script, cmd):
    """Have run() call lib(script, cmd) at the end (e.g. a server's stop), in the order given."""
    at_end.append((script, cmd))


def remove_at_end(path):
    """Have run() delete the directory path after everything is stopped (the
    servers' pid files live there), when the run passed; kept for its logs
    when it failed."""
    work_dirs.append(path)


def account_state(c, account, states, timeout=30.0):
    """The next account event of imclient.Client c for account with a state in states."""
    return c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == account
                        and e.get("state") in states, timeout, "account %d in %s" % (account, states))


def presence_event(c, account, address, presence, timeout=30.0):
    return c.wait_event(lambda e: e.get("op") == "presence" and e.get("account") == account
                        and e.get("address") == address and e.get("presence") == presence,
                        timeout, "presence %s %s on account %d" % (address, presence, account))


def show_daemon_logs(lines=40):
    """Print the last lines of each Daemon's log below DEBUG (account states and errors)."""
    for d in daemons:
        try:
            with open(d.logpath, errors="replace") as f:
                tail = [ln.rstrip() for ln in f if " DEBUG " not in ln][-lines:]
        except OSError:
            continue
        log("# the last %d lines of %s below DEBUG:" % (len(tail), d.logpath))
        for ln in tail:
            log("#   " + ln)


def run(main, *args, on_failure=None):
    """Run main(*args); then stop every process and what stop_at_end() named;
    if a check failed or main raised, show the daemons' logs and call
    on_failure() (e.g. to show another log); print the count of failed checks
    and exit 1 if any failed or main raised."""
    rc = 0
    try:
        main(*args)
    except Exception:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        stop_all()
        for script, cmd in at_end:
            lib(script, cmd, strict=False)
    if rc or failures:
        show_daemon_logs()
        if on_failure:
            on_failure()
    else:
        for path in work_dirs:
            shutil.rmtree(path, ignore_errors=True)
    log("%d checks failed%s" % (failures, ", and the run stopped on an exception" if rc else ""))
    sys.exit(1 if (rc or failures) else 0)


class JsonPeer:
    """A real IM client (xmpp_peer.py, irc_peer.py, sip_peer.py): JSON lines both ways.
    An event whose "ev" is in fatal (e.g. ("error",)) makes expect() raise."""

    def __init__(self, name, argv, fatal=()):
        self.name = name
        self.fatal = fatal
        self.p = subprocess.Popen([PY] + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(self.p)
        self.fd = self.p.stdout.fileno()
        self.buf = b""

    def _line(self, end, what):
        """The next line of the peer's output, or None at the deadline.  Reads the
        pipe unbuffered: a buffered readline would hide lines from select()."""
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return None
            data = os.read(self.fd, 65536)
            if not data:
                raise RuntimeError("peer %s exited while waiting for %s" % (self.name, what))
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def expect(self, pred, what, timeout=30.0):
        end = time.monotonic() + timeout
        while True:
            line = self._line(end, what)
            if line is None:
                break
            e = json.loads(line)
            if e.get("ev") in self.fatal:
                raise RuntimeError("peer %s: %s" % (self.name, e.get("text", e)))
            if pred(e):
                return e
        raise TimeoutError("peer %s: timed out waiting for %s" % (self.name, what))

    def send(self, to, body):
        self.p.stdin.write(json.dumps({"cmd": "send", "to": to, "body": body}) + "\n")
        self.p.stdin.flush()
        return self.expect(lambda e: e["ev"] == "sent", "sent")

    def quit(self):
        try:
            self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.p.stdin.flush()
        except OSError:
            pass
        stop_proc(self.p, wait=3)


class Daemon:
    """imfused on the appliance address (testenv.py) and port, started under
    APPLIANCE_WRAP with APPLIANCE_ARGS last, its data and control socket under work.
    listen_tls=(port, certfile, keyfile) adds the TLS client listener;
    config {key: value} is written to work/imfused.conf and given with
    --config; extra (a list, also settable for the next start()s) is more
    command-line arguments."""

    def __init__(self, work, port, cafile=None, listen_tls=None, config=None, extra=()):
        self.data = os.path.join(work, "var")
        self.ctl = os.path.join(self.data, "imfused.sock")
        self.port = port
        self.cafile = cafile
        self.listen_tls = listen_tls
        self.extra = list(extra)
        self.logpath = os.path.join(work, "imfused.log")
        self.conf = None
        if config:
            self.conf = os.path.join(work, "imfused.conf")
            with open(self.conf, "w") as f:
                for k, v in config.items():
                    f.write("%s = %s\n" % (k, v))
        self.p = None
        daemons.append(self)

    def start(self):
        logf = open(self.logpath, "a")
        argv = APPLIANCE_WRAP + [os.path.join(BUILD, "imfused"), "--data", self.data, "--listen",
                                 hostport(APPLIANCE_ADDR, self.port), "--control", self.ctl,
                                 "--log-level", "debug"]
        if self.cafile:
            argv += ["--ca-file", self.cafile]
        if self.listen_tls:
            port, cert, key = self.listen_tls
            argv += ["--listen-tls", hostport(APPLIANCE_ADDR, port), "--tls-cert", cert, "--tls-key", key]
        if self.conf:
            argv += ["--config", self.conf]
        argv += self.extra + APPLIANCE_ARGS
        self.p = subprocess.Popen(argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        procs.append(self.p)
        if not wait_port(APPLIANCE_ADDR, self.port):
            raise RuntimeError("imfused did not start; see " + self.logpath)

    def kill9(self):
        self.p.kill()
        self.p.wait()

    def stop(self):
        return stop_proc(self.p)

    def ctl_cmd(self, *args, stdin=None):
        return subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", self.ctl] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=30)

    def stats(self):
        """imfusectl --json stats, as a dict."""
        p = self.ctl_cmd("--json", "stats")
        if p.returncode != 0:
            raise RuntimeError("imfusectl stats: " + p.stderr)
        return json.loads(p.stdout)["stats"]

    def add_user(self, name, password):
        p = self.ctl_cmd("user", "add", name, stdin=password + "\n")
        if p.returncode != 0:
            raise RuntimeError("imfusectl user add %s: %s" % (name, p.stderr))


def start_daemon(work, name, port, cafile=None, config=None, extra=()):
    """A fresh imfused with its own directory work/name, started (Daemon's arguments)."""
    os.makedirs(os.path.join(work, name), exist_ok=True)
    d = Daemon(os.path.join(work, name), port, cafile, config=config, extra=extra)
    d.start()
    return d
