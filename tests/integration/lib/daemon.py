"""imfused under test with a config file, and a raw client connection: the
pieces the hostile-client tests (tests/integration/client/limits.py,
replies.py) share.  Run with /usr/bin/python3 (Debian's python3-msgpack)."""
import json
import os
import resource
import socket
import struct
import subprocess
import time

import msgpack

from harness import BUILD, check, procs, stop_proc

MIB = 1 << 20


def frame(obj):
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def remember_pid(work, pid):
    """List pid in WORK/pids: the shell wrapper stops it by PID whatever happens."""
    with open(os.path.join(work, "pids"), "a") as f:
        f.write("%d\n" % pid)


class Imfused:
    """imfused with a config file (key = value), its data under work/name."""

    def __init__(self, work, name, port, conf, listen_host="127.0.0.1", nofile=None, asan=None, extra=()):
        self.work = work
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port
        self.ctl = os.path.join(self.dir, "ctl.sock")
        self.logpath = os.path.join(self.dir, "imfused.log")
        self.conf = os.path.join(self.dir, "imfused.conf")
        with open(self.conf, "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        self.argv = [os.path.join(BUILD, "imfused"), "--config", self.conf, "--data",
                     os.path.join(self.dir, "var"), "--listen", "%s:%d" % (listen_host, port),
                     "--control", self.ctl, "--log-level", "info"] + list(extra)
        self.nofile = nofile
        self.asan = asan
        self.p = None

    def start(self):
        env = dict(os.environ)
        if self.asan:
            env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":" + self.asan).lstrip(":")
        nofile = self.nofile

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        logf = open(self.logpath, "a")
        self.p = subprocess.Popen(self.argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                  env=env, preexec_fn=limit)
        logf.close()
        procs.append(self.p)
        remember_pid(self.work, self.p.pid)
        end = time.monotonic() + 15
        while not os.path.exists(self.ctl) or "ready:" not in self.log():
            if self.p.poll() is not None or time.monotonic() > end:
                raise RuntimeError("imfused did not start; see " + self.logpath)
            time.sleep(0.05)

    def stop(self):
        rc = stop_proc(self.p)
        check(rc == 0, "%s: imfused exits 0 on SIGTERM (ASan clean)" % os.path.basename(self.dir))

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def ctl_cmd(self, *args, stdin=None):
        return subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", self.ctl] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=30)

    def adduser(self, name, pw):
        r = self.ctl_cmd("user", "add", name, stdin=pw + "\n")
        check(r.returncode == 0, "user %s added (%s)" % (name, r.stderr.strip()))

    def stats(self):
        r = self.ctl_cmd("--json", "stats")
        if r.returncode != 0:
            raise RuntimeError("imfusectl stats: " + r.stderr)
        return json.loads(r.stdout)["stats"]

    def wait_stat(self, pred, what, timeout=30.0):
        end = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > end:
                raise TimeoutError("timed out waiting for %s; stats: %r" % (what, st))
            time.sleep(0.1)

    def rss(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu(self):
        """User + system CPU seconds used so far."""
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fd_limit_leaving(self, free):
        """A file limit that leaves the daemon exactly `free` more descriptors."""
        used = {int(x) for x in os.listdir("/proc/%d/fd" % self.p.pid)}
        n = 0
        while free:
            if n not in used:
                free -= 1
            n += 1
        return n


class Conn:
    """A raw client connection: frames out, frames in."""

    def __init__(self, port, src=None, host="127.0.0.1", timeout=15.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if src:
            self.sock.bind((src, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.next_id = 0
        self.eof = False

    def send(self, obj):
        self.sock.sendall(frame(obj))

    def recv(self, timeout=15.0):
        """The next frame, or None at EOF (or a reset); TimeoutError at the deadline."""
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return msgpack.unpackb(body, raw=False)
            if self.eof:
                return None
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame within %.1f s" % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame within %.1f s" % timeout)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self.buf += data

    def request(self, op, timeout=15.0, **fields):
        self.next_id += 1
        rid = self.next_id
        self.send(dict(fields, op=op, id=rid))
        while True:
            m = self.recv(timeout)
            if m is None:
                raise ConnectionError("closed while waiting for the reply to %s" % op)
            if m.get("id") == rid and m.get("op") in ("ok", "error"):
                return m

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
