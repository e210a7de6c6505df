#!/usr/bin/python3
"""imfuse client protocol v1, checked to the letter from its documentation.

This is an outside developer's client: it was written from docs/CLIENT-PROTOCOL.md,
docs/OPERATIONS.md and README.md only (not from the appliance's sources nor from
tests/integration/lib/imclient.py).  It starts build/asan/imfused against a real
prosody (started by spec.sh) and a real XMPP peer (tests/integration/lib/xmpp_peer.py),
exercises every op and event of the document and compares field names, types and
values with its tables and worked examples.

    /usr/bin/python3 spec.py --work DIR --root REPO --c2s PORT --c2s-tls PORT --ca FILE \
        --server-addr IP --appliance-addr IP --server-name NAME --source-net NET/16 \
        [--imfused-wrap 'COMMAND PREFIX'] [--imfused-args 'ARGS']

Addresses (spec.sh passes those of tests/integration/lib/testenv.sh): prosody
at --server-addr, on the same side as this client and its XMPP peers; imfused
listening at --appliance-addr, started under --imfused-wrap with --imfused-args
last (e.g. a --config that selects --io dpdk; not on the start-up refusals
checked, which need no port); --server-name
resolves to the server address; the lockout checks bind to further source
addresses of --source-net.

Every check prints `ok   - ...` or `FAIL - ...`; lines starting with `#` are notes
(measurements and places where the document leaves the answer open).  The script
ends with a summary and exits 1 when any check failed.

It is also its own XMPP helper: `spec.py --xmpp-oneshot JSON` logs in with slixmpp
with a chosen resource, sends a presence (optionally with <show/>) and one chat
message (optionally with an XEP-0203 delay stamp), then waits for EOF on stdin.
"""
import argparse
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
import queue as queuemod

import msgpack

MIB = 1048576
APPLIANCE_ADDR = None    # imfused's listeners: main() sets it from --appliance-addr
NETWORKS = ("xmpp", "irc", "sip")
TLS_MODES = ("starttls", "tls", "none")
STATES = ("connecting", "online", "offline", "auth_failed", "error")
PRESENCES = ("available", "away", "offline", "unknown")
CODES = ("bad_request", "auth_failed", "not_logged_in", "exists", "not_found", "unsupported",
         "account_offline", "limit", "internal")

# ---------------------------------------------------------------------------
# reporting

N_OK = 0
FAILS = []
NOTES = []


def short(obj, n=300):
    s = repr(obj)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def check(cond, what, got=None):
    global N_OK
    if cond:
        N_OK += 1
        print("ok   - " + what, flush=True)
    else:
        FAILS.append(what)
        extra = "" if got is None else "   [got: %s]" % short(got)
        print("FAIL - " + what + extra, flush=True)
    return bool(cond)


def note(text):
    NOTES.append(text)
    print("# " + text, flush=True)


def section(title):
    print("# --- " + title, flush=True)


# ---------------------------------------------------------------------------
# the wire format, from §1 and §2

def is_uint(v):
    return type(v) is int and 0 <= v < 2 ** 64


def is_str(v):
    return type(v) is str


class Undecodable(Exception):
    pass


def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if type(k) is not str:
            raise Undecodable("map key is not a str: %r" % (k,))
        if k in d:
            raise Undecodable("repeated key %r" % k)
        d[k] = v
    return d


def _depth(obj):
    if isinstance(obj, dict):
        return 1 + max([_depth(v) for v in obj.values()] + [0])
    if isinstance(obj, list):
        return 1 + max([_depth(v) for v in obj] + [0])
    return 0


def decode_payload(b):
    """Strict decoder for what the appliance sends: exactly one map, str keys, valid UTF-8."""
    try:
        obj = msgpack.unpackb(b, raw=False, strict_map_key=False, object_pairs_hook=_pairs,
                              use_list=True)
    except msgpack.ExtraData:
        raise Undecodable("bytes after the map")
    except Undecodable:
        raise
    except Exception as e:  # UnicodeDecodeError, ValueError, FormatError ...
        raise Undecodable("%s: %s" % (type(e).__name__, e))
    if type(obj) is not dict:
        raise Undecodable("payload is not a map: %r" % (obj,))
    if _depth(obj) > 32:
        raise Undecodable("nesting deeper than 32")
    return obj


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def mstr(b):
    """msgpack str header + raw bytes (lets us send invalid UTF-8 as a str)."""
    n = len(b)
    if n < 32:
        return bytes([0xA0 | n]) + b
    if n < 256:
        return b"\xd9" + bytes([n]) + b
    if n < 65536:
        return b"\xda" + struct.pack(">H", n) + b
    return b"\xdb" + struct.pack(">I", n) + b


def mmap(n):
    return bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)


# ---------------------------------------------------------------------------
# the client

VIOLATIONS = []     # malformed frames or fields coming from the appliance


def violation(text):
    if len(VIOLATIONS) < 200:
        VIOLATIONS.append(text)
    print("# appliance sent a malformed frame/field: " + text, flush=True)


def _entry_ok(e, where):
    ok = True
    if not isinstance(e, dict):
        violation("%s: contact entry is not a map: %r" % (where, e))
        return False
    for k, pred in (("account", is_uint), ("network", lambda v: v in NETWORKS),
                    ("address", is_str), ("name", is_str),
                    ("groups", lambda v: type(v) is list and all(is_str(g) for g in v)),
                    ("presence", lambda v: v in PRESENCES)):
        if k not in e or not pred(e[k]):
            violation("%s: contact entry field %r missing or wrong: %r" % (where, k, e))
            ok = False
    return ok


def validate_event(ev):
    op = ev.get("op")
    if op == "account":
        spec = {"account": is_uint, "network": lambda v: v in NETWORKS, "login": is_str,
                "state": lambda v: v in STATES}
        opt = {"detail": is_str}
    elif op == "contacts":
        spec = {"account": is_uint, "contacts": lambda v: type(v) is list}
        opt = {}
    elif op == "presence":
        spec = {"account": is_uint, "address": is_str, "presence": lambda v: v in PRESENCES}
        opt = {}
    elif op == "message":
        spec = {"seq": is_uint, "account": is_uint, "network": lambda v: v in NETWORKS,
                "from": is_str, "body": is_str, "ts": is_uint}
        opt = {"resource": is_str, "contact": is_uint}
    elif op == "error":
        spec = {"code": lambda v: v in CODES, "message": is_str}
        opt = {}
    else:
        note("unknown event %r (ignored, as the doc says a client must)" % (op,))
        return
    fields(ev, "the %s event" % op, list(spec) + list(opt))
    for k, pred in spec.items():
        if k not in ev or not pred(ev[k]):
            violation("event %s: field %r missing or wrong: %s" % (op, k, short(ev)))
    for k, pred in opt.items():
        if k in ev and not pred(ev[k]):
            violation("event %s: optional field %r mistyped: %s" % (op, k, short(ev)))
    if op == "contacts" and type(ev.get("contacts")) is list:
        for e in ev["contacts"]:
            _entry_ok(e, "contacts event")
            if isinstance(e, dict) and e.get("account") != ev.get("account"):
                violation("contacts event for account %r holds an entry of account %r"
                          % (ev.get("account"), e.get("account")))


def validate_reply(r):
    if r.get("op") == "ok":
        return
    if r.get("op") != "error":
        violation("reply with op %r (expected ok or error): %s" % (r.get("op"), short(r)))
        return
    if r.get("code") not in CODES or not is_str(r.get("message")):
        violation("error reply without a documented code or a str message: %s" % short(r))


class Closed(Exception):
    pass


class Conn:
    """One client connection.  Replies are matched by id; frames without id are events."""

    def __init__(self, port, host=None, src=None, tls_ctx=None, name="c"):
        self.name = name
        host = host or APPLIANCE_ADDR
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if src:
            s.bind((src, 0))
        s.settimeout(15)
        s.connect((host, port))
        if tls_ctx is not None:
            s = tls_ctx.wrap_socket(s, server_hostname="a.test")
        self.s = s
        self.buf = b""
        self.eof = False
        self.replies = {}
        self.events = []        # every frame without id, in arrival order
        self.log = []           # ("reply", id) / ("event", op) in arrival order
        self.msg_seqs = []      # seq of every message event on this connection
        self.nid = 1000

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send_raw(self, b):
        self.s.sendall(b)

    def send(self, obj):
        self.send_raw(frame(pack(obj)))

    def _frame(self, deadline):
        while True:
            if len(self.buf) >= 4:
                (ln,) = struct.unpack(">I", self.buf[:4])
                if ln == 0 or ln > MIB:
                    violation("%s: frame length %d out of 1..1 MiB" % (self.name, ln))
                    self.eof = True
                    raise Closed()
                if len(self.buf) >= 4 + ln:
                    payload, self.buf = self.buf[4:4 + ln], self.buf[4 + ln:]
                    try:
                        return decode_payload(payload)
                    except Undecodable as e:
                        violation("%s: undecodable frame: %s" % (self.name, e))
                        self.eof = True
                        raise Closed()
            if self.eof:
                raise Closed()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                data = self.s.recv(1 << 16)
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.eof = True
                raise Closed()
            self.buf += data

    def pump(self, deadline):
        """Read and dispatch one frame.  Returns it, or None at the deadline."""
        f = self._frame(deadline)
        if f is None:
            return None
        if "id" in f:
            validate_reply(f)
            if f["id"] in self.replies:
                violation("%s: second reply for id %r: %s" % (self.name, f["id"], short(f)))
            self.replies[f["id"]] = f
            self.log.append(("reply", f["id"]))
        else:
            validate_event(f)
            self.events.append(f)
            self.log.append(("event", f.get("op")))
            if f.get("op") == "message" and is_uint(f.get("seq")):
                self.msg_seqs.append(f["seq"])
        return f

    def new_id(self):
        self.nid += 1
        return self.nid

    def request(self, op, fields=None, timeout=30, rid=None):
        """Send {op, id, **fields}; return the reply (None on timeout or close)."""
        rid = self.new_id() if rid is None else rid
        obj = {"op": op, "id": rid}
        obj.update(fields or {})
        try:
            self.send(obj)
        except OSError:
            return None
        return self.wait_reply(rid, timeout)

    def request_raw(self, rid, raw, timeout=30):
        try:
            self.send_raw(raw)
        except OSError:
            return None
        return self.wait_reply(rid, timeout)

    def wait_reply(self, rid, timeout=30):
        deadline = time.monotonic() + timeout
        while rid not in self.replies:
            try:
                if self.pump(deadline) is None:
                    return None
            except Closed:
                return None
        return self.replies[rid]

    def wait_event(self, pred, timeout=30, since=0):
        """First event (from index `since`) that satisfies pred, reading as needed."""
        deadline = time.monotonic() + timeout
        i = since
        while True:
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            try:
                if self.pump(deadline) is None:
                    return None
            except Closed:
                return None

    def drain(self, seconds):
        """Read whatever arrives for `seconds` (a quiet period, not an assertion on speed)."""
        deadline = time.monotonic() + seconds
        try:
            while self.pump(deadline) is not None:
                pass
        except Closed:
            pass

    def until_close(self, timeout=15):
        """Frames received until EOF; (frames, closed)."""
        got = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                f = self.pump(deadline)
                if f is None:
                    return got, False
                got.append(f)
        except Closed:
            return got, True

    def alive(self):
        r = self.request("ping", timeout=15)
        return r is not None and r.get("op") == "ok"


def is_ok(r):
    return isinstance(r, dict) and r.get("op") == "ok"


def is_err(r, code):
    return isinstance(r, dict) and r.get("op") == "error" and r.get("code") == code \
        and is_str(r.get("message"))


def keys_of(r):
    return sorted(k for k in r if k not in ("op", "id")) if isinstance(r, dict) else None


EXTRA_SEEN = set()


def fields(obj, ctx, required):
    """True when obj is a map holding every documented field of `required`.  Keys the doc does
    not list are allowed by the contract (later versions may add optional fields) but are
    reported once as a note: an outside developer cannot know what they mean."""
    if not isinstance(obj, dict):
        return False
    extra = sorted(set(obj) - set(required) - {"op", "id"})
    for k in extra:
        if (ctx, k) not in EXTRA_SEEN:
            EXTRA_SEEN.add((ctx, k))
            note("undocumented key %r in %s (e.g. %s)" % (k, ctx, short(obj.get(k), 120)))
    return all(k in obj for k in required)


# ---------------------------------------------------------------------------
# processes (every child is recorded in WORK/pids so spec.sh can stop it by PID)

CHILDREN = []


def record_pid(work, p):
    CHILDREN.append(p)
    with open(os.path.join(work, "pids"), "a") as f:
        f.write("%d\n" % p.pid)


def stop_proc(p, grace=15):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    return p.returncode


def hostport(addr, port):
    return ("[%s]:%d" if ":" in addr else "%s:%d") % (addr, port)


def port_open(port, host=None):
    host = host or APPLIANCE_ADDR
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Imfused:
    def __init__(self, a, extra=()):
        self.a = a
        self.extra = list(extra)
        self.p = None
        self.logs = []
        self.nstart = 0

    def start(self):
        self.nstart += 1
        logf = os.path.join(self.a.work, "imfused.%d.log" % self.nstart)
        self.logs.append(logf)
        cmd = self.a.wrap + [self.a.imfused, "--data", self.a.data,
                             "--listen", hostport(APPLIANCE_ADDR, self.a.port),
                             "--control", self.a.ctl, "--ca-file", self.a.ca] + self.extra + self.a.args
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(logf, "w"), env=env)
        record_pid(self.a.work, self.p)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("imfused exited during start-up (%d), see %s"
                                   % (self.p.returncode, logf))
            if port_open(self.a.port) and os.path.exists(self.a.ctl):
                return
            time.sleep(0.05)
        raise RuntimeError("imfused did not listen within 30 s")

    def stop(self):
        rc = stop_proc(self.p, 20)
        return rc

    def kill9(self):
        self.p.kill()
        self.p.wait(10)

    def sanitizer_reports(self):
        bad = []
        for f in self.logs:
            try:
                txt = open(f, errors="replace").read()
            except OSError:
                continue
            for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                        "UndefinedBehaviorSanitizer"):
                if pat in txt:
                    bad.append("%s: %s" % (os.path.basename(f), pat))
        return bad


