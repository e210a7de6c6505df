"""The connection limits with imfused --io dpdk (limits.sh runs this in a
private network namespace with a persistent TAP imf0 at 198.18.0.1; lwIP is
198.18.0.2).  Run with /usr/bin/python3."""
import argparse
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import check, log  # noqa: E402
from daemon import MIB, Conn, Imfused  # noqa: E402

APPLIANCE = "198.18.0.2"
PORT = 17731
DPDK = {
    "io": "dpdk",
    "dpdk-eal": "--no-pci --no-huge -m 512 --no-shconf --no-telemetry --vdev=net_tap0,iface=imf0",
    "dpdk-port": "net_tap0",
    "dpdk-address": "198.18.0.2/24",
    "dpdk-gateway": "198.18.0.1",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    work = ap.parse_args().work
    conf = dict(DPDK, **{"prelogin-timeout": 3, "max-conns-per-address": 8, "prelogin-memory": "4M",
                         "tcp-keepalive": 1})
    d = Imfused(work, "dpdk", PORT, conf, listen_host=APPLIANCE)
    d.start()
    d.adduser("alice", "alice-pw")

    log("# pre-login timeout over lwIP")
    idle = Conn(PORT, host=APPLIANCE)
    m = idle.recv(timeout=30)
    check(m and m.get("code") == "limit" and "id" not in m and "prelogin-timeout" in m.get("message", ""),
          "an idle unauthenticated connection gets {error limit} without id: %r" % m)
    check(idle.recv(timeout=10) is None, "... and is closed")

    log("# the cap per address")
    conns = [Conn(PORT, host=APPLIANCE) for _ in range(9)]
    last = conns[-1].recv(timeout=10)
    check(last and last.get("code") == "limit" and "max-conns-per-address" in last.get("message", ""),
          "the 9th connection from one address is refused: %r" % last)
    check(conns[0].request("ping")["op"] == "ok", "the first 8 are served")
    for c in conns:
        c.close()
    d.wait_stat(lambda s: s["clients_open"] == 0, "those closed")

    log("# partial 1 MiB frames against prelogin-memory 4M")
    part = struct.pack(">I", MIB) + b"x" * (MIB - 1)
    parts = []
    for _ in range(8):
        c = Conn(PORT, host=APPLIANCE, timeout=30)
        try:
            c.sock.sendall(part)
        except OSError:
            pass
        parts.append(c)
    st = d.wait_stat(lambda s: s["prelogin_evicted"] >= 4, "the budget to close the largest", 60)
    check(st["prelogin_bytes"] <= 4 * MIB, "the receive buffers stay within 4 MiB (%d bytes; %d closed)" %
          (st["prelogin_bytes"], st["prelogin_evicted"]))
    for c in parts:
        c.close()

    log("# a dead peer, found by lwIP's keepalive")
    c = Conn(PORT, host=APPLIANCE)
    check(c.request("login", user="alice", password="alice-pw")["op"] == "ok", "alice logs in over lwIP")
    subprocess.run(["ip", "link", "set", "imf0", "down"], check=True)   # her host is gone
    end = time.monotonic() + 60
    while time.monotonic() < end:
        st = d.stats()
        if st["clients_timed_out"] >= 1:
            break
        time.sleep(0.5)
    check(st["clients_timed_out"] >= 1 and st["sessions"] == 0,
          "keepalive closes the dead peer's session (clients_timed_out %d)" % st["clients_timed_out"])
    subprocess.run(["ip", "link", "set", "imf0", "up"], check=True)
    c.close()
    end = time.monotonic() + 20
    ok = False
    while not ok and time.monotonic() < end:
        try:
            n = Conn(PORT, host=APPLIANCE, timeout=5)
            ok = n.request("ping", timeout=5)["op"] == "ok"
            n.close()
        except OSError:
            time.sleep(0.5)
    check(ok, "the appliance serves again once the link is back")
    d.stop()


if __name__ == "__main__":
    harness.run(main)
