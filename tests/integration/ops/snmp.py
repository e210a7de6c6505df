"""imfused's AgentX subagent (IMFUSE-MIB) under a real snmpd master, with a
real snmptrapd receiving its notifications (issue 11, item 1).

Run by snmp.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

  1. smilint -l 4 passes mibs/IMFUSE-MIB.txt with no error (the IETF base
     modules from erlang-snmp, NET-SNMP-MIB from libsnmp-base).
  2. snmpwalk -v2c by name shows every readable object of the MIB (read
     from the MIB file itself), with two IRC accounts online on ngircd.
  3. On a quiet daemon each value equals `imfusectl --json stats`: the key
     named in the object's DESCRIPTION ("(stats: msgs_in)"), so the test
     checks the document against the daemon.
  4. snmpd frozen (SIGSTOP: a hung master), then killed: imfused is
     unaffected, a client keeps sending messages to a real IRC user and
     imfusectl answers; snmpd restarted: values walkable again within 10 s.
     Then a master that answers the Open and goes away at the Register (a
     few lines of Python: what the frozen snmpd does at random, every time),
     and snmpd again: walkable within 10 s.
  5. Notifications, received by snmptrapd: imfuseAccountStorm when both
     accounts leave online (ngircd stopped, account-storm 1), and
     imfuseStoreNearlyFull when the store passes 90 % of its 1 MiB map.
  6. With io dpdk (net_tap): the port's kernel side taken down gives
     imfusePortDown, imfuseWorkerPortStatus down(2) and io_port_down 1.
"""
import glob
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (BUILD, HERE as LIB, ROOT, Daemon, JsonPeer, account_state, check, lib, log,  # noqa: E402
                     procs, remove_at_end, run, stop_at_end, stop_proc)
from imclient import Client  # noqa: E402
from testenv import SERVER_ADDR, server, wait_port  # noqa: E402

MIB = os.path.join(ROOT, "mibs", "IMFUSE-MIB.txt")
ERLANG_MIBS = (glob.glob("/usr/lib/erlang/lib/snmp-*/mibs") or [""])[0]
MIBDIRS = ":".join([ERLANG_MIBS, "/usr/share/snmp/mibs", os.path.join(ROOT, "mibs")])
SNMP_PORT = 16161
TRAP_PORT = 16162
NGIRCD_PORT = 16670
IMFUSE_PORT = 17742
DPDK_PORT = 17743


def mib_objects():
    """{name: (access, the stats expression of its DESCRIPTION or None)} of every OBJECT-TYPE."""
    text = open(MIB).read()
    objs = {}
    for m in re.finditer(r"^(\w+) OBJECT-TYPE(.*?)::=", text, re.S | re.M):
        name, body = m.group(1), m.group(2)
        access = re.search(r"MAX-ACCESS\s+([\w-]+)", body).group(1)
        desc = re.search(r'DESCRIPTION\s+"(.*?)"', body, re.S).group(1)
        st = re.search(r"\(stats:\s*([^);]+?)\s*[);,]", " ".join(desc.split()))
        objs[name] = (access, st.group(1) if st else None)
    return objs