class Peer:
    """A JSON-lines child (xmpp_peer.py or our oneshot): events on stdout, commands on stdin."""

    def __init__(self, work, cmd):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(os.path.join(work, "peer.err"), "a"), text=True)
        record_pid(work, self.p)
        self.q = queuemod.Queue()
        self.seen = []
        self.nsent = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                pass
        self.q.put({"ev": "eof"})

    def wait(self, pred, timeout=30):
        for e in self.seen:
            if pred(e):
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                e = self.q.get(timeout=left)
            except queuemod.Empty:
                return None
            self.seen.append(e)
            if pred(e):
                return e

    def cmd(self, obj):
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def stop(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return stop_proc(self.p, 5)


# ---------------------------------------------------------------------------
# the oneshot XMPP helper (child mode)

def xmpp_oneshot(cfg):
    import asyncio
    import logging
    import xml.etree.ElementTree as ET
    import slixmpp

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    def out(o):
        sys.stdout.write(json.dumps(o) + "\n")
        sys.stdout.flush()

    class One(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__(cfg["jid"], cfg["password"])
            self.ca_certs = cfg["ca"]
            self.add_event_handler("session_start", self.start)

        async def start(self, _):
            if cfg.get("nopresence"):
                pass
            elif cfg.get("show"):
                self.send_presence(pshow=cfg["show"])
            else:
                self.send_presence()
            out({"ev": "online"})
            if cfg.get("to"):
                m = self.make_message(mto=cfg["to"], mbody=cfg["body"], mtype="chat")
                if cfg.get("stamp"):
                    d = ET.Element("{urn:xmpp:delay}delay", {"stamp": cfg["stamp"]})
                    m.xml.append(d)
                m.send()
                out({"ev": "sent"})
            loop = asyncio.get_event_loop()
            # held by self: the protocol holds the reader only weakly, and
            # this handler's task is held by nobody, so the garbage
            # collector could destroy both while they wait for a line
            reader = self.stdin_reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while True:
                line = await reader.readline()
                if not line:
                    break
            self.disconnect()

    x = One()
    x.connect(address=(cfg["addr"], cfg["port"]))
    x.add_event_handler("disconnected", lambda *_: x.loop.stop())
    x.loop.run_forever()


# ---------------------------------------------------------------------------
# the document's own examples

def doc_examples(root):
    """(direction, json_obj, bytes) for every worked example in CLIENT-PROTOCOL.md."""
    lines = open(os.path.join(root, "docs", "CLIENT-PROTOCOL.md"), encoding="utf-8").read().split("\n")
    out = []
    i = 0
    hexline = re.compile(r"^\s+([0-9a-f]{2})( [0-9a-f]{2})*\s*$")
    while i < len(lines):
        m = re.match(r"^([→←]) (\{.*\})\s*$", lines[i])
        if m:
            j = i + 1
            hx = []
            while j < len(lines) and hexline.match(lines[j]):
                hx += lines[j].split()
                j += 1
            out.append((m.group(1), m.group(2), bytes(int(h, 16) for h in hx)))
            i = j
        else:
            i += 1
    return out


def check_doc_examples(root):
    section("the document's worked examples: hex against JSON")
    ex = doc_examples(root)
    check(len(ex) >= 20, "CLIENT-PROTOCOL.md has its worked examples (%d found)" % len(ex))
    for arrow, js, raw in ex:
        try:
            want = json.loads(js)
        except ValueError as e:
            check(False, "example %s is valid JSON" % js[:50], str(e))
            continue
        ok_len = len(raw) >= 4 and struct.unpack(">I", raw[:4])[0] == len(raw) - 4
        try:
            got = decode_payload(raw[4:]) if ok_len else None
        except Undecodable as e:
            got = "undecodable: %s" % e
        check(ok_len and got == want,
              "doc example %s %s: length prefix and bytes match the JSON" % (arrow, js[:60]),
              {"prefix_ok": ok_len, "decoded": got})
    return {(a, json.loads(j).get("op"), json.loads(j).get("id")): raw for a, j, raw in ex}


# ---------------------------------------------------------------------------
# the run

class Ctx:
    pass


def ctl(a, *args, stdin=None):
    p = subprocess.run([a.imfusectl, "-s", a.ctl] + list(args), input=stdin, text=True,
                       capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def login(a, user, pw, device=None, src=None, name="c", tls_ctx=None, port=None):
    c = Conn(port or a.port, src=src, name=name, tls_ctx=tls_ctx)
    f = {"user": user, "password": pw}
    if device is not None:
        f["device"] = device
    r = c.request("login", f)
    return c, r


def fresh(a, name="f", src=None):
    return Conn(a.port, src=src, name=name)


def expect_fatal(a, raw, what, src=None):
    """A frame that §3.3 says gets error bad_request without id, then the connection closes."""
    c = fresh(a, "fatal", src)
    try:
        c.send_raw(raw)
    except OSError:
        pass
    got, closed = c.until_close(15)
    errs = [f for f in got if f.get("op") == "error"]
    ok = (len(got) == 1 and len(errs) == 1 and "id" not in errs[0]
          and errs[0].get("code") == "bad_request" and is_str(errs[0].get("message")))
    check(ok, "%s -> error bad_request without id" % what, got)
    check(closed, "%s -> connection closed afterwards" % what, "still open after 15 s")
    c.close()


def expect_kept(c, r, code, what):
    check(is_err(r, code), "%s -> error %s with the request's id" % (what, code), r)
    check(c.alive(), "%s -> connection stays open" % what)


def phase_framing(a, docs):
    section("§1 framing, §3.3 undecodable frames")
    # the doc's own ping bytes, before login
    c = fresh(a, "ping")
    r = c.request_raw(1, docs[("→", "ping", 1)])
    check(r == {"op": "ok", "id": 1}, "§4.1 ping (the doc's bytes) before login -> {op: ok, id: 1}", r)
    # several frames in one segment, and one frame split byte by byte
    c.send_raw(frame(pack({"op": "ping", "id": 2})) + frame(pack({"op": "ping", "id": 3})))
    r2, r3 = c.wait_reply(2), c.wait_reply(3)
    check(is_ok(r2) and is_ok(r3), "§1 two frames back to back in one segment -> two replies", (r2, r3))
    raw = frame(pack({"op": "ping", "id": 4}))
    for b in raw:
        c.send_raw(bytes([b]))
        time.sleep(0.01)
    check(is_ok(c.wait_reply(4)), "§1 one frame split over many segments -> reply")
    # unknown keys are ignored
    r = c.request("ping", {"zz_unknown": {"a": [1, 2, {"b": None}]}})
    check(is_ok(r) and fields(r, "the ok of ping", ()), "§2 unknown keys ignored (ping with an extra key)", r)
    r = c.request("ping", {"x_bin": b"\x00\xff", "x_float": 1.5, "x_nil": None, "x_neg": -5,
                           "x_ext": msgpack.ExtType(5, b"abc")})
    check(is_ok(r), "§2 unknown keys with bin, float, nil, negative and ext values are ignored", r)
    r = c.request("ping", rid=0)
    check(is_ok(r) and r.get("id") == 0, "§2 id 0 is a uint and is echoed", r)
    for op in ("ok", "error", "message", "PING", "ping\x00"):
        r = c.request(op)
        check(is_err(r, "unsupported"), "§3.3 op %r from a client is unknown -> unsupported" % op, r)
    # uint in a signed encoding; the largest uint
    r = c.request_raw(5, frame(b"\x82\xa2op\xa4ping\xa2id\xd0\x05"))
    check(is_ok(r) and r.get("id") == 5, "§2 id 5 in a signed (int8) encoding is accepted", r)
    big = 2 ** 64 - 1
    r = c.request_raw(big, frame(b"\x82\xa2op\xa4ping\xa2id\xcf" + struct.pack(">Q", big)))
    check(is_ok(r) and r.get("id") == big, "§2 id 2^64-1 is accepted and echoed", r)
    # unknown op
    r = c.request("frobnicate")
    expect_kept(c, r, "unsupported", "§3.3 unknown op before login")
    # nesting: exactly 32 deep is fine
    nest = []
    for _ in range(30):
        nest = [nest]
    r = c.request("ping", {"deep": nest})    # map(1) + 31 arrays = 32 levels
    check(is_ok(r), "§1 containers nested 32 deep (top map counts) are accepted", r)
    # exactly 1 MiB payload
    n = MIB - 200
    while True:
        p = pack({"op": "ping", "id": 6, "pad": "x" * n})
        if len(p) == MIB:
            break
        n += MIB - len(p)
    r = c.request_raw(6, frame(p), timeout=60)
    check(is_ok(r), "§1 a frame of exactly 1 MiB (1 048 576 bytes) is accepted", r)
    c.close()

    deep = []
    for _ in range(31):
        deep = [deep]
    expect_fatal(a, frame(pack({"op": "ping", "id": 1, "deep": deep})), "§1 nesting 33 deep")
    expect_fatal(a, b"\x00\x00\x00\x00", "§1 L = 0")
    expect_fatal(a, struct.pack(">I", MIB + 1), "§1 L = 1 MiB + 1 (only the length prefix sent)")
    expect_fatal(a, b"\xff\xff\xff\xff", "§1 L = 0xffffffff")
    expect_fatal(a, frame(pack([1, 2])), "§1 payload is an array, not a map")
    expect_fatal(a, frame(pack("ping")), "§1 payload is a str")
    expect_fatal(a, frame(b"\xc0"), "§1 payload is nil")
    expect_fatal(a, frame(pack({"op": "ping", "id": 1}) + b"\xc0"), "§1 bytes after the map")
    expect_fatal(a, frame(b"\x83\xa2op\xa4ping\xa2id\x01\x01\xa1x"), "§1 a key that is an int")
    expect_fatal(a, frame(b"\x83\xa2op\xa4ping\xa2id\x01\xc4\x01k\xa1x"), "§1 a key that is bin")
    expect_fatal(a, frame(b"\x83\xa2op\xa4ping\xa2id\x01\xa2op\xa4ping"), "§1 a repeated key")
    expect_fatal(a, frame(b"\x83\xa2op\xa4ping\xa2id\x01" + mstr(b"\xff\xfe") + b"\x01"),
                 "§1 a key that is not valid UTF-8")
    expect_fatal(a, frame(b"\x82\xa2op\xa4ping\xa2id"), "§1 a truncated map (value missing)")
    expect_fatal(a, frame(pack({"id": 1})), "§3.3 op missing")
    expect_fatal(a, frame(pack({"op": "ping"})), "§3.3 id missing")
    expect_fatal(a, frame(pack({"op": 7, "id": 1})), "§3.3 op is an int")
    expect_fatal(a, frame(b"\x82\xa2op\xc4\x04ping\xa2id\x01"), "§3.3 op is bin")
    expect_fatal(a, frame(b"\x82\xa2op" + mstr(b"pi\xc0\x80ng") + b"\xa2id\x01"),
                 "§2/§3.3 op with an overlong UTF-8 form")
    expect_fatal(a, frame(pack({"op": "ping", "id": "1"})), "§3.3 id is a str")
    expect_fatal(a, frame(pack({"op": "ping", "id": -1})), "§3.3 id is negative")
    expect_fatal(a, frame(pack({"op": "ping", "id": 1.0})), "§3.3 id is a float")
    expect_fatal(a, frame(pack({"op": "ping", "id": None})), "§3.3 id is nil")
    expect_fatal(a, frame(pack({"op": "ping", "id": True})), "§3.3 id is a bool")
    expect_fatal(a, frame(pack({"op": None, "id": 1})), "§3.3 op is nil")

    # the doc's own "not a map" example reply, compared field by field
    c = fresh(a, "notmap")
    c.send_raw(frame(pack([1])))
    got, _ = c.until_close(15)
    want = {"op": "error", "code": "bad_request", "message": "frame is not a map"}
    if got and got[0] != want:
        note("§3.3 example reply for a non-map frame is %s; the appliance sent %s (message is free text)"
             % (want, got[0]))
    c.close()


def phase_logged_out(a):
    section("§3.4 before login")
    c = fresh(a, "lo")
    for op, f in (("logout", {}), ("link", {"network": "xmpp", "login": "x@a.test", "password": "",
                                            "server": a.dead_server, "tls": "none"}),
                  ("update_account", {"account": 1}), ("unlink", {"account": 1}), ("accounts", {}),
                  ("contacts", {}), ("add_contact", {"account": 1, "address": "x@a.test"}),
                  ("remove_contact", {"account": 1, "address": "x@a.test"}),
                  ("set_unified", {"contacts": []}), ("unified", {}),
                  ("send", {"to": {"account": 1, "address": "x@a.test"}, "body": "x"}),
                  ("ack", {"seq": 0})):
        r = c.request(op, f)
        check(is_err(r, "not_logged_in"), "§3.4 %s before login -> not_logged_in" % op, r)
    check(c.alive(), "§3.4 connection still open after the not_logged_in replies")
    c.close()


def phase_register_off(a):
    section("§4.2 register while open registration is off")
    c = fresh(a, "reg")
    r = c.request("register", {"user": "newuser", "password": "pw"})
    expect_kept(c, r, "unsupported", "§4.2 register without --open-registration")
    c.close()


def phase_login(a):
    section("§4.3 login")
    src = a.src(0, 9)  # failed logins from an address of their own (lockout is per source too)
    c, r = login(a, "me", "wrong-pass", src=src)
    expect_kept(c, r, "auth_failed", "§4.3 login with a wrong password")
    r = c.request("login", {"user": "nosuchuser", "password": "x"})
    check(is_err(r, "auth_failed"), "§4.3 login of an unknown user -> auth_failed", r)
    for what, f in (("user 65 bytes", {"user": "a" * 65, "password": "x"}),
                    ("user with upper case", {"user": "Me", "password": "me-pass"}),
                    ("user with '!'", {"user": "me!", "password": "x"}),
                    ("user empty", {"user": "", "password": "x"}),
                    ("password empty", {"user": "me", "password": ""}),
                    ("password 1025 bytes", {"user": "me", "password": "p" * 1025}),
                    ("device 65 bytes", {"user": "me", "password": "me-pass", "device": "d" * 65}),
                    ("device nil", {"user": "me", "password": "me-pass", "device": None}),
                    ("device is an int", {"user": "me", "password": "me-pass", "device": 3}),
                    ("password missing", {"user": "me"}),
                    ("user missing", {"password": "me-pass"}),
                    ("user is bin", {"user": b"me", "password": "me-pass"})):
        r = c.request("login", f)
        check(is_err(r, "bad_request"), "§2.1/§4.3 login, %s -> bad_request" % what, r)
    check(c.alive(), "§3.3 connection stays open after field errors in login")
    c.close()

    c, r = login(a, "me", "me-pass", device="d" * 64)
    check(is_ok(r), "§2.1 login with a 64-byte device -> ok", r)
    c.close()
    c, r = login(a, "me", "me-pass", device="")
    check(is_ok(r) and r.get("user") == "me" and is_uint(r.get("queued")) and fields(r, "the ok of login", ("user", "queued")),
          "§4.3 login with device \"\" -> ok {user: \"me\", queued: uint}", r)
    r = c.request("login", {"user": "me", "password": "me-pass"})
    expect_kept(c, r, "bad_request", "§4.3 login on a connection already logged in")
    r = c.request("ping")
    check(is_ok(r) and fields(r, "the ok of ping", ()), "§4.1 ping after login -> ok", r)
    r = c.request("frobnicate")
    expect_kept(c, r, "unsupported", "§3.3 unknown op after login")
    c.close()


def wait_state(c, acct, states, timeout=45, since=0):
    return c.wait_event(lambda e: e.get("op") == "account" and e.get("account") == acct
                        and e.get("state") in states, timeout, since)


def link_fields(login_, pw, server, tls, **kw):
    f = {"network": "xmpp", "login": login_, "password": pw, "server": server, "tls": tls}
    f.update(kw)
    return f


def phase_accounts(a, c1, c2):
    section("§4.5 link: field errors")
    base = link_fields("zz@a.test", "pw", a.dead_server, "none")
    bad = [("network missing", {k: v for k, v in base.items() if k != "network"}),
           ("login missing", {k: v for k, v in base.items() if k != "login"}),
           ("password missing", {k: v for k, v in base.items() if k != "password"}),
           ("server missing", {k: v for k, v in base.items() if k != "server"}),
           ("tls missing", {k: v for k, v in base.items() if k != "tls"}),
           ("tls \"ssl\"", dict(base, tls="ssl")),
           ("login \"\"", dict(base, login="")),
           ("login 256 bytes", dict(base, login="a" * 247 + "@a.test" + "aa")),
           ("XMPP login with a resource", dict(base, login="zz@a.test/res")),
           ("password 1025 bytes", dict(base, password="p" * 1025)),
           ("server 2 bytes", dict(base, server="h:")),
           ("server 262 bytes", dict(base, server="h" * 256 + ":12345")),
           ("server without a port", dict(base, server=a.server_addr)),
           ("server port not a number", dict(base, server=a.server_addr + ":abc")),
           ("server port 99999", dict(base, server=a.server_addr + ":99999")),
           ("server with an empty host", dict(base, server=":5222")),
           ("name 256 bytes", dict(base, name="n" * 256)),
           ("name nil", dict(base, name=None)),
           ("options not a map", dict(base, options=["tls_name"])),
           ("options value not a str", dict(base, options={"tls_name": 5})),
           ("network is bin", dict(base, network=b"xmpp")),
           ("password is an int", dict(base, password=5))]
    for what, f in bad:
        r = c1.request("link", f)
        check(is_err(r, "bad_request"), "§4.5 link, %s -> bad_request" % what, r)
    r = c1.request("link", dict(base, network="msn"))
    check(is_err(r, "bad_request") or is_err(r, "unsupported"),
          "§4.5 link, network \"msn\" -> bad_request or unsupported", r)
    if isinstance(r, dict) and r.get("code"):
        note("§2.2/§3.2 ambiguity: link with network \"msn\" (outside the enum) got %r; the doc has "
             "both bad_request (out of its limits) and unsupported (a network not supported)" % r["code"])
    for what, f in (("login of 255 bytes", dict(base, login="l" * 248 + "@a.test")),
                    ("server of 261 bytes", dict(base, login="s1@a.test", server="h" * 255 + ":12345")),
                    ("server of 3 bytes", dict(base, login="s2@a.test", server="h:1")),
                    ("name of 255 bytes", dict(base, login="s3@a.test", name="n" * 255)),
                    ("password of 1024 bytes", dict(base, login="s4@a.test", password="p" * 1024))):
        r = c1.request("link", f)
        check(is_ok(r), "§2.1 link with a %s -> ok" % what, r)
        if is_ok(r):
            c1.request("unlink", {"account": r["account"]})
    r = c1.request("link", dict(base, options={"no_such_option": "x"}))
    note("§4.5 silent: link with an unknown option key got %s" % short(r))
    if is_ok(r):
        c1.request("unlink", {"account": r["account"]})
    check(c1.alive(), "§3.3 connection stays open after link field errors")
    r = c1.request("accounts")
    check(is_ok(r) and r.get("accounts") == [], "§4.5 no account was stored by the failed links", r)

    section("§4.5 link with tls starttls / tls / none, §5.1 account events, §5.2 contacts event")
    m1, m2 = len(c1.events), len(c2.events)
    r = c1.request("link", link_fields("alice@a.test", "alice-pw", a.server(a.c2s), "starttls",
                                       name="Work", options={"tls_name": "a.test"}))
    check(is_ok(r) and is_uint(r.get("account")) and fields(r, "the ok of link", ("account",)),
          "§4.5 link alice@a.test tls starttls name Work -> ok {account: uint}", r)
    A1 = r.get("account") if is_ok(r) else None
    e = wait_state(c1, A1, ("online",), since=m1)
    check(e is not None, "§5.1 account %r reaches state online (starttls)" % A1,
          [x for x in c1.events[m1:] if x.get("op") == "account"])
    if e:
        check(e.get("network") == "xmpp" and e.get("login") == "alice@a.test",
              "§5.1 account event carries network xmpp and login alice@a.test", e)
    first = next((x for x in c1.events[m1:] if x.get("op") == "account" and x.get("account") == A1), None)
    check(first is not None and first.get("state") == "connecting",
          "§5.1 the first account event after link is connecting", first)
    check(wait_state(c2, A1, ("online",), since=m2) is not None,
          "§3.4 the second logged-in connection gets the account events too")
    ce = c1.wait_event(lambda x: x.get("op") == "contacts" and x.get("account") == A1, 30, m1)
    check(ce is not None, "§5.2 a contacts event for the account after its emulated login", ce)
    if ce:
        bob = [x for x in ce.get("contacts", []) if isinstance(x, dict) and x.get("address") == "bob@a.test"]
        check(len(bob) == 1 and bob[0].get("name") == "Bob" and bob[0].get("groups") == ["Friends"]
              and bob[0].get("network") == "xmpp" and bob[0].get("account") == A1
              and fields(bob[0], "a contact entry", ("account", "address", "groups", "name", "network", "presence")),
              "§4.9/§5.2 contact entry {account, network, address: bob@a.test, name: Bob, groups: [Friends], presence}",
              ce)
    if ce and bob:
        note("§2.2 silent: presence of a subscribed contact that is not online is %r (offline or unknown?)"
             % bob[0].get("presence"))
    check(c2.wait_event(lambda x: x.get("op") == "contacts" and x.get("account") == A1, 30, m2) is not None,
          "§5.2 the second connection gets the contacts event too")

    r = c1.request("link", link_fields("alice@a.test", "alice-pw", a.server(a.c2s), "starttls"))
    expect_kept(c1, r, "exists", "§4.5 link of the same network + login again")

    m1 = len(c1.events)
    r = c1.request("link", link_fields("Carol@A.TEST", "carol-pw", a.server(a.c2s_tls), "tls"))
    check(is_ok(r) and is_uint(r.get("account")), "§4.5 link Carol@A.TEST with tls \"tls\" (direct TLS) -> ok", r)
    A2 = r.get("account") if is_ok(r) else None
    check(A2 != A1, "§4.5 a second account gets a different id", (A1, A2))
    e = wait_state(c1, A2, ("online",), since=m1)
    check(e is not None, "§5.1 account %r reaches online over direct TLS" % A2,
          [x for x in c1.events[m1:] if x.get("op") == "account"])
    if e:
        check(e.get("login") == "carol@a.test", "§2.3/§5.1 the account event carries the normalised login carol@a.test",
              e.get("login"))
    ce = c1.wait_event(lambda x: x.get("op") == "contacts" and x.get("account") == A2, 30, m1)
    if ce:
        bob = [x for x in ce.get("contacts", []) if isinstance(x, dict) and x.get("address") == "bob@a.test"]
        check(len(bob) == 1 and bob[0].get("name") == "" and bob[0].get("groups") == [],
              "§4.9 a roster item without name/groups -> name \"\" and groups []", ce)
    else:
        check(False, "§5.2 contacts event for account %r" % A2)
    r = c1.request("link", link_fields("carol@a.test", "carol-pw", a.server(a.c2s_tls), "tls"))
    check(is_err(r, "exists"), "§4.5 link carol@a.test after Carol@A.TEST -> exists (same normalised login)", r)

    m1 = len(c1.events)
    r = c1.request("link", link_fields("dave@a.test", "dave-pw", a.server(a.c2s), "none", name=""))
    check(is_ok(r), "§4.5 link dave@a.test with tls \"none\" and name \"\" -> ok", r)
    A3 = r.get("account") if is_ok(r) else None
    e = wait_state(c1, A3, ("online",), since=m1)
    check(e is not None, "§5.1 account %r reaches online without TLS" % A3,
          [x for x in c1.events[m1:] if x.get("op") == "account"])
    ce = c1.wait_event(lambda x: x.get("op") == "contacts" and x.get("account") == A3, 30, m1)
    check(ce is not None and ce.get("contacts") == [], "§5.2 contacts event with an empty roster -> contacts []", ce)

    # an account whose server refuses connections: retried, offline with a detail in between
    a.ghost_mark = len(c1.events)
    a.ghost_t0 = time.monotonic()
    r = c1.request("link", link_fields("ghost@a.test", "pw", a.dead_server, "starttls", name="Ghost"))
    check(is_ok(r), "§4.5 link to a closed port -> ok (stored before any network I/O)", r)
    A4 = r.get("account") if is_ok(r) else None
    # an account with an empty password: "" is allowed, the server refuses the login
    a.erin_mark = len(c1.events)
    r = c1.request("link", link_fields("erin@a.test", "", a.server(a.c2s), "starttls"))
    check(is_ok(r), "§2.1/§4.5 link with password \"\" (no password) -> ok", r)
    A5 = r.get("account") if is_ok(r) else None
    e = wait_state(c1, A5, ("auth_failed", "error", "online"), since=a.erin_mark)
    check(e is not None and e.get("state") == "auth_failed",
          "§5.1 login refused by the server -> state auth_failed", e)
    a.erin_failed_at = len(c1.events)

    section("§4.8 accounts")
    r = c1.request("accounts")
    accts = r.get("accounts") if is_ok(r) else None
    check(type(accts) is list and len(accts) == 5, "§4.8 accounts -> ok {accounts: [5 entries]}", r)
    want_keys = ["account", "login", "name", "network", "server", "state", "tls"]
    by_id = {}
    for x in accts or []:
        ok = fields(x, "an accounts entry", want_keys) and is_uint(x["account"]) \
            and x["network"] == "xmpp" and is_str(x["login"]) and is_str(x["server"]) \
            and x["tls"] in TLS_MODES and is_str(x["name"]) and x["state"] in STATES
        check(ok, "§4.8 account entry has {account, network, login, server, tls, name, state}, typed", x)
        if isinstance(x, dict):
            by_id[x.get("account")] = x
    exp = {A1: ("alice@a.test", a.server(a.c2s), "starttls", "Work", ("online",)),
           A2: ("carol@a.test", a.server(a.c2s_tls), "tls", "", ("online",)),
           A3: ("dave@a.test", a.server(a.c2s), "none", "", ("online",)),
           A4: ("ghost@a.test", a.dead_server, "starttls", "Ghost", ("connecting", "offline", "error")),
           A5: ("erin@a.test", a.server(a.c2s), "starttls", "", ("auth_failed",))}
    for acct, (lg, srv, tls, nm, sts) in exp.items():
        x = by_id.get(acct, {})
        check(x.get("login") == lg and x.get("server") == srv and x.get("tls") == tls and x.get("name") == nm
              and x.get("state") in sts,
              "§4.8 account %r: login %s, server %s, tls %s, name %r, state in %s" % (acct, lg, srv, tls, nm, sts), x)
    r2 = c1.request_raw(6, a.docs[("→", "accounts", 6)])
    check(is_ok(r2) and r2.get("id") == 6 and type(r2.get("accounts")) is list and len(r2["accounts"]) == 5,
          "§4.8 the doc's accounts bytes (id 6) -> ok id 6 with the list", r2)

    section("§4.9 contacts")
    r = c1.request("contacts")
    lst = r.get("contacts") if is_ok(r) else None
    check(type(lst) is list and fields(r, "the ok of contacts", ("contacts",)), "§4.9 contacts -> ok {contacts: [...]}", r)
    for x in lst or []:
        _entry_ok(x, "contacts reply")
    pairs = sorted((x.get("account"), x.get("address")) for x in lst or [] if isinstance(x, dict))
    check(pairs == sorted([(A1, "bob@a.test"), (A2, "bob@a.test")]),
          "§4.9 contacts lists the entries of every account (alice's bob, carol's bob)", pairs)
    r2 = c1.request_raw(7, a.docs[("→", "contacts", 7)])
    check(is_ok(r2) and r2.get("id") == 7 and type(r2.get("contacts")) is list,
          "§4.9 the doc's contacts bytes (id 7) -> ok id 7", r2)
    return A1, A2, A3, A4, A5


def contacts_ev(c, acct, pred, since, timeout=30):
    return c.wait_event(lambda e: e.get("op") == "contacts" and e.get("account") == acct
                        and type(e.get("contacts")) is list and pred(e["contacts"]), timeout, since)


def phase_contacts_edit(a, c1, A3):
    section("§4.10 add_contact, §4.11 remove_contact")
    m = len(c1.events)
    r = c1.request("add_contact", {"account": A3, "address": "Zed@A.test", "name": "Zed"})
    check(is_ok(r) and fields(r, "the ok of add_contact", ()), "§4.10 add_contact Zed@A.test name Zed -> ok", r)
    e = contacts_ev(c1, A3, lambda l: any(x.get("address") == "zed@a.test" for x in l if isinstance(x, dict)), m)
    check(e is not None, "§4.10 the new list arrives as a contacts event, address lower-cased zed@a.test",
          [x for x in c1.events[m:] if x.get("op") == "contacts"])
    if e:
        z = [x for x in e["contacts"] if x.get("address") == "zed@a.test"]
        check(len(z) == 1 and z[0].get("name") == "Zed", "§4.10 the entry carries name Zed", z)
        if z:
            note("§2.2 silent: presence of a just-added contact with no subscription is %r (offline or unknown?)"
                 % z[0].get("presence"))
    m = len(c1.events)
    r = c1.request("add_contact", {"account": A3, "address": "zed@a.test", "name": "Zeddy"})
    check(is_ok(r), "§4.10 add_contact of an existing address (rename) -> ok", r)
    e = contacts_ev(c1, A3, lambda l: any(x.get("address") == "zed@a.test" and x.get("name") == "Zeddy"
                                          for x in l if isinstance(x, dict)), m)
    check(e is not None, "§4.10 rename arrives as a contacts event with name Zeddy",
          [x for x in c1.events[m:] if x.get("op") == "contacts"])
    if e:
        check(sum(1 for x in e["contacts"] if x.get("address") == "zed@a.test") == 1,
              "§4.10 rename does not duplicate the entry", e)
    r = c1.request("contacts")
    z = [x for x in r.get("contacts", []) if x.get("account") == A3] if is_ok(r) else None
    check(z is not None and [(x.get("address"), x.get("name")) for x in z] == [("zed@a.test", "Zeddy")],
          "§4.9 contacts reflects the renamed contact", z)
    for what, f, code in (("account unknown", {"account": 999999, "address": "x@a.test"}, "not_found"),
                          ("address \"\"", {"account": A3, "address": ""}, "bad_request"),
                          ("address 256 bytes", {"account": A3, "address": "x" * 249 + "@a.test"}, "bad_request"),
                          ("name 256 bytes", {"account": A3, "address": "y@a.test", "name": "n" * 256}, "bad_request"),
                          ("address missing", {"account": A3}, "bad_request"),
                          ("account missing", {"address": "y@a.test"}, "bad_request"),
                          ("account negative", {"account": -1, "address": "y@a.test"}, "bad_request"),
                          ("XMPP address with a resource", {"account": A3, "address": "y@a.test/r"}, "bad_request")):
        r = c1.request("add_contact", f)
        check(is_err(r, code), "§4.10 add_contact, %s -> %s" % (what, code), r)
    m = len(c1.events)
    r = c1.request("remove_contact", {"account": A3, "address": "ZED@a.test"})
    check(is_ok(r) and fields(r, "the ok of remove_contact", ()), "§4.11 remove_contact ZED@a.test -> ok", r)
    e = contacts_ev(c1, A3, lambda l: not any(x.get("address") == "zed@a.test" for x in l if isinstance(x, dict)), m)
    check(e is not None and e["contacts"] == [], "§4.11 the new (empty) list arrives as a contacts event",
          [x for x in c1.events[m:] if x.get("op") == "contacts"])
    r = c1.request("remove_contact", {"account": A3, "address": "zed@a.test"})
    check(is_err(r, "not_found"), "§3.2 remove_contact of an address not in the list -> not_found", r)
    r = c1.request("remove_contact", {"account": 999999, "address": "zed@a.test"})
    check(is_err(r, "not_found"), "§4.11 remove_contact on an unknown account -> not_found", r)
    r = c1.request("remove_contact", {"account": A3, "address": ""})
    check(is_err(r, "bad_request"), "§4.11 remove_contact with address \"\" -> bad_request", r)


def uc(name, members, prefer=None, id_=None):
    d = {"name": name, "members": [{"account": ac, "address": ad} for ac, ad in members]}
    if prefer is not None:
        d["prefer"] = prefer
    if id_ is not None:
        d["id"] = id_
    return d


def phase_unified(a, c1, A1, A2, A3, A4):
    section("§4.12 set_unified, §4.13 unified")
    r = c1.request("unified")
    check(is_ok(r) and r.get("contacts") == [], "§4.13 unified before any set_unified -> ok {contacts: []}", r)
    req = [uc("Bob", [(A1, "bob@a.test"), (A2, "bob@a.test")], prefer=A2),
           uc("Zed", [(A4, "zed@a.test"), (A3, "zed@a.test")], prefer=A4),
           uc("Ghost", [(A4, "ghost2@a.test")])]
    r = c1.request("set_unified", {"contacts": req})
    got = r.get("contacts") if is_ok(r) else None
    check(type(got) is list and len(got) == 3 and fields(r, "the ok of set_unified", ("contacts",)),
          "§4.12 set_unified with 3 new contacts -> ok {contacts: [3]}", r)
    ids = []
    for want, g in zip(req, got or []):
        ok = isinstance(g, dict) and is_uint(g.get("id")) and g.get("name") == want["name"] \
            and g.get("members") == want["members"] and g.get("prefer") == want.get("prefer") \
            and fields(g, "a stored unified contact", list(want.keys()) + ["id"])
        check(ok, "§4.12 stored contact %s = request + a uint id" % want["name"], g)
        ids.append(g.get("id") if isinstance(g, dict) else None)
    check(len(set(ids)) == len(ids), "§4.12 new contacts get distinct ids", ids)
    U1, U2, U3 = (ids + [None] * 3)[:3]
    a.all_ids = set(ids)
    stored = got
    r = c1.request("unified")
    check(is_ok(r) and r.get("contacts") == stored and fields(r, "the ok of unified", ("contacts",)),
          "§4.13 unified -> exactly the list stored", r)
    r = c1.request_raw(11, a.docs[("→", "unified", 11)])
    check(is_ok(r) and r.get("id") == 11 and r.get("contacts") == stored,
          "§4.13 the doc's unified bytes (id 11) -> ok id 11, the same list", r)

    keep = [uc("Bobby", [(A1, "bob@a.test"), (A2, "bob@a.test")], prefer=A2, id_=U1),
            uc("Zed", [(A4, "zed@a.test"), (A3, "zed@a.test")], prefer=A4, id_=U2),
            uc("Ghost", [(A4, "ghost2@a.test")], id_=U3)]
    r = c1.request("set_unified", {"contacts": keep})
    got = r.get("contacts") if is_ok(r) else []
    check(is_ok(r) and [g.get("id") for g in got] == [U1, U2, U3] and got[0].get("name") == "Bobby",
          "§4.12 given ids are kept (and a rename applied)", r)
    stored = got

    def unchanged(what):
        r = c1.request("unified")
        check(is_ok(r) and r.get("contacts") == stored, "§4.12 %s: nothing changed (unified as before)" % what,
              r.get("contacts") if is_ok(r) else r)

    r = c1.request("set_unified", {"contacts": keep + [uc("New", [(A1, "new@a.test")], id_=987654321)]})
    check(is_err(r, "not_found"), "§4.12 an unknown id -> not_found", r)
    unchanged("after not_found")
    r = c1.request("set_unified", {"contacts": keep + [uc("Dup", [(A1, "bob@a.test")])]})
    check(is_err(r, "bad_request"), "§4.12 a member in two unified contacts -> bad_request", r)
    unchanged("after a member in two contacts")
    bad = [("name \"\"", [uc("", [(A1, "x1@a.test")])]),
           ("name 256 bytes", [uc("n" * 256, [(A1, "x1@a.test")])]),
           ("65 members", [uc("Many", [(A1, "m%d@a.test" % i) for i in range(65)])]),
           ("prefer not a member's account", [uc("P", [(A1, "x1@a.test")], prefer=A3)]),
           ("member address \"\"", [uc("E", [(A1, "")])]),
           ("member address 256 bytes", [uc("E", [(A1, "x" * 249 + "@a.test")])]),
           ("name missing", [{"members": [{"account": A1, "address": "x1@a.test"}]}]),
           ("members missing", [{"name": "NoMembers"}]),
           ("member account missing", [{"name": "X", "members": [{"address": "x1@a.test"}]}]),
           ("id negative", [dict(uc("X", [(A1, "x1@a.test")]), id=-1)]),
           ("prefer nil", [dict(uc("X", [(A1, "x1@a.test")]), prefer=None)])]
    for what, lst in bad:
        r = c1.request("set_unified", {"contacts": lst})
        check(is_err(r, "bad_request"), "§4.12 set_unified, %s -> bad_request" % what, r)
    r = c1.request("set_unified", {"contacts": [uc("U", [(999999, "x1@a.test")])]})
    check(is_err(r, "not_found"), "§3.2 set_unified with a member of an unknown account -> not_found", r)
    for what, f in (("contacts missing", {}), ("contacts not an array", {"contacts": {"a": 1}})):
        r = c1.request("set_unified", f)
        check(is_err(r, "bad_request"), "§4.12 set_unified, %s -> bad_request" % what, r)
    unchanged("after the field errors")

    # limits: 64 members and 255-byte names pass; 10000 contacts pass, 10001 do not
    lim = [uc("n" * 255, [(A1, "m%d@a.test" % i) for i in range(64)])]
    r = c1.request("set_unified", {"contacts": lim})
    check(is_ok(r) and len(r.get("contacts", [])) == 1, "§4.12 a contact with a 255-byte name and 64 members -> ok", r)
    if is_ok(r):
        a.all_ids.update(x.get("id") for x in r["contacts"])
    big = [uc("p%d" % i, [(A3, "p%d@a.test" % i)]) for i in range(10001)]
    r = c1.request("set_unified", {"contacts": big}, timeout=120)
    check(is_err(r, "bad_request"), "§2.1 set_unified with 10001 contacts -> bad_request", r)
    r = c1.request("set_unified", {"contacts": big[:10000]}, timeout=120)
    check(is_ok(r) and len(r.get("contacts", [])) == 10000, "§2.1 set_unified with 10000 contacts -> ok",
          r if not is_ok(r) else len(r.get("contacts", [])))
    if is_ok(r):
        a.all_ids.update(x.get("id") for x in r["contacts"])
        r2 = c1.request("unified", timeout=60)
        check(is_ok(r2) and r2.get("contacts") == r["contacts"], "§4.13 unified returns the 10000 contacts as stored")
    # back to the three, by id (ids of contacts that were dropped are unknown now? keep only U1..U3)
    r = c1.request("set_unified", {"contacts": keep})
    if not is_ok(r):
        note("§4.12 set_unified naming ids that an earlier set_unified dropped got %s (ids are never reused, "
             "so a dropped id cannot be given again; the doc implies it)" % short(r.get("code") if r else r))
        r = c1.request("set_unified", {"contacts": [{k: v for k, v in x.items() if k != "id"} for x in keep]})
    check(is_ok(r), "§4.12 restore the three contacts", r)
    got = r.get("contacts", []) if is_ok(r) else []
    U1, U2, U3 = ([g.get("id") for g in got] + [None] * 3)[:3]
    r = c1.request("set_unified", {"contacts": got + [uc("Fresh", [(A1, "fresh@a.test")])]})
    new = r.get("contacts", [None] * 4)[-1] if is_ok(r) else None
    check(isinstance(new, dict) and is_uint(new.get("id")) and new["id"] not in a.all_ids | {U1, U2, U3},
          "§4.12 a new contact gets a fresh id, never one used before (%d ids seen)" % len(a.all_ids), new)
    # edge cases the doc does not settle (reported as notes), each on top of the kept three
    r = c1.request("set_unified", {"contacts": got + [uc("Twice", [(A3, "t@a.test"), (A3, "t@a.test")])]})
    note("§4.12 silent: the same member twice inside one unified contact got %s" % short(r.get("code") if r and r.get("op") == "error" else r and "ok"))
    r = c1.request("set_unified", {"contacts": got + [uc("Case", [(A1, "BOB@A.TEST")])]})
    note("§4.12 silent: member (account, \"BOB@A.TEST\") while (account, \"bob@a.test\") is in another contact got %s"
         % short(r if not is_ok(r) else "ok, stored as %r" % r["contacts"][-1]["members"][0]["address"]))
    r = c1.request("set_unified", {"contacts": got + [uc("TwoOnOne", [(A3, "p1@a.test"), (A3, "p2@a.test")], prefer=A3)]})
    if is_ok(r):
        tid = r["contacts"][-1]["id"]
        r2 = c1.request("send", {"to": {"contact": tid}, "body": "which one"})
        note("§4.12/§4.14 ambiguity: prefer is an account id; with two members on that account the send went to %s"
             % short(r2.get("address") if is_ok(r2) else r2))
    # final list for routing
    r = c1.request("set_unified", {"contacts": got})
    check(is_ok(r), "§4.12 set the routing list (Bob, Zed, Ghost)", r)
    got = r.get("contacts", []) if is_ok(r) else []
    return ([g.get("id") for g in got] + [None] * 3)[:3]


def presence_ev(c, acct, addr, pres, since, timeout=30):
    return c.wait_event(lambda e: e.get("op") == "presence" and e.get("account") == acct
                        and e.get("address") == addr and e.get("presence") == pres, timeout, since)


def peer_send(peer, to, body):
    """Make the XMPP peer send; fail loudly (as a harness problem) if it does not take the command."""
    peer.nsent += 1
    n = peer.nsent
    peer.cmd({"cmd": "send", "to": to, "body": body})
    if peer.wait(lambda e: e.get("ev") == "sent" and e.get("n") == n, 20) is None:
        check(False, "HARNESS: the XMPP peer (xmpp_peer.py) acknowledged send command %d (%r)" % (n, body[:30]))


def peer_got(peer, body, timeout=30):
    return peer.wait(lambda e: e.get("ev") == "message" and e.get("body") == body, timeout)


def phase_send(a, c1, A1, A2, A3, A4, A5, U1, U2, U3, bob):
    section("§4.14 send")
    r = c1.request("send", {"to": {"contact": U1}, "body": "Hi Bob ☺", "cid": "m-1"})
    check(is_ok(r) and is_uint(r.get("msg")) and r.get("account") == A2 and r.get("network") == "xmpp"
          and r.get("address") == "bob@a.test" and r.get("cid") == "m-1"
          and fields(r, "the ok of send", ("account", "address", "cid", "msg", "network")),
          "§4.14 send to unified Bob (prefer carol's account, bob online) -> ok {msg, account: %r, network, address, cid}" % A2, r)
    e = peer_got(bob, "Hi Bob ☺")
    check(e is not None and e.get("from") == "carol@a.test", "§4.14 bob receives it from carol@a.test", e)
    first = r if is_ok(r) else {}
    r = c1.request("send", {"to": {"contact": U1}, "body": "Hi Bob ☺", "cid": "m-1"})
    check(is_ok(r) and all(r.get(k) == first.get(k) for k in ("msg", "account", "network", "address", "cid")),
          "§4.14 the same cid again -> ok naming the first message", (first, r))
    r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": "other body", "cid": "m-1"})
    check(is_ok(r) and r.get("msg") == first.get("msg") and r.get("account") == first.get("account"),
          "§4.14 the same cid with another target and body -> ok naming the first message", r)
    r = c1.request("send", {"to": {"account": A1, "address": "BOB@A.TEST"}, "body": "marker-1"})
    check(is_ok(r) and r.get("account") == A1 and r.get("address") == "bob@a.test" and "cid" not in r,
          "§4.14 send to {account, address: BOB@A.TEST} -> ok, address normalised, no cid key", r)
    if is_ok(r) and is_ok(first):
        check(r.get("msg") != first.get("msg"), "§4.14 another message gets another msg id", (first, r))
    e = peer_got(bob, "marker-1")
    check(e is not None and e.get("from") == "alice@a.test", "§4.14 bob receives marker-1 from alice@a.test", e)
    n = sum(1 for x in bob.seen if x.get("ev") == "message" and x.get("body") == "Hi Bob ☺")
    check(n == 1, "§4.14 a repeated cid is not sent twice (bob got the message %d time(s))" % n)
    n = sum(1 for x in bob.seen if x.get("ev") == "message" and x.get("body") == "other body")
    check(n == 0, "§4.14 the repeated cid's other body was not sent", n)
    r = c1.request("send", {"to": {"contact": U2}, "body": "to zed"})
    check(is_ok(r) and r.get("account") == A3 and r.get("address") == "zed@a.test",
          "§4.14 routing: prefer's account offline -> the first member whose account is online (%r)" % A3, r)
    r = c1.request("send", {"to": {"contact": U3}, "body": "to ghost"})
    check(is_err(r, "account_offline"), "§4.14 routing: no member's account online -> account_offline", r)
    r = c1.request("send", {"to": {"account": A4, "address": "bob@a.test"}, "body": "x"})
    check(is_err(r, "account_offline"), "§4.14 send via an account that is not online (refused port) -> account_offline", r)
    r = c1.request("send", {"to": {"account": A5, "address": "bob@a.test"}, "body": "x"})
    check(is_err(r, "account_offline"), "§4.14 send via an auth_failed account -> account_offline", r)
    r = c1.request("send", {"to": {"contact": 987654321}, "body": "x"})
    check(is_err(r, "not_found"), "§4.14 send to an unknown unified contact -> not_found", r)
    r = c1.request("send", {"to": {"account": 987654321, "address": "bob@a.test"}, "body": "x"})
    check(is_err(r, "not_found"), "§4.14 send via an unknown account -> not_found", r)
    cid64 = "c" * 64
    r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": "cid64", "cid": cid64})
    check(is_ok(r) and r.get("cid") == cid64, "§2.1 cid of 64 bytes -> ok, echoed", r)
    body = "b" * 65536
    r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": body}, timeout=60)
    check(is_ok(r), "§2.1 body of 65536 bytes -> ok", r)
    e = peer_got(bob, body, 60)
    check(e is not None, "§4.14 bob receives the 65536-byte body intact")
    okn = 0
    for i in range(20):
        r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": "seq-%02d" % i})
        okn += is_ok(r)
    check(okn == 20, "§4.14 20 sends in a row -> 20 ok", okn)
    peer_got(bob, "seq-19", 60)
    order = [x.get("body") for x in bob.seen if x.get("ev") == "message" and str(x.get("body")).startswith("seq-")]
    check(order == ["seq-%02d" % i for i in range(20)], "§4.14 accepted messages leave in order, none dropped", order)
    r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": "<b>&amp; ' \" ]]> </b>"})
    check(is_ok(r), "§4.14 a body with XML specials -> ok", r)
    e = peer_got(bob, "<b>&amp; ' \" ]]> </b>", 30)
    check(e is not None, "§4.14 bob receives the XML specials verbatim", e)
    for what, body in (("a control character U+0001", "ctl\x01char"), ("a NUL", "nul\x00byte")):
        m = len(c1.events)
        r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": body})
        r2 = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": "after " + what})
        e = peer_got(bob, "after " + what, 60)
        drops = [x for x in c1.events[m:] if x.get("op") == "account" and x.get("account") == A1]
        check(is_ok(r2) and e is not None and drops == [],
              "§4.14 a body with %s (valid UTF-8, not representable in XMPP) does not break the session "
              "or block the queue" % what, {"send": r, "next": r2, "account events": drops})
        got = [x.get("body") for x in bob.seen if x.get("ev") == "message" and x.get("body", "").startswith(body[:3])]
        note("§2.1/§4.14 silent: body with %s got %s; bob received %r" % (what, short(r), got))
    r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test/phone"}, "body": "x"})
    check(is_err(r, "bad_request"), "§2.3 send to a full JID (not a bare JID) -> bad_request", r)
    multi = "☺" * 21845 + "a"          # 65536 bytes, 21846 characters
    r = c1.request("send", {"to": {"account": A1, "address": "bob@a.test"}, "body": multi}, timeout=60)
    check(is_ok(r), "§2 body limit is in bytes: 65536 bytes of multi-byte UTF-8 -> ok", r)
    base = {"to": {"account": A1, "address": "bob@a.test"}, "body": "x"}
    bad = [("body \"\"", dict(base, body="")),
           ("body 65537 bytes", dict(base, body="b" * 65537)),
           ("body 65535 ASCII + one 3-byte char (65538 bytes, 65536 chars)", dict(base, body="a" * 65535 + "☺")),
           ("body is bin", dict(base, body=b"hello")),
           ("body missing", {"to": base["to"]}),
           ("to missing", {"body": "x"}),
           ("to {} ", dict(base, to={})),
           ("to {account} without address", dict(base, to={"account": A1})),
           ("to {account, address: \"\"}", dict(base, to={"account": A1, "address": ""})),
           ("to is a str", dict(base, to="bob@a.test")),
           ("to.contact is a str", dict(base, to={"contact": "1"})),
           ("cid \"\"", dict(base, cid="")),
           ("cid 65 bytes", dict(base, cid="c" * 65)),
           ("cid is an int", dict(base, cid=5)),
           ("cid nil", dict(base, cid=None))]
    for what, f in bad:
        r = c1.request("send", f, timeout=60)
        check(is_err(r, "bad_request"), "§4.14 send, %s -> bad_request" % what, r)
    # a body that is not valid UTF-8 (a str carrying a lone surrogate's bytes)
    rid = c1.new_id()
    raw = frame(mmap(4) + mstr(b"op") + mstr(b"send") + mstr(b"id") + pack(rid)
                + mstr(b"to") + pack({"account": A1, "address": "bob@a.test"})
                + mstr(b"body") + mstr(b"bad \xed\xa0\x80 utf8"))
    r = c1.request_raw(rid, raw)
    expect_kept(c1, r, "bad_request", "§2/§4.14 send with a body that is not valid UTF-8 (surrogate)")
    for what, bad_bytes in (("an overlong form", b"x \xc0\xaf y"), ("a code point above U+10FFFF", b"x \xf4\x90\x80\x80"),
                            ("a truncated sequence", b"x \xe2\x98"), ("a stray continuation byte", b"\x80x")):
        rid = c1.new_id()
        raw = frame(mmap(4) + mstr(b"op") + mstr(b"send") + mstr(b"id") + pack(rid)
                    + mstr(b"to") + pack({"account": A1, "address": "bob@a.test"}) + mstr(b"body") + mstr(bad_bytes))
        r = c1.request_raw(rid, raw)
        check(is_err(r, "bad_request"), "§2 send with a body holding %s -> bad_request" % what, r)
    rid = c1.new_id()
    r = c1.request_raw(rid, frame(mmap(3) + mstr(b"op") + mstr(b"ping") + mstr(b"id") + pack(rid)
                                  + mstr(b"x_unknown") + mstr(b"\xff")))
    note("§1/§2 silent: an unknown key whose str value is not valid UTF-8 got %s" % short(r if r else "connection closed"))
    if r is None:
        raise RuntimeError("connection lost after an invalid UTF-8 value under an unknown key")
    r = c1.request("send", {"to": {"contact": U1, "account": A1, "address": "bob@a.test"}, "body": "both"})
    note("§4.14 ambiguity: to {contact, account, address} (both forms) got %s" % short(r))
    r = c1.request("send", {"to": {"account": A1, "address": "stranger@a.test"}, "body": "to a non-contact"})
    note("§4.14 silent: send to an address that is not in the account's contacts got %s" % short(r))
    return first


def phase_incoming(a, c1, c2, A1, A2, U1, bob):
    section("§5.4 message events, §4.15 ack")
    m1, m2 = len(c1.events), len(c2.events)
    t0 = int(time.time() * 1000)
    peer_send(bob, "alice@a.test", "hello ☺ 1")
    e1 = c1.wait_event(lambda e: e.get("op") == "message" and e.get("body") == "hello ☺ 1", 30, m1)
    e2 = c2.wait_event(lambda e: e.get("op") == "message" and e.get("body") == "hello ☺ 1", 30, m2)
    t1 = int(time.time() * 1000)
    check(e1 is not None, "§5.4 a message from bob to alice arrives as a message event")
    if e1 is None:
        diagnose_lost(a, c1, bob, "hello ☺ 1", m1)
    check(e2 is not None and e1 is not None and e2.get("seq") == e1.get("seq"),
          "§6 every logged-in connection receives the message (same seq)", (e1, e2))
    if e1:
        check(is_uint(e1.get("seq")) and e1.get("account") == A1 and e1.get("network") == "xmpp"
              and e1.get("from") == "bob@a.test" and e1.get("contact") == U1 and is_uint(e1.get("ts")),
              "§5.4 message {seq, account: %r, network: xmpp, from: bob@a.test, contact: %r, body, ts}" % (A1, U1), e1)
        check(is_uint(e1.get("ts")) and t0 - 120000 <= e1["ts"] <= t1 + 120000,
              "§5.4 ts is ms since the epoch, near the arrival time", (t0, e1.get("ts"), t1))
        check(is_str(e1.get("resource")) and e1.get("resource") != "",
              "§5.4 resource present for an XMPP sender (slixmpp's random resource)", e1)
        fields(e1, "the message event", ("seq", "account", "network", "from", "resource", "contact", "body", "ts"))
    m1 = len(c1.events)
    peer_send(bob, "carol@a.test", "to carol")
    e3 = c1.wait_event(lambda e: e.get("op") == "message" and e.get("body") == "to carol", 30, m1)
    check(e3 is not None and e3.get("account") == A2 and e3.get("contact") == U1 and e1 is not None
          and e3.get("seq", -1) > e1.get("seq", 0),
          "§5.4 a message to carol: account %r, contact %r, seq strictly increasing" % (A2, U1), e3)
    hi = max(c1.msg_seqs) if c1.msg_seqs else 0
    r = c1.request("ack", {"seq": hi + 1})
    expect_kept(c1, r, "bad_request", "§4.15 ack above the highest seq pushed")
    for what, f in (("seq missing", {}), ("seq negative", {"seq": -1}), ("seq a str", {"seq": "1"}),
                    ("seq a float", {"seq": 1.0})):
        r = c1.request("ack", f)
        check(is_err(r, "bad_request"), "§4.15 ack, %s -> bad_request" % what, r)
    rid = c2.new_id()
    r = c2.request_raw(rid, frame(mmap(3) + mstr(b"op") + mstr(b"ack") + mstr(b"id") + pack(rid)
                                  + mstr(b"seq") + b"\xd3" + struct.pack(">q", hi)))
    check(is_ok(r), "§2 ack with seq in a signed (int64) encoding -> ok", r)
    r = c2.request("ack", {"seq": hi})
    check(is_ok(r) and fields(r, "the ok of ack", ()), "§4.15 ack {seq: highest} from the second connection -> ok", r)
    r = c1.request("ack", {"seq": hi})
    check(is_ok(r), "§4.15 ack is idempotent (same seq again, other connection) -> ok", r)
    if e1:
        r = c1.request("ack", {"seq": e1["seq"]})
        check(is_ok(r), "§4.15 ack of a lower seq after a higher one -> ok", r)
    c3, r = login(a, "me", "me-pass", device="tablet", name="c3")
    check(is_ok(r) and r.get("queued") == 0, "§4.15/§6 after the ack a new login has queued 0", r)
    c3.drain(1)
    check(c3.msg_seqs == [], "§6 nothing is replayed after the ack", c3.msg_seqs)
    c3.close()
    return hi


def phase_unified_case(a, c1, A1, A2, U1, bob):
    section("§5.4 contact tagging when a member address was given in another case")
    r = c1.request("unified")
    lst = r.get("contacts") if is_ok(r) else None
    if not lst:
        check(False, "unified", r)
        return
    tmp = [dict(x) for x in lst]
    for x in tmp:
        if x.get("id") == U1:
            x["members"] = [{"account": A1, "address": "BOB@A.TEST"}, {"account": A2, "address": "bob@a.test"}]
    r = c1.request("set_unified", {"contacts": tmp})
    check(is_ok(r), "§4.12 set_unified with member address BOB@A.TEST -> ok", r)
    if is_ok(r):
        stored = [x for x in r["contacts"] if x.get("id") == U1][0]["members"][0]["address"]
        note("§2.3/§4.12 silent: a member address given as BOB@A.TEST is stored and returned as %r" % stored)
    m = len(c1.events)
    one = Peer(a.work, [sys.executable, os.path.abspath(__file__), "--xmpp-oneshot",
                        json.dumps({"jid": "bob@a.test/case", "password": "bob-pw", "addr": a.server_addr, "port": a.c2s, "ca": a.ca,
                                    "nopresence": True, "to": "alice@a.test", "body": "case check"})])
    check(one.wait(lambda x: x.get("ev") == "sent", 30) is not None, "oneshot bob/case logged in and sent")
    e = c1.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "case check", 30, m)
    one.stop()
    check(e is not None and e.get("contact") == U1,
          "§5.4 contact is set when the sender (bob@a.test) is a member given as BOB@A.TEST", e)
    if e is None:
        diagnose_lost(a, c1, bob, "case check", m)
    r = c1.request("send", {"to": {"contact": U1}, "body": "case route"})
    check(is_ok(r), "§4.14 send to that unified contact -> ok", r)
    if is_ok(r):
        note("§4.14 routing with member BOB@A.TEST went via account %r address %r" % (r.get("account"), r.get("address")))
    r = c1.request("set_unified", {"contacts": lst})
    check(is_ok(r), "restore the unified list", r)
    if e:
        c1.request("ack", {"seq": e["seq"]})


def diagnose_lost(a, c1, bob, body, m):
    """A message bob sent did not show up: say where it went (evidence for the report)."""
    e = c1.wait_event(lambda x: x.get("op") == "message" and x.get("body") == body, 30, m)
    note("DIAG %r: after 30 s more, c1 got it: %s" % (body, short(e)))
    note("DIAG %r: c1 events since the send: %s" % (body, short(c1.events[m:], 1500)))
    note("DIAG %r: bob's peer saw: %s" % (body, short(bob.seen[-6:], 800)))
    c, r = login(a, "me", "me-pass", name="diag")
    c.drain(3)
    note("DIAG %r: a new login: %s, pushed %s" % (body, short(r), short([x.get("body") for x in c.events
                                                                       if x.get("op") == "message"], 600)))
    c.close()


def phase_offline_presence(a, c1, A1, A2, U1, bob):
    section("§5.3 presence; routing when bob is known offline; delay stamp, resource")
    m = len(c1.events)
    bob.stop()
    e = presence_ev(c1, A1, "bob@a.test", "offline", m, 30)
    check(e is not None, "§5.3 bob's session ends -> presence {account %r, bob@a.test, offline}" % A1)
    e = presence_ev(c1, A2, "bob@a.test", "offline", m, 30)
    check(e is not None, "§5.3 ... and for account %r" % A2)
    r = c1.request("send", {"to": {"contact": U1}, "body": "bob is away"})
    check(is_ok(r) and r.get("account") == A1,
          "§4.14 routing: prefer member known offline -> first member whose account is online (%r)" % A1, r)
    r = c1.request("contacts")
    lst = r.get("contacts", []) if is_ok(r) else []
    pb = [x.get("presence") for x in lst if x.get("address") == "bob@a.test"]
    check(pb == ["offline", "offline"], "§4.9 contacts shows bob offline on both accounts", pb)

    m = len(c1.events)
    one = Peer(a.work, [sys.executable, os.path.abspath(__file__), "--xmpp-oneshot",
                        json.dumps({"jid": "bob@a.test/phone", "password": "bob-pw", "addr": a.server_addr, "port": a.c2s, "ca": a.ca,
                                    "show": "away", "to": "alice@a.test", "body": "from the past",
                                    "stamp": "2020-01-02T03:04:05.678Z"})])
    check(one.wait(lambda x: x.get("ev") == "sent", 30) is not None, "oneshot bob/phone logged in and sent")
    e = presence_ev(c1, A1, "bob@a.test", "away", m, 30)
    check(e is not None, "§5.3 bob/phone with <show>away</show> -> presence {account %r, bob@a.test, away}" % A1,
          [x for x in c1.events[m:] if x.get("op") == "presence"])
    if e:
        check(fields(e, "the presence event", ("account", "address", "presence")),
              "§5.3 presence event has {op, account, address, presence}", e)
    e = c1.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "from the past", 30, m)
    check(e is not None and e.get("resource") == "phone" and e.get("ts") == 1577934245678
          and e.get("from") == "bob@a.test" and e.get("contact") == U1,
          "§5.4 resource \"phone\", ts = the XEP-0203 delay stamp (1577934245678), contact %r" % U1, e)
    m = len(c1.events)
    one.stop()
    e = presence_ev(c1, A1, "bob@a.test", "offline", m, 30)
    check(e is not None, "§5.3 bob/phone leaves -> presence offline again")
    m = len(c1.events)
    yan = Peer(a.work, [sys.executable, os.path.abspath(__file__), "--xmpp-oneshot",
                        json.dumps({"jid": "yan@a.test/desk", "password": "yan-pw", "addr": a.server_addr, "port": a.c2s, "ca": a.ca,
                                    "to": "alice@a.test", "body": "from a stranger"})])
    e = c1.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "from a stranger", 30, m)
    check(e is not None and "contact" not in e and e.get("from") == "yan@a.test" and e.get("resource") == "desk",
          "§5.4 a sender in no unified contact -> no contact field; from yan@a.test, resource desk", e)
    yan.stop()
    hi = max(c1.msg_seqs)
    r = c1.request("ack", {"seq": hi})
    check(is_ok(r), "§4.15 ack everything so far", r)


