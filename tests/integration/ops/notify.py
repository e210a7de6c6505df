"""imfused speaks systemd's notify protocol (sd_notify(3)) over $NOTIFY_SOCKET:
a datagram socket stands in for systemd and records what arrives."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import BUILD, ROOT, check, procs, run, stop_proc  # noqa: E402

PORT = 17740
CONF = os.path.join(ROOT, "images", "imfused.conf")


def start(work, env_extra):
    """imfused with the shipped default config, paths moved under work."""
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(env_extra)
    logf = open(os.path.join(work, "imfused.log"), "a")
    p = subprocess.Popen([os.path.join(BUILD, "imfused"), "--config", CONF, "--data", work + "/var",
                          "--control", work + "/ctl.sock", "--listen", "127.0.0.1:%d" % PORT],
                         stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=env)
    logf.close()
    procs.append(p)
    return p


def recv(sock, timeout):
    """The next notify datagram as a dict of its KEY=VALUE lines, or None."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096).decode()
    except socket.timeout:
        return None
    return dict(line.split("=", 1) for line in data.split("\n") if "=" in line)


def answers(work):
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
    except OSError:
        return False
    r = subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", work + "/ctl.sock", "stats"],
                       capture_output=True, text=True, timeout=20)
    return r.returncode == 0 and "clients_accepted" in r.stdout


def main():
    work = tempfile.mkdtemp(prefix="imfuse-notify.")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(work + "/notify.sock")

    # 1. readiness, the watchdog and stopping, as systemd would see them
    p = start(work, {"NOTIFY_SOCKET": work + "/notify.sock", "WATCHDOG_USEC": "4000000"})
    first = recv(nsock, 60)
    check(first is not None and first.get("READY") == "1", "the first notification is READY=1: %r" % first)
    check(answers(work), "at READY the client listener accepts and the control socket answers stats")
    check("127.0.0.1:%d" % PORT in first.get("STATUS", ""), "STATUS names the listener: %r" % first.get("STATUS"))
    pings, end = 0, time.monotonic() + 10
    while time.monotonic() < end:
        m = recv(nsock, max(0.1, end - time.monotonic()))
        if m is None:
            break
        check(m.get("WATCHDOG") == "1", "after READY only WATCHDOG=1 arrives: %r" % m)
        pings += 1
    # half of the 4 s period, plus at most 1 s of loop wait: at least 3 in 10 s
    check(pings >= 3, "WATCHDOG=1 keeps coming with WATCHDOG_USEC=4 s (%d in 10 s)" % pings)
    p.send_signal(signal.SIGTERM)
    m = recv(nsock, 10)
    while m is not None and m.get("WATCHDOG") == "1":
        m = recv(nsock, 10)
    check(m is not None and m.get("STOPPING") == "1", "SIGTERM brings STOPPING=1: %r" % m)
    check(p.wait(30) == 0, "and exit 0")

    # 2. no watchdog asked for: READY, then nothing until STOPPING
    p = start(work, {"NOTIFY_SOCKET": work + "/notify.sock"})
    m = recv(nsock, 60)
    check(m is not None and m.get("READY") == "1", "restarted on the same store: READY=1 again")
    check(recv(nsock, 3) is None, "without WATCHDOG_USEC no pings")
    p.send_signal(signal.SIGTERM)
    m = recv(nsock, 10)
    check(m is not None and m.get("STOPPING") == "1", "STOPPING=1: %r" % m)
    check(p.wait(30) == 0, "exit 0")

    # 3. a notify socket nobody listens on: a warning, never a failure
    p = start(work, {"NOTIFY_SOCKET": work + "/nobody.sock"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not answers(work):
        time.sleep(0.2)
    check(p.poll() is None and answers(work), "with an unreachable NOTIFY_SOCKET imfused still serves")
    check(stop_proc(p, wait=30) == 0, "and stops with exit 0")
    with open(work + "/imfused.log") as f:
        text = f.read()
    check("sd_notify READY" in text, "the unreachable notify socket is logged")
    nsock.close()
    shutil.rmtree(work)     # kept when a check failed, for its log


run(main)