class Snmp:
    """snmpd as the AgentX master (udp 127.0.0.1:16161) and snmptrapd (udp
    16162), each with its persistentDir apart from its config file."""

    def __init__(self, work):
        self.dir = os.path.join(work, "snmp")
        os.makedirs(os.path.join(self.dir, "state"))
        os.makedirs(os.path.join(self.dir, "trapstate"))
        self.agentx = os.path.join(self.dir, "agentx.sock")
        self.env = dict(os.environ, SNMPCONFPATH=self.dir, MIBS="", SNMP_PERSISTENT_DIR=os.path.join(self.dir, "cli"))
        with open(os.path.join(self.dir, "snmpd.conf"), "w") as f:
            f.write("[snmp] persistentDir %s/state\nmaster agentx\nagentXSocket %s\nagentXPerms 0660 0750\n"
                    "agentXTimeout 2\nview imfuse included .1.3.6.1.4.1.8072.9999.9999.1\n"
                    "rocommunity public 127.0.0.1 -V imfuse\n"
                    "trap2sink 127.0.0.1:%d public\n" % (self.dir, self.agentx, TRAP_PORT))
        with open(os.path.join(self.dir, "snmptrapd.conf"), "w") as f:
            f.write("[snmp] persistentDir %s/trapstate\nauthCommunity log public\n" % self.dir)
        self.trapd = self._spawn("snmptrapd", ["snmptrapd", "-f", "-Lo", "-C", "-c",
                                               os.path.join(self.dir, "snmptrapd.conf"), "-p",
                                               os.path.join(self.dir, "snmptrapd.pid"), "-M", MIBDIRS,
                                               "-m", "IMFUSE-MIB", "udp:127.0.0.1:%d" % TRAP_PORT])
        self.snmpd = None
        self.start()

    def _spawn(self, name, argv):
        logf = open(os.path.join(self.dir, name + ".log"), "a")
        p = subprocess.Popen(argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env)
        logf.close()
        procs.append(p)
        return p

    def start(self):
        self.snmpd = self._spawn("snmpd", ["snmpd", "-f", "-Lo", "-C", "-c", os.path.join(self.dir, "snmpd.conf"),
                                           "-p", os.path.join(self.dir, "snmpd.pid"), "-I", "-smux",
                                           "udp:127.0.0.1:%d" % SNMP_PORT])
        end = time.monotonic() + 10
        while not os.path.exists(self.agentx) and time.monotonic() < end:
            time.sleep(0.05)
        if not os.path.exists(self.agentx):
            raise RuntimeError("snmpd did not open its AgentX socket; see %s/snmpd.log" % self.dir)

    def kill(self):
        self.snmpd.kill()
        self.snmpd.wait()
        try:
            os.unlink(self.agentx)
        except FileNotFoundError:
            pass

    def cmd(self, prog, *args, timeout=30):
        return subprocess.run([prog, "-v2c", "-c", "public", "-t", "2", "-r", "1", "-M", MIBDIRS, "-m", "IMFUSE-MIB"]
                              + list(args), capture_output=True, text=True, timeout=timeout, env=self.env)

    def walk(self):
        """{"imfuseMsgsIn.0": "12", ...}: numbers plain (-OQsUet), strings unquoted."""
        r = self.cmd("snmpwalk", "-OQsUet", "127.0.0.1:%d" % SNMP_PORT, "imfuseMIB")
        vals = {}
        for line in r.stdout.splitlines():
            if " = " in line:
                k, v = line.split(" = ", 1)
                if not v.startswith("No more variables"):   # the walk's end, past the subtree
                    vals[k.strip()] = v.strip().strip('"')
        return vals, r

    def traps(self):
        with open(os.path.join(self.dir, "snmptrapd.log")) as f:
            return f.read()


def agentx_pdu(c):
    """(type, flags, transactionID, packetID) of the next AgentX PDU (RFC 2741
    section 6.1: a 20-byte header, then the payload, skipped); None at EOF."""
    data = b""
    while len(data) < 20:
        b = c.recv(20 - len(data))
        if not b:
            return None
        data += b
    order = "!" if data[2] & 0x10 else "<"
    _, typ, flags, _, _, tid, pid, plen = struct.unpack(order + "BBBBIIII", data)
    while plen > 0:
        b = c.recv(min(plen, 65536))
        if not b:
            return None
        plen -= len(b)
    return typ, flags, tid, pid