def observe_retries(a, c1, A4, A5):
    section("§5.1 reconnect schedule (refused port) and auth_failed not retried")
    # Let a few retries happen; the timings are reported, not asserted (noisy CI machine).
    c1.wait_event(lambda e: e.get("op") == "account" and e.get("account") == A4
                  and sum(1 for x in c1.events[a.ghost_mark:] if x.get("op") == "account"
                          and x.get("account") == A4 and x.get("state") == "connecting") >= 4,
                  60, a.ghost_mark)
    evs = [(x.get("state"), x.get("detail")) for x in c1.events[a.ghost_mark:]
           if x.get("op") == "account" and x.get("account") == A4]
    nconn = sum(1 for s, _ in evs if s == "connecting")
    check(nconn >= 3, "§5.1 a refused account is retried (%d connecting events seen)" % nconn, evs[:12])
    offl = [d for s, d in evs if s == "offline"]
    check(len(offl) >= 1 and all(is_str(d) and d for d in offl),
          "§5.1 between retries the account is offline with a detail", evs[:12])
    if offl:
        note("§5.1 offline details seen: %s" % short(offl[:3], 400))
    other = sorted(set(s for s, _ in evs) - {"connecting", "offline"})
    if other:
        note("§5.1 the refused account also went through states %s; sequence seen: %s"
             % (other, [s for s, _ in evs][:9]))
    erin = [x.get("state") for x in c1.events[a.erin_failed_at:]
            if x.get("op") == "account" and x.get("account") == A5]
    check(erin == [], "§5.1 auth_failed is not retried before update_account (no event for it since)", erin)


