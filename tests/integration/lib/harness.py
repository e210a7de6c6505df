"""Shared pieces of the Python integration drivers: processes stopped by PID,
real user clients driven over line-JSON, the daemon under test."""
import json
import os
import select
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("IMFUSE_BUILD", "build/asan"))
PY = "/usr/bin/python3"

procs = []      # every process started, stopped by PID at the end


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


def wait_port(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def lib(script, cmd):
    """Run a function of a sourceable bash library in tests/integration/lib."""
    subprocess.run(["bash", "-c", "source %s/%s && %s" % (HERE, script, cmd)], check=True)


class JsonPeer:
    """A real IM client (xmpp_peer.py, irc_peer.py, sip_peer.py): JSON lines both ways."""

    def __init__(self, name, argv):
        self.name = name
        self.p = subprocess.Popen([PY] + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(self.p)

    def expect(self, pred, what, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self.p.stdout], [], [], max(0.0, end - time.monotonic()))
            if not r:
                break
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("peer %s exited while waiting for %s" % (self.name, what))
            e = json.loads(line)
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
    def __init__(self, work, port, cafile=None):
        self.data = os.path.join(work, "var")
        self.ctl = os.path.join(self.data, "imfused.sock")
        self.port = port
        self.cafile = cafile
        self.logpath = os.path.join(work, "imfused.log")
        self.p = None

    def start(self):
        logf = open(self.logpath, "a")
        argv = [os.path.join(BUILD, "imfused"), "--data", self.data, "--listen",
                "127.0.0.1:%d" % self.port, "--control", self.ctl, "--log-level", "debug"]
        if self.cafile:
            argv += ["--ca-file", self.cafile]
        self.p = subprocess.Popen(argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        procs.append(self.p)
        if not wait_port(self.port):
            raise RuntimeError("imfused did not start; see " + self.logpath)

    def stop(self):
        return stop_proc(self.p)

    def ctl_cmd(self, *args, stdin=None):
        return subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", self.ctl] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=30)