def master_dying_at_register(path):
    """A master that answers the subagent's Open and goes away when its
    Register comes: what a frozen snmpd, let go and killed at once, does now
    and then (step 4), here every time.  Returns the type of the PDU that
    followed the Open (3: Register)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(10)
        c, _ = srv.accept()
        with c:
            c.settimeout(10)
            typ, flags, tid, pid = agentx_pdu(c)
            if typ != 1:                                # agentx-Open-PDU
                return None
            order = "!" if flags & 0x10 else "<"
            # agentx-Response-PDU (18): a session id, the Open's ids, noAgentXError
            c.sendall(struct.pack(order + "BBBBIIIIIHH", 1, 18, flags & 0x10, 0, 1, tid, pid, 8, 0, 0, 0))
            nxt = agentx_pdu(c)
            return nxt[0] if nxt else None
    finally:
        srv.close()
        os.unlink(path)


def wait_trap(snmp, name, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = snmp.traps()
        for block in text.split("\n"):
            if "= OID: IMFUSE-MIB::%s\t" % name in block + "\t":
                return block
        time.sleep(0.2)
    return None


def stats(d):
    r = d.ctl_cmd("--json", "stats")
    return json.loads(r.stdout)["stats"] if r.returncode == 0 else {}


def expected(objs, name, index, st, walked):
    """The value an object should have from stats, or None when its
    DESCRIPTION names none (checked apart)."""
    expr = objs[name][1]
    if not expr:
        return None
    if "NET" in expr:
        net = walked.get("imfuseNetName.%s" % index)
        return st.get(expr.replace("NET", net)) if net else None
    m = re.fullmatch(r"(\w+) minus (\w+)", expr)
    if m:
        return st[m.group(1)] - st[m.group(2)]
    m = re.fullmatch(r"(\w+)", expr.split(",")[0])
    if m and m.group(1) in st and m.group(1) not in ("uptime_s", "io_port_down"):
        return st[m.group(1)]
    return None


def compare(objs, walked, st):
    """The objects whose walked value differs from stats: [(instance, walked, wanted)]."""
    bad = []
    for inst, v in walked.items():
        name, _, index = inst.partition(".")
        if name not in objs:
            continue
        want = expected(objs, name, index, st, walked)
        if want is not None and str(want) != v:
            bad.append((inst, v, want))
    return bad


def restart_walkable(snmp):
    """Start snmpd again and wait (at most 10 s) until imfused's objects answer
    through it: (answered, seconds taken)."""
    t0 = time.monotonic()
    snmp.start()
    ok = False
    while time.monotonic() - t0 < 10 and not ok:
        r = snmp.cmd("snmpget", "-OQsUet", "127.0.0.1:%d" % SNMP_PORT, "imfuseMsgsOut.0")
        ok = r.returncode == 0 and "imfuseMsgsOut.0 = " in r.stdout and "No Such" not in r.stdout
        if not ok:
            time.sleep(0.2)
    return ok, time.monotonic() - t0


def main():
    work = tempfile.mkdtemp(prefix="imfuse-snmp.")
    remove_at_end(work)     # once its servers (their pid files are there) are stopped
    log("# work directory %s" % work)
    objs = mib_objects()
    readable = sorted(n for n, (a, _) in objs.items() if a == "read-only")

    # 1. the MIB itself
    r = subprocess.run(["smilint", "-l", "4", MIB], capture_output=True, text=True,
                       env=dict(os.environ, SMIPATH=MIBDIRS))
    check(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
          "1. smilint -l 4 mibs/IMFUSE-MIB.txt: no error, no warning %r" % (r.stdout + r.stderr))
    check(len(readable) >= 40, "the MIB has %d readable objects" % len(readable))

    snmp = Snmp(work)
    ircdir = os.path.join(work, "ngircd")
    stop_at_end("ircd.sh", "ngircd_stop %s" % ircdir)
    lib("ircd.sh", "ngircd_start %s %d" % (ircdir, NGIRCD_PORT))
    d = Daemon(work, IMFUSE_PORT, extra=["--snmp-agentx", snmp.agentx, "--account-storm", "1",
                                         "--store-map-size", "1M"])
    d.start()
    r = d.ctl_cmd("user", "add", "alice", stdin="pw-alice\n")
    check(r.returncode == 0, "user alice added")
    c = Client(port=IMFUSE_PORT)
    check(c.login("alice", "pw-alice")["op"] == "ok", "alice logged in")
    accs = []
    for nick in ("alice1", "alice2"):
        a = c.call("link", network="irc", login=nick, password="", server=server(NGIRCD_PORT), tls="none",
                   name=nick)["account"]
        account_state(c, a, ("online",))
        accs.append(a)
    bob = JsonPeer("bob", [os.path.join(LIB, "irc_peer.py"), "bob", SERVER_ADDR, str(NGIRCD_PORT)], fatal=("error",))
    bob.expect(lambda e: e["ev"] == "online", "bob online")
    for i in range(3):
        c.call("send", to={"account": accs[0], "address": "bob"}, body="before %d" % i)
        bob.expect(lambda e: e["ev"] == "message" and e["body"] == "before %d" % i, "message %d" % i)

    # 2. every object, by name
    walked, r = snmp.walk()
    missing = [n for n in readable if not any(k.split(".")[0] == n for k in walked)]
    check(r.returncode == 0 and not missing, "2. snmpwalk -v2c by name shows all %d objects (missing %r; %s)"
          % (len(readable), missing, r.stderr.strip()[:200]))
    check(walked.get("imfuseVersion.0") == subprocess.run([os.path.join(BUILD, "imfused"), "--version"],
                                                          capture_output=True, text=True).stdout.split()[-1],
          "imfuseVersion.0 is imfused --version: %r" % walked.get("imfuseVersion.0"))
    check(walked.get("imfuseIoBackend.0") == "1" and walked.get("imfuseWorkers.0") == "1"
          and walked.get("imfuseAccountStormThreshold.0") == "1",
          "io kernel(1), 1 worker, account-storm 1")
    check([walked.get("imfuseNetName.%d" % i) for i in (1, 2, 3)] == ["xmpp", "irc", "sip"],
          "the account table has a row per network")
    check(walked.get("imfuseAccountsOnline.2") == "2", "two irc accounts online: %r" % walked.get("imfuseAccountsOnline.2"))
    check(walked.get("imfuseWorkerPortStatus.1") == "3", "io kernel: imfuseWorkerPortStatus none(3)")

    # 3. quiet: the walk equals stats, the MIB's DESCRIPTIONs naming the keys
    bad, checked = ["not run"], 0
    for attempt in range(5):
        s1 = stats(d)
        walked, _ = snmp.walk()
        s2 = stats(d)
        quiet = all(s1[k] == s2[k] for k in s1 if k not in ("uptime_s",))
        bad = compare(objs, walked, s2)
        checked = sum(1 for inst in walked if inst.split(".")[0] in objs
                      and expected(objs, inst.split(".")[0], inst.partition(".")[2], s2, walked) is not None)
        if quiet and not bad:
            break
        time.sleep(1)
    check(not bad and checked >= 40, "3. on a quiet daemon %d values equal imfusectl --json stats (differ: %r)"
          % (checked, bad))
    up = int(walked.get("imfuseUptime.0", "-1")) // 100
    check(abs(up - s2["uptime_s"]) <= 2, "imfuseUptime %d s, stats uptime_s %d" % (up, s2["uptime_s"]))
    pct = s2["store_pages_used"] * s2["store_page_size"] * 100 // s2["store_map_size"]
    check(walked.get("imfuseStoreUsedPercent.0") == str(pct), "imfuseStoreUsedPercent %s = %d" %
          (walked.get("imfuseStoreUsedPercent.0"), pct))

    # 4. a hung, then a dead master: imfused does not notice.  Each send is
    # answered after the controlplane's commit, so a stalled controlplane
    # would show as a late answer (a hung master blocks the subagent's calls
    # for seconds); the messages then reach bob at IRC's pace.
    def keep_sending(tag, seconds):
        n, worst, end = 0, 0.0, time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            c.call("send", to={"account": accs[0], "address": "bob"}, body="%s %d" % (tag, n))
            worst = max(worst, time.monotonic() - t)
            n += 1
            time.sleep(0.2)
        for i in range(n):
            bob.expect(lambda e: e["ev"] == "message" and e["body"] == "%s %d" % (tag, i), "%s %d" % (tag, i),
                       timeout=60)
        return n, worst

    snmp.snmpd.send_signal(signal.SIGSTOP)
    t = time.monotonic()
    n, worst = keep_sending("hung", 8)
    r = d.ctl_cmd("stats")
    check(n >= 20 and worst < 2.0 and r.returncode == 0,
          "4. snmpd frozen (SIGSTOP) 8 s: %d sends answered (the slowest in %.2f s), all reached bob, "
          "imfusectl stats answers" % (n, worst))
    snmp.snmpd.send_signal(signal.SIGCONT)
    snmp.kill()
    n, worst = keep_sending("dead", 5)
    check(n >= 15 and worst < 2.0 and d.p.poll() is None and d.ctl_cmd("stats").returncode == 0,
          "snmpd killed: %d sends answered (the slowest in %.2f s), all reached bob, imfused serves" % (n, worst))
    ok, took = restart_walkable(snmp)
    walked, r = snmp.walk()
    st = stats(d)
    check(ok and int(walked.get("imfuseMsgsOut.0", -1)) == st["msgs_out"],
          "snmpd restarted: walkable again after %.1f s (at most 10), imfuseMsgsOut %s = msgs_out %d"
          % (took, walked.get("imfuseMsgsOut.0"), st["msgs_out"]))
    # A master that dies while the subagent registers: net-snmp 5.9.3 then
    # registered nothing on later connections (the master answered
    # noSuchObject for good); imfused registers again after each one.
    snmp.kill()
    after_open = master_dying_at_register(snmp.agentx)
    ok, took = restart_walkable(snmp)
    check(after_open == 3 and ok and d.p.poll() is None,
          "a master gone when the subagent's Register came (PDU %s after the Open): snmpd restarted, "
          "walkable again after %.1f s (at most 10)" % (after_open, took))

    # 5. notifications: an account storm, then a store nearly full
    bob.quit()
    lib("ircd.sh", "ngircd_stop %s" % ircdir)
    block = wait_trap(snmp, "imfuseAccountStorm")
    check(block is not None and "imfuseStormAccounts.0 = " in block and "imfuseAccountStormThreshold.0 = " in block,
          "5. ngircd stopped: snmptrapd got imfuseAccountStorm %r" % block)
    r = d.ctl_cmd("accounts", "--state", "online")
    check(r.returncode == 0 and len(r.stdout.strip().splitlines()) == 1, "no account online now")

    # fill the 1 MiB store with ever larger unified lists, until 90 % (the
    # high-water mark of pages: each list is written before the last is freed)
    pct, size, step = 0, 0, 200
    while pct < 90:
        size += step
        lst = [{"name": "contact %05d %s" % (i, "x" * 200), "members": [{"account": accs[0], "address": "n%d" % i}]}
               for i in range(size)]
        rr = c.request("set_unified", contacts=lst)
        st = stats(d)
        pct = st["store_pages_used"] * st["store_page_size"] * 100 // st["store_map_size"]
        if rr["op"] != "ok":
            break
        step = 200 if pct < 60 else 40
    check(pct >= 90, "the store reached %d %% of its map (a list of %d unified contacts)" % (pct, size))
    block = wait_trap(snmp, "imfuseStoreNearlyFull")
    check(block is not None and "imfuseStoreUsedPercent.0 = " in block and "imfuseStoreMapSize.0 = " in block,
          "snmptrapd got imfuseStoreNearlyFull %r" % block)
    with open(d.logpath) as f:
        text = f.read()
    check("the store is nearly full" in text and "account storm" in text, "both are in imfused's log too")
    c.close()
    check(d.stop() == 0, "imfused stops with exit 0 (the subagent thread ends)")

    # 6. io dpdk: the port's link goes down
    if not dpdk_part(work, snmp):
        return


def dpdk_part(work, snmp):
    """imfused --io dpdk on a net_tap port; its kernel side taken down."""
    wd = os.path.join(work, "dpdk")
    os.makedirs(wd)
    subprocess.run(["ip", "tuntap", "add", "dev", "imfsnmp0", "mode", "tap", "multi_queue"], check=True)
    args = ["--io", "dpdk", "--dpdk-eal", "--no-pci --no-huge -m 256 --no-shconf --no-telemetry "
            "--vdev=net_tap0,iface=imfsnmp0", "--dpdk-port", "net_tap0", "--dpdk-address", "198.18.3.2/24",
            "--dpdk-tap-kernel", "198.18.3.1/24", "--snmp-agentx", snmp.agentx]
    logf = open(os.path.join(wd, "imfused.log"), "a")
    p = subprocess.Popen([os.path.join(BUILD, "imfused"), "--data", os.path.join(wd, "var"), "--listen",
                          "198.18.3.2:%d" % DPDK_PORT, "--control", os.path.join(wd, "ctl.sock")] + args,
                         stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    procs.append(p)
    check(wait_port("198.18.3.2", DPDK_PORT, 30), "6. imfused --io dpdk answers on 198.18.3.2 (net_tap)")
    ctl = [os.path.join(BUILD, "imfusectl"), "-s", os.path.join(wd, "ctl.sock"), "--json", "stats"]
    walked = {}
    end = time.monotonic() + 10
    while time.monotonic() < end and walked.get("imfuseWorkerPortStatus.1") != "1":
        walked, _ = snmp.walk()
        time.sleep(0.3)
    check(walked.get("imfuseIoBackend.0") == "2" and walked.get("imfuseWorkerPortStatus.1") == "1",
          "io dpdk(2), port up(1): %r %r" % (walked.get("imfuseIoBackend.0"), walked.get("imfuseWorkerPortStatus.1")))
    subprocess.run(["ip", "link", "set", "imfsnmp0", "down"], check=True)
    block = wait_trap(snmp, "imfusePortDown")
    check(block is not None and "imfuseWorkerPortStatus.1 = " in block, "the TAP taken down: imfusePortDown %r" % block)
    st = json.loads(subprocess.run(ctl, capture_output=True, text=True).stdout)["stats"]
    walked, _ = snmp.walk()
    check(st["io_port_down"] == 1 and st["io_port_downs"] == 1 and walked.get("imfuseWorkerPortStatus.1") == "2"
          and walked.get("imfuseWorkerPortDowns.1") == "1",
          "stats io_port_down 1, io_port_downs 1; imfuseWorkerPortStatus down(2)")
    check(stop_proc(p, wait=30) == 0, "imfused --io dpdk stops with exit 0")
    subprocess.run(["ip", "link", "del", "imfsnmp0"])
    return True


run(main)