def phase_update(a, c1, A1, A2, A3, A5):
    section("§4.6 update_account")
    m = len(c1.events)
    r = c1.request("update_account", {"account": A5, "password": "erin-pw"})
    check(is_ok(r) and fields(r, "the ok of update_account", ()), "§4.6 update_account {password} of the auth_failed account -> ok", r)
    e = wait_state(c1, A5, ("online",), 45, m)
    check(e is not None, "§4.6 an auth_failed account is retried after an update and gets online",
          [x for x in c1.events[m:] if x.get("op") == "account"])
    check(contacts_ev(c1, A5, lambda l: True, m) is not None,
          "§5.2 a contacts event follows that emulated login (empty roster)")
    m = len(c1.events)
    r = c1.request("update_account", {"account": A2, "options": {"tls_name": "wrong.test"}})
    check(is_ok(r), "§4.6 update_account {options: {tls_name: wrong.test}} -> ok", r)
    e = wait_state(c1, A2, ("offline", "error", "auth_failed"), 45, m)
    check(e is not None and e.get("state") in ("offline", "error"),
          "§4.5 tls_name that the certificate does not carry -> the account does not get online", e)
    if e:
        note("§4.5 a certificate name mismatch shows as state %r, detail %r (the doc does not say which state)"
             % (e.get("state"), e.get("detail")))
    m = len(c1.events)
    r = c1.request("update_account", {"account": A2, "options": {"tls_name": "a.test"}})
    check(is_ok(r), "§4.6 update_account {options: {tls_name: a.test}} -> ok", r)
    check(wait_state(c1, A2, ("online",), 45, m) is not None, "§4.6 ... and the account reconnects online")
    m = len(c1.events)
    r = c1.request("update_account", {"account": A3, "tls": "starttls"})
    check(is_ok(r), "§4.6 update_account {tls: starttls} -> ok", r)
    check(wait_state(c1, A3, ("online",), 45, m) is not None, "§4.6 ... reconnects online with starttls")
    m = len(c1.events)
    r = c1.request("update_account", {"account": A3, "server": a.server(a.c2s_tls), "tls": "tls"})
    check(is_ok(r), "§4.6 update_account {server, tls: tls} -> ok", r)
    check(wait_state(c1, A3, ("online",), 45, m) is not None, "§4.6 ... reconnects online over direct TLS")
    m = len(c1.events)
    r = c1.request("update_account", {"account": A1, "password": "not-alice"})
    check(is_ok(r), "§4.6 update_account with a wrong password -> ok", r)
    e = wait_state(c1, A1, ("auth_failed",), 45, m)
    check(e is not None, "§4.6 ... then auth_failed", [x for x in c1.events[m:] if x.get("op") == "account"])
    m = len(c1.events)
    r = c1.request_raw(4, frame(pack({"op": "update_account", "id": 4, "account": A1, "password": "alice-pw"})))
    check(is_ok(r) and r.get("id") == 4, "§4.6 update_account {password} back -> ok", r)
    check(wait_state(c1, A1, ("online",), 45, m) is not None, "§4.6 ... and alice's account is online again")
    check(contacts_ev(c1, A1, lambda l: any(x.get("address") == "bob@a.test" for x in l if isinstance(x, dict)), m)
          is not None, "§5.2 a contacts event follows the new emulated login of alice's account")
    r = c1.request("accounts")
    ids = sorted(x.get("account") for x in r.get("accounts", [])) if is_ok(r) else None
    d = {x.get("account"): x for x in r.get("accounts", [])} if is_ok(r) else {}
    check(ids is not None and A1 in ids and A2 in ids and A3 in ids and A5 in ids,
          "§4.6 the updated accounts keep their ids", ids)
    check(d.get(A3, {}).get("tls") == "tls" and d.get(A3, {}).get("server") == a.server(a.c2s_tls),
          "§4.8 accounts shows the updated server and tls", d.get(A3))
    for what, f, code in (("unknown account", {"account": 987654321, "password": "x"}, "not_found"),
                          ("account missing", {"password": "x"}, "bad_request"),
                          ("tls \"ssl\"", {"account": A1, "tls": "ssl"}, "bad_request"),
                          ("server 2 bytes", {"account": A1, "server": "h:"}, "bad_request"),
                          ("password 1025 bytes", {"account": A1, "password": "p" * 1025}, "bad_request"),
                          ("password nil", {"account": A1, "password": None}, "bad_request"),
                          ("options not a map", {"account": A1, "options": "x"}, "bad_request")):
        r = c1.request("update_account", f)
        check(is_err(r, code), "§4.6 update_account, %s -> %s" % (what, code), r)
    m = len(c1.events)
    r = c1.request("update_account", {"account": A1})
    note("§4.6 silent: update_account with no field to change got %s" % short(r))
    c1.drain(1)


def phase_ctl(a):
    section("OPERATIONS.md: imfusectl tables")
    rc, out, err = ctl(a, "user", "list")
    lines = out.splitlines()
    check(rc == 0 and lines and lines[0].split() == ["NAME", "UID", "ACCOUNTS", "QUEUED", "SESSIONS"],
          "imfusectl user list: header NAME UID ACCOUNTS QUEUED SESSIONS", (rc, out, err))
    me = [l.split() for l in lines[1:] if l.split()[:1] == ["me"]]
    check(len(me) == 1 and len(me[0]) == 5 and me[0][2] == "5", "imfusectl user list: me has 5 accounts", me)
    rc, out, err = ctl(a, "accounts", "me")
    hdr = out.splitlines()[0].split() if out else []
    check(rc == 0 and hdr == ["ACCOUNT", "NETWORK", "LOGIN", "SERVER", "TLS", "NAME", "STATE", "DETAIL"],
          "imfusectl accounts me: header ACCOUNT NETWORK LOGIN SERVER TLS NAME STATE DETAIL", (rc, out, err))
    rc, out, err = ctl(a, "sessions")
    lines = out.splitlines()
    check(rc == 0 and lines and lines[0].split()[:4] == ["USER", "PEER", "DEVICE", "SINCE"]
          and any("laptop" in l.split() for l in lines[1:]),
          "imfusectl sessions: header USER PEER DEVICE SINCE, the laptop device listed", (rc, out, err))
    rc, out, err = ctl(a, "user", "del", "nosuchuser")
    check(rc == 1 and err.startswith("imfusectl: not_found: "), "imfusectl user del of an unknown user -> exit 1, "
          "'imfusectl: not_found: ...'", (rc, err))
    p = subprocess.run([a.imfusectl, "-s", "/nonexistent/imfused.sock", "stats"], capture_output=True, text=True,
                       timeout=30)
    check(p.returncode == 2 and "cannot connect to /nonexistent/imfused.sock" in p.stderr
          and "(is imfused running? give its socket with -s SOCKET)" in p.stderr,
          "imfusectl with no daemon -> exit 2, 'cannot connect ... (is imfused running? give its socket ...)'",
          (p.returncode, p.stderr))


def phase_other_user(a, c1, A1):
    section("accounts of another user are not visible (not_found)")
    o, r = login(a, "other", "other-pw", name="other")
    check(is_ok(r), "login other", r)
    r = o.request("link", link_fields("frank@a.test", "frank-pw", a.server(a.c2s), "starttls"))
    check(is_ok(r), "other links frank@a.test", r)
    F = r.get("account") if is_ok(r) else None
    check(wait_state(o, F, ("online",), 45) is not None, "other's account online")
    for op, f in (("update_account", {"account": F, "password": "x"}), ("unlink", {"account": F}),
                  ("add_contact", {"account": F, "address": "x@a.test"}),
                  ("remove_contact", {"account": F, "address": "x@a.test"})):
        r = c1.request(op, f)
        check(is_err(r, "not_found"), "§4.6/4.7/4.10/4.11 %s on another user's account -> not_found" % op, r)
    r = c1.request("send", {"to": {"account": F, "address": "bob@a.test"}, "body": "x"})
    check(is_err(r, "not_found"), "§4.14 send via another user's account -> not_found", r)
    r = o.request("send", {"to": {"account": F, "address": "bob@a.test"}, "body": "other's m-1", "cid": "m-1"})
    check(is_ok(r) and r.get("account") == F and r.get("msg") != a.first_msg,
          "§4.14 cid de-duplication is per user: another user's cid m-1 is a new message", (a.first_msg, r))
    r = c1.request("set_unified", {"contacts": [uc("X", [(F, "bob@a.test")])]})
    check(is_err(r, "not_found"), "§4.12 set_unified with another user's account -> not_found", r)
    leaked = [x for x in c1.events if x.get("account") == F]
    check(leaked == [], "events of another user's account never reach this user", leaked[:3])
    r = o.request("link", link_fields("alice@a.test", "alice-pw", a.dead_server, "none"))
    note("§4.5 silent: a second appliance user linking alice@a.test (already linked by user me) got %s"
         % short(r))
    if is_ok(r):
        o.request("unlink", {"account": r["account"]})
    o.close()


def phase_unlink(a, c1, A4, U3, c2=None):
    section("§4.5 server given as a host name; §4.7 unlink")
    m = len(c1.events)
    r = c1.request("link", link_fields("yan@a.test", "yan-pw", "%s:%d" % (a.server_name, a.c2s), "starttls"))
    check(is_ok(r), "§4.5 link with server %s:PORT (a host name, /etc/hosts) -> ok" % a.server_name, r)
    Y = r.get("account") if is_ok(r) else None
    e = wait_state(c1, Y, ("online",), 45, m)
    check(e is not None, "§4.5 server \"host:port\" with a host name (%s) gets online" % a.server_name,
          [(x.get("state"), x.get("detail")) for x in c1.events[m:] if x.get("op") == "account"][:4])
    r = c1.request("unlink", {"account": Y})
    check(is_ok(r), "§4.7 unlink of an account (online or retrying) -> ok", r)
    m = len(c1.events)
    r = c1.request("unlink", {"account": A4})
    check(is_ok(r) and fields(r, "the ok of unlink", ()), "§4.7 unlink -> ok", r)
    r = c1.request("accounts")
    check(is_ok(r) and A4 not in [x.get("account") for x in r.get("accounts", [])],
          "§4.8 the unlinked account is gone from accounts", r)
    r = c1.request("unlink", {"account": A4})
    check(is_err(r, "not_found"), "§4.7 unlink again -> not_found", r)
    r = c1.request("send", {"to": {"account": A4, "address": "x@a.test"}, "body": "x"})
    check(is_err(r, "not_found"), "§4.14 send via an unlinked account -> not_found", r)
    r = c1.request("update_account", {"account": A4, "password": "x"})
    check(is_err(r, "not_found"), "§4.6 update_account of an unlinked account -> not_found", r)
    for what, f in (("account missing", {}), ("account a str", {"account": "1"})):
        r = c1.request("unlink", f)
        check(is_err(r, "bad_request"), "§4.7 unlink, %s -> bad_request" % what, r)
    c1.drain(2)
    evs = [x for x in c1.events[m:] if x.get("account") == A4]
    note("§4.7 silent: events after unlink for the account: %s" % short(evs, 500))
    if c2 is not None:
        c2.drain(1)
        evs2 = [x for x in c2.events if x.get("account") == A4 and x.get("op") == "account"]
        note("§3.4/§4.7 silent: the user's other connection learns of the unlink by: %s (last account event it "
             "holds for it: %s)" % ("no event" if not any(x.get("state") == "offline" and "unlink" in str(x.get("detail"))
                                                            for x in evs2) else "an event", short(evs2[-1:] or None)))
    r = c1.request("unified")
    mem = [x for x in r.get("contacts", []) if any(mm.get("account") == A4 for mm in x.get("members", []))] \
        if is_ok(r) else None
    note("§4.7/§4.13 silent: unified contacts still naming the unlinked account: %s" % short(mem, 400))
    r = c1.request("send", {"to": {"contact": U3}, "body": "x"})
    note("§4.14 send to a unified contact whose only member's account was unlinked got %s" % short(r))


def phase_irc_sip(a, c1):
    section("§2.3 IRC and SIP logins and addresses (lists imfuse keeps; servers unreachable)")
    m = len(c1.events)
    r = c1.request("link", {"network": "irc", "login": "Alice", "password": "", "server": a.dead_server, "tls": "none",
                            "options": {"nickserv": "yes", "sasl": "no", "ison_interval": "30"}})
    check(is_ok(r), "§4.5 link irc nick Alice with IRC options -> ok", r)
    I = r.get("account") if is_ok(r) else None
    r = c1.request("link", {"network": "sip", "login": "alice@sip.test", "password": "pw", "server": a.dead_server,
                            "tls": "none", "options": {"expires": "300"}})
    check(is_ok(r), "§4.5 link sip alice@sip.test (without sip:) -> ok", r)
    S = r.get("account") if is_ok(r) else None
    r = c1.request("link", {"network": "sip", "login": "sip:alice@sip.test", "password": "pw", "server": a.dead_server,
                            "tls": "none"})
    check(is_err(r, "exists"), "§2.3 link sip:alice@sip.test after alice@sip.test -> exists (same login)", r)
    r = c1.request("link", {"network": "irc", "login": "ALICE", "password": "", "server": a.dead_server, "tls": "none"})
    check(is_err(r, "exists"), "§2.3 IRC nicks compare case-insensitively: link ALICE after Alice -> exists", r)
    r = c1.request("accounts")
    d = {x.get("account"): x for x in r.get("accounts", [])} if is_ok(r) else {}
    note("§2.3 silent: the normalised login of IRC nick Alice is %r" % d.get(I, {}).get("login"))
    check(d.get(S, {}).get("login") == "sip:alice@sip.test",
          "§2.3/§4.8 a SIP login given as alice@sip.test is listed as sip:alice@sip.test", d.get(S))
    check(d.get(I, {}).get("network") == "irc" and d.get(S, {}).get("network") == "sip",
          "§4.8 accounts shows networks irc and sip", (d.get(I), d.get(S)))
    e = c1.wait_event(lambda x: x.get("op") == "account" and x.get("account") == S, 30, m)
    check(e is not None and e.get("login") == "sip:alice@sip.test", "§5.1 the SIP account event carries sip:alice@sip.test", e)
    for acct, given, want in ((I, "Bob", "bob"), (S, "bob@sip.test", "sip:bob@sip.test"), (S, "sip:Carol@SIP.Test", None)):
        m = len(c1.events)
        r = c1.request("add_contact", {"account": acct, "address": given, "name": "X"})
        check(is_ok(r), "§4.10 add_contact %r on the %s account -> ok" % (given, "irc" if acct == I else "sip"), r)
        e = contacts_ev(c1, acct, lambda l: len(l) > 0, m)
        addrs = [x.get("address") for x in e["contacts"]] if e else None
        if want is not None:
            check(addrs is not None and want in addrs and (given == want or given not in addrs),
                  "§2.3 the contacts event lists %r as %r" % (given, want), addrs)
        else:
            note("§2.3 silent: SIP address sip:Carol@SIP.Test (mixed-case user and host) is listed as %s" % addrs)
    r = c1.request("add_contact", {"account": S, "address": "nodomain"})
    check(is_err(r, "bad_request"), "§2.3 SIP address without a domain -> bad_request", r)
    r = c1.request("add_contact", {"account": I, "address": "bad nick"})
    check(is_err(r, "bad_request"), "§2.3 IRC nick with a space -> bad_request", r)
    r = c1.request("remove_contact", {"account": I, "address": "BOB"})
    check(is_ok(r), "§2.3 remove_contact BOB on IRC (case-insensitive) -> ok", r)
    r = c1.request("contacts")
    left = [x.get("address") for x in r.get("contacts", []) if x.get("account") == I] if is_ok(r) else None
    check(left == [], "§4.11 the IRC list is empty after removing BOB", left)
    r = c1.request("send", {"to": {"account": I, "address": "bob"}, "body": "x"})
    check(is_err(r, "account_offline"), "§4.14 send via an IRC account that is not online -> account_offline", r)
    for acct in (I, S):
        r = c1.request("unlink", {"account": acct})
        check(is_ok(r), "§4.7 unlink", r)


def phase_replay_race(a, imf, bob):
    section("§6 replay while live messages keep arriving")
    for i in range(10):
        peer_send(bob, "alice@a.test", "race-%02d" % i)
    q = poll_queued(a, 10)
    check(q == 10, "§4.3 queued reaches 10", q)
    for i in range(10, 40):
        peer_send(bob, "alice@a.test", "race-%02d" % i)
    c, r = login(a, "me", "me-pass", name="race")
    check(is_ok(r) and is_uint(r.get("queued")) and r["queued"] >= 10, "§4.3 login while messages arrive -> ok, queued >= 10", r)
    c.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "race-39", 60)
    c.drain(1)
    msgs = [x for x in c.events if x.get("op") == "message"]
    bodies = [x.get("body") for x in msgs]
    sq = [x.get("seq") for x in msgs]
    check(bodies == ["race-%02d" % i for i in range(40)], "§6 replayed then live: every message once, in order", bodies)
    check(all(sq[i] < sq[i + 1] for i in range(len(sq) - 1)), "§6 seq strictly increasing across replay and live", sq)
    if sq:
        r = c.request("ack", {"seq": sq[-1]})
        check(is_ok(r), "ack the race messages", r)
    c.close()


def run_refused(a, args, what):
    """Run imfused expecting it to refuse to start.  Returns its exit code with leak checking off
    (ASan turns a leak into exit 1); a sanitizer report on the refusal path is its own check."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.run(a.wrap + [a.imfused] + args, capture_output=True, text=True, timeout=60, env=env)
    q = subprocess.run(a.wrap + [a.imfused] + args, capture_output=True, text=True, timeout=60)
    rep_ = [l.strip() for l in q.stderr.splitlines() if "Sanitizer" in l or "runtime error:" in l]
    check(rep_ == [], "no sanitizer report when imfused refuses to start (%s)" % what, rep_[:2])
    return p


def phase_ops_restart(a, imf):
    section("OPERATIONS.md: start-up refusals (the daemon is stopped)")
    key = os.path.join(a.data, "appliance.key")
    os.chmod(key, 0o640)
    p = run_refused(a, ["--data", a.data, "--listen", hostport(APPLIANCE_ADDR, a.port), "--control", a.ctl], "key 0640")
    check(p.returncode == 1, "OPERATIONS: a key readable by group -> start refused, exit 1", (p.returncode, p.stderr[-300:]))
    os.chmod(key, 0o600)
    cfg = os.path.join(a.work, "bad.conf")
    with open(cfg, "w") as f:
        f.write("# a comment\nno-such-key = 1\n")
    p = run_refused(a, ["--config", cfg, "--data", a.data], "unknown config key")
    check(p.returncode == 64 and re.search(r"\b2\b", p.stderr) is not None,
          "OPERATIONS: an unknown config key -> exit 64, the message names line 2", (p.returncode, p.stderr[-300:]))
    p = run_refused(a, ["--io", "dpdk", "--data", a.data], "--io dpdk")
    check(p.returncode != 0, "OPERATIONS: --io dpdk is refused", (p.returncode, p.stderr[-200:]))
    note("OPERATIONS silent: --io dpdk exits %d (64 bad flag or 1 start-up failure?)" % p.returncode)


def poll_queued(a, want, timeout=45):
    """Logs in on fresh connections until `queued` reaches want; returns the last value."""
    deadline = time.monotonic() + timeout
    q = None
    while time.monotonic() < deadline:
        c, r = login(a, "me", "me-pass", name="poll")
        q = r.get("queued") if is_ok(r) else None
        c.request("logout")
        c.close()
        if q is not None and q >= want:
            return q
        time.sleep(0.3)
    return q


def c6_alive_probe(a):
    c = fresh(a, "probe")
    ok = c.alive()
    c.close()
    rc, out, _ = ctl(a, "stats")
    return ok and rc == 0


def replay_login(a, name):
    c, r = login(a, "me", "me-pass", name=name)
    q = r.get("queued") if is_ok(r) else None
    if is_uint(q):
        c.wait_event(lambda e: len(c.msg_seqs) >= q, 30)
    c.drain(1)
    return c, r


def check_replay(c, r, bodies, what, seqs=None):
    msgs = [e for e in c.events if e.get("op") == "message"]
    check(is_ok(r) and r.get("queued") == len(bodies), "§4.3/§6 %s: login ok, queued = %d" % (what, len(bodies)), r)
    check([m.get("body") for m in msgs] == bodies, "§6 %s: the queued messages are pushed, in order" % what,
          [m.get("body") for m in msgs])
    sq = [m.get("seq") for m in msgs]
    check(all(sq[i] < sq[i + 1] for i in range(len(sq) - 1)), "§6 %s: in strictly increasing seq order" % what, sq)
    if seqs is not None:
        check(sq == seqs, "§6 %s: the same seqs as before" % what, (seqs, sq))
    rpos = c.log.index(("reply", r.get("id"))) if isinstance(r, dict) and ("reply", r.get("id")) in c.log else None
    mpos = [i for i, x in enumerate(c.log) if x == ("event", "message")]
    check(rpos is not None and all(p > rpos for p in mpos), "§6 %s: messages come after the login's ok" % what,
          c.log[:8])
    check(len(set(sq)) == len(sq), "§6 %s: no message twice on one connection" % what, sq)
    return sq


def phase_logout_replay(a, imf, c1, c2, bob_start):
    section("§4.4 logout")
    r = c2.request_raw(30, a.docs[("→", "logout", 30)])
    check(r == {"op": "ok", "id": 30}, "§4.4 the doc's logout bytes (id 30) -> {op: ok, id: 30}", r)
    r = c2.request("accounts")
    check(is_err(r, "not_logged_in"), "§4.4 after logout the connection is logged out (accounts -> not_logged_in)", r)
    check(c2.alive(), "§4.4 the connection stays open after logout")
    bob = bob_start()
    m1, m2 = len(c1.events), len(c2.events)
    peer_send(bob, "alice@a.test", "after logout")
    e = c1.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "after logout", 30, m1)
    check(e is not None, "§6 the logged-in connection gets the message")
    c2.drain(2)
    check([x for x in c2.events[m2:]] == [], "§4.4 a logged-out connection gets no events", c2.events[m2:])
    r = c2.request("login", {"user": "other", "password": "other-pw"})
    check(is_ok(r) and r.get("user") == "other", "§4.4 after logout the connection can log in as another user", r)
    c2.drain(1)
    check(not any(x.get("op") == "message" for x in c2.events[m2:]), "§4.4 ... and gets none of the first user's messages",
          c2.events[m2:])
    r = c2.request("logout")
    check(is_ok(r), "logout other", r)
    m2 = len(c2.events)
    r = c2.request("login", {"user": "me", "password": "me-pass"})
    check(is_ok(r) and r.get("queued") == 1, "§4.4 login again on the same connection -> ok, queued 1", r)
    c2.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "after logout", 30, m2)
    r = c1.request("ack", {"seq": max(c1.msg_seqs)})
    check(is_ok(r), "ack", r)
    c1.request("logout")
    c2.request("logout")

    section("§6 replay at login, across restart and kill -9")
    for i in (1, 2, 3):
        peer_send(bob, "alice@a.test", "r%d" % i)
    q = poll_queued(a, 3)
    check(q == 3, "§4.3 queued reaches 3 while the user is offline", q)
    c3, r3 = replay_login(a, "c3")
    seqs = check_replay(c3, r3, ["r1", "r2", "r3"], "fresh login")
    c4, r4 = replay_login(a, "c4")
    check_replay(c4, r4, ["r1", "r2", "r3"], "second login before ack", seqs)
    m = len(c3.events)
    peer_send(bob, "alice@a.test", "live")
    e = c3.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "live", 30, m)
    check(e is not None and seqs and e.get("seq", 0) > seqs[-1], "§6 then live messages, with a higher seq", e)
    seqs.append(e.get("seq") if e else None)
    c3.close()
    c4.close()
    bob.stop()
    rc = imf.stop()
    check(rc == 0, "OPERATIONS: imfused exits 0 after SIGTERM", rc)
    imf.start()
    c5, r5 = replay_login(a, "c5")
    check_replay(c5, r5, ["r1", "r2", "r3", "live"], "after a restart", seqs)
    c5.close()
    imf.kill9()
    check(os.path.exists(a.ctl), "a control socket file is left behind by kill -9")
    imf.start()
    check(True, "OPERATIONS: a control socket file left by a crash is replaced (imfused started)")
    p = run_refused(a, ["--data", os.path.join(a.work, "data2"), "--listen", hostport(APPLIANCE_ADDR, a.port + 5),
                        "--control", a.ctl], "control socket in use")
    check(p.returncode == 1, "OPERATIONS: a second imfused on a live control socket is refused (exit 1)",
          (p.returncode, p.stderr[-300:]))
    check(c6_alive_probe(a), "the first imfused still serves after the refused second start")
    c6, r6 = replay_login(a, "c6")
    check_replay(c6, r6, ["r1", "r2", "r3", "live"], "after kill -9", seqs)
    r = c6.request("ack", {"seq": seqs[-1]})
    check(is_ok(r), "§4.15 ack after the restart", r)
    imf.kill9()
    imf.start()
    c7, r7 = login(a, "me", "me-pass", name="c7")
    check(is_ok(r7) and r7.get("queued") == 0,
          "§4.15 the ack's ok means committed: kill -9 right after it, restart -> queued 0", r7)
    bob = bob_start()
    m = len(c7.events)
    peer_send(bob, "alice@a.test", "post-restart")
    e = c7.wait_event(lambda x: x.get("op") == "message" and x.get("body") == "post-restart", 60, m)
    check(e is not None and seqs[-1] is not None and e.get("seq", 0) > seqs[-1],
          "§5.4 seq keeps increasing across restarts", (seqs, e))
    if e:
        c7.request("ack", {"seq": e["seq"]})
    bob.stop()
    c6.close()
    c7.close()


def phase_register_on(a):
    section("§4.2 register with --open-registration; the doc's bytes for register and login")
    c = fresh(a, "reg")
    r = c.request_raw(1, a.docs[("→", "register", 1)])
    check(r == {"op": "ok", "id": 1}, "§4.2 the doc's register bytes (alice/wonderland) -> {op: ok, id: 1}", r)
    c0 = fresh(a, "reg2")
    r = c0.request_raw(1, a.docs[("→", "register", 1)])
    expect_kept(c0, r, "exists", "§4.2 register of an existing user (the doc's bytes again)")
    c0.close()
    for what, f in (("user with upper case", {"user": "Newbie", "password": "pw"}),
                    ("user with a space", {"user": "new bie", "password": "pw"}),
                    ("user 65 bytes", {"user": "u" * 65, "password": "pw"}),
                    ("user \"\"", {"user": "", "password": "pw"}),
                    ("password \"\"", {"user": "newbie", "password": ""}),
                    ("password 1025 bytes", {"user": "newbie", "password": "p" * 1025}),
                    ("password missing", {"user": "newbie"}),
                    ("user is an int", {"user": 5, "password": "pw"})):
        r = c.request("register", f)
        check(is_err(r, "bad_request"), "§4.2 register, %s -> bad_request" % what, r)
    r = c.request("register", {"user": "u" * 64, "password": "p" * 1024})
    check(is_ok(r), "§2.1 register a 64-byte user with a 1024-byte password -> ok", r)
    r = c.request("register", {"user": "a.b_c-9", "password": "x"})
    check(is_ok(r), "§2.1 register a.b_c-9 (every allowed character class) -> ok", r)
    r = c.request("login", {"user": "u" * 64, "password": "p" * 1024})
    check(is_ok(r) and r.get("user") == "u" * 64, "§4.3 the 64-byte user logs in", r)
    r = c.request("register", {"user": "while-in", "password": "x"})
    note("§3.4 silent: register on a logged-in connection got %s" % short(r))
    c.close()
    c = fresh(a, "doclogin")
    r = c.request_raw(2, a.docs[("→", "login", 2)])
    check(is_ok(r) and r.get("id") == 2 and r.get("user") == "alice" and r.get("queued") == 0 and fields(r, "the ok of login", ("user", "queued")),
          "§4.3 the doc's login bytes -> ok {id: 2, user: alice, queued: 0}", r)
    r = c.request("ack", {"seq": 0})
    note("§4.15 silent: ack {seq: 0} by a user to whom nothing was ever pushed got %s" % short(r))
    r = c.request_raw(3, a.docs[("→", "link", 3)])
    check(is_ok(r) and r.get("id") == 3 and is_uint(r.get("account")),
          "§4.5 the doc's link bytes (alice@a.test, a.test:5222, starttls, Work) -> ok {account}", r)
    if is_ok(r):
        note("§4.5 silent: account ids are %s across users (alice's first account got id %r)"
             % ("global" if r["account"] != 1 else "per user or global", r["account"]))
        e = c.wait_event(lambda x: x.get("op") == "account" and x.get("account") == r["account"]
                         and x.get("state") in ("offline", "error"), 45)
        check(e is not None, "§5.1 a server name that does not resolve -> offline/error", e)
        if e:
            note("§5.1 unresolvable host shows as %r with detail %r" % (e.get("state"), e.get("detail")))
    c.close()


def phase_tls_listener(a):
    section("§1 the TLS client listener")
    ctx = ssl.create_default_context(cafile=a.ca)
    try:
        c = Conn(a.tls_port, tls_ctx=ctx, name="tls")
    except (OSError, ssl.SSLError) as e:
        check(False, "§1 TLS listener accepts a TLS client verifying a.test", str(e))
        return
    r = c.request_raw(1, a.docs[("→", "ping", 1)])
    check(r == {"op": "ok", "id": 1}, "§1 ping over the TLS listener -> ok", r)
    r = c.request("login", {"user": "me", "password": "me-pass"})
    check(is_ok(r), "§1 login over the TLS listener", r)
    r = c.request("accounts")
    check(is_ok(r) and type(r.get("accounts")) is list, "§1 accounts over the TLS listener", r)
    c.close()
    expect_fatal_tls = Conn(a.tls_port, tls_ctx=ctx, name="tlsfatal")
    expect_fatal_tls.send_raw(b"\x00\x00\x00\x00")
    got, closed = expect_fatal_tls.until_close(15)
    check(closed and len(got) == 1 and got[0].get("code") == "bad_request" and "id" not in got[0],
          "§3.3 L = 0 over TLS -> error without id, closed", got)
    expect_fatal_tls.close()


def phase_lockout(a):
    section("§4.3 lockout -> limit")
    # user lockout: wrong passwords for 'victim', each from a different source address
    got_limit = None
    t0 = time.monotonic()
    for i in range(1, 61):
        if time.monotonic() - t0 > 240:
            break
        c, r = login(a, "victim", "wrong-%d" % i, src=a.src(1, i), name="lock")
        c.close()
        if is_err(r, "limit"):
            got_limit = i
            break
        if not is_err(r, "auth_failed"):
            check(False, "§4.3 wrong password -> auth_failed (attempt %d)" % i, r)
            break
    check(got_limit is not None, "§4.3 repeated wrong passwords lock the user out (limit after %r attempts)" % got_limit)
    if got_limit:
        note("§4.3 the user was locked out at attempt %d (the doc gives no number nor duration)" % got_limit)
        c, r = login(a, "victim", "victim-pw", src=a.src(2, 1), name="lock")
        check(is_err(r, "limit"), "§4.3 while locked out, the right password from another address -> limit", r)
        c.close()
    # source lockout: wrong users from one address
    got_limit = None
    t0 = time.monotonic()
    c = None
    for i in range(1, 61):
        if time.monotonic() - t0 > 240:
            break
        if c is None or c.eof:
            c = Conn(a.port, src=a.src(3, 1), name="srclock")
        r = c.request("login", {"user": "nobody%d" % i, "password": "x"})
        if is_err(r, "limit"):
            got_limit = i
            break
        if not is_err(r, "auth_failed"):
            if r is None:
                c.close()
                c = None
                continue
            check(False, "§4.3 unknown user -> auth_failed (attempt %d)" % i, r)
            break
    if c:
        c.close()
    check(got_limit is not None, "§4.3 repeated failures from one address lock that address out (limit after %r)" % got_limit)
    if got_limit:
        note("§4.3 the source address was locked out at attempt %d" % got_limit)
        c, r = login(a, "me", "me-pass", src=a.src(3, 1), name="srclock")
        check(is_err(r, "limit"), "§4.3 a locked-out address gets limit even with right credentials", r)
        c.close()
        c, r = login(a, "me", "me-pass", src=a.src(4, 1), name="other-src")
        check(is_ok(r), "§4.3 the same user from another address still logs in", r)
        c.close()


def ops_checks(a):
    section("OPERATIONS.md: data directory, key, control socket")
    st = os.stat(a.data)
    check(stat.S_IMODE(st.st_mode) == 0o700, "OPERATIONS: --data DIR created 0700", oct(stat.S_IMODE(st.st_mode)))
    for f in ("data.mdb", "lock.mdb", "appliance.key"):
        check(os.path.exists(os.path.join(a.data, f)), "OPERATIONS: DATA/%s exists" % f)
    k = os.path.join(a.data, "appliance.key")
    if os.path.exists(k):
        check(stat.S_IMODE(os.stat(k).st_mode) & 0o077 == 0, "OPERATIONS: appliance.key not readable by group/others",
              oct(stat.S_IMODE(os.stat(k).st_mode)))
    st = os.stat(a.ctl)
    check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, "OPERATIONS: control socket mode 0600",
          "%s mode %s" % ("socket" if stat.S_ISSOCK(st.st_mode) else "not a socket", oct(stat.S_IMODE(st.st_mode))))
    p = run_refused(a, ["--no-such-flag"], "unknown flag")
    check(p.returncode == 64, "OPERATIONS: a bad flag -> exit 64", p.returncode)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--xmpp-oneshot":
        xmpp_oneshot(json.loads(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--c2s", type=int, required=True)
    ap.add_argument("--c2s-tls", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--port", type=int, default=17700)
    ap.add_argument("--tls-port", type=int, default=17701)
    ap.add_argument("--server-addr", required=True)
    ap.add_argument("--appliance-addr", required=True)
    ap.add_argument("--server-name", required=True)
    ap.add_argument("--source-net", required=True)
    ap.add_argument("--imfused-wrap", default="")
    ap.add_argument("--imfused-args", default="")
    a = ap.parse_args()
    global APPLIANCE_ADDR
    APPLIANCE_ADDR = a.appliance_addr
    a.wrap = a.imfused_wrap.split()
    a.args = a.imfused_args.split()
    net = ipaddress.ip_network(a.source_net)
    a.src = lambda k, i: str(net[k * 256 + i])      # a further client source address
    a.server = lambda port: hostport(a.server_addr, port)
    a.dead_server = a.server(1)                      # nothing listens there
    a.imfused = os.path.join(a.root, "build", "asan", "imfused")
    a.imfusectl = os.path.join(a.root, "build", "asan", "imfusectl")
    a.data = os.path.join(a.work, "data")
    a.ctl = os.path.join(a.work, "imfused.sock")
    a.peer = os.environ.get("SPEC_XMPP_PEER") or os.path.join(a.root, "tests", "integration", "lib", "xmpp_peer.py")
    a.docs = check_doc_examples(a.root)
    certs = os.path.join(a.work, "prosody", "certs")

    def bob_start():
        b = Peer(a.work, [sys.executable, a.peer, "bob@a.test", "bob-pw", a.server_addr, str(a.c2s), a.ca])
        check(b.wait(lambda e: e.get("ev") == "online", 30) is not None, "the XMPP peer bob is online")
        return b

    imf = Imfused(a)
    try:
        imf.start()
        ops_checks(a)
        phase_framing(a, a.docs)
        phase_logged_out(a)
        phase_register_off(a)
        for u in ("me", "other", "victim"):
            rc, out, err = ctl(a, "user", "add", u, stdin="%s-pass\n" % u if u == "me" else "%s-pw\n" % u)
            check(rc == 0 and out.strip() == "user %s added" % u, "imfusectl user add %s" % u, (rc, out, err))
        phase_login(a)
        c1, r = login(a, "me", "me-pass", device="laptop", name="c1")
        check(is_ok(r) and r.get("queued") == 0, "login me (c1) -> queued 0", r)
        c2, r = login(a, "me", "me-pass", device="phone", name="c2")
        check(is_ok(r), "§3.4 the same user logged in on a second connection (c2)", r)
        A1, A2, A3, A4, A5 = phase_accounts(a, c1, c2)
        section("§5.3 presence (the XMPP peer bob comes online)")
        m1, m2 = len(c1.events), len(c2.events)
        bob = bob_start()
        check(presence_ev(c1, A1, "bob@a.test", "available", m1) is not None,
              "§5.3 presence {account %r, address bob@a.test, presence available}" % A1)
        check(presence_ev(c1, A2, "bob@a.test", "available", m1) is not None,
              "§5.3 presence for carol's account %r too" % A2)
        check(presence_ev(c2, A1, "bob@a.test", "available", m2) is not None,
              "§3.4 the second connection gets the presence event")
        r = c1.request("contacts")
        pb = sorted((x.get("account"), x.get("presence")) for x in r.get("contacts", [])
                    if x.get("address") == "bob@a.test") if is_ok(r) else None
        check(pb == sorted([(A1, "available"), (A2, "available")]), "§4.9 contacts shows bob available", pb)
        phase_contacts_edit(a, c1, A3)
        U1, U2, U3 = phase_unified(a, c1, A1, A2, A3, A4)
        first = phase_send(a, c1, A1, A2, A3, A4, A5, U1, U2, U3, bob)
        a.first_msg = first.get("msg")
        phase_incoming(a, c1, c2, A1, A2, U1, bob)
        phase_unified_case(a, c1, A1, A2, U1, bob)
        phase_offline_presence(a, c1, A1, A2, U1, bob)
        observe_retries(a, c1, A4, A5)
        phase_update(a, c1, A1, A2, A3, A5)
        phase_ctl(a)
        phase_other_user(a, c1, A1)
        phase_unlink(a, c1, A4, U3, c2)
        phase_irc_sip(a, c1)
        phase_logout_replay(a, imf, c1, c2, bob_start)
        bob = bob_start()
        phase_replay_race(a, imf, bob)
        bob.stop()
        with open(os.path.join(a.work, "c1.events.json"), "w") as f:
            for x in c1.events:
                f.write(json.dumps(x, default=repr)[:400] + "\n")
        c1.close()
        c2.close()
        rc = imf.stop()
        check(rc == 0, "OPERATIONS: imfused exits 0 after SIGTERM", rc)
        phase_ops_restart(a, imf)
        imf.extra = ["--open-registration", "--listen-tls", hostport(APPLIANCE_ADDR, a.tls_port),
                     "--tls-cert", os.path.join(certs, "a.test.crt"),
                     "--tls-key", os.path.join(certs, "a.test.key")]
        imf.start()
        phase_register_on(a)
        phase_tls_listener(a)
        phase_lockout(a)
        rc = imf.stop()
        check(rc == 0, "OPERATIONS: imfused exits 0 after SIGTERM", rc)
    except Exception as e:  # a crash of the test itself is a failure, never a pass
        import traceback
        traceback.print_exc()
        check(False, "the spec run completed without an exception", repr(e))
    finally:
        for p in CHILDREN:
            if p.poll() is None:
                stop_proc(p, 10)
        check(VIOLATIONS == [], "every frame and event from the appliance was well-formed per §1/§2/§5",
              VIOLATIONS[:5])
        bad = imf.sanitizer_reports()
        check(bad == [], "no sanitizer report in the imfused logs", bad)
    print("# notes (%d):" % len(NOTES))
    for n in NOTES:
        print("#   " + n)
    print("%d passed, %d failed" % (N_OK, len(FAILS)))
    for f in FAILS:
        print("#   FAIL: " + f)
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
