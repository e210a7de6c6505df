"""A real SIP user agent for the integration tests (bob), written from RFC 3261,
RFC 3428, RFC 7616, RFC 6665 / RFC 3856 (presence subscriptions), RFC 3903
(PUBLISH) and RFC 3863 (PIDF); no SIP library.

    python3 sip_peer.py USER DOMAIN PASSWORD HOST PORT [--expires N]

It connects over TCP, REGISTERs (answering a 401 with digest credentials:
MD5 or SHA-256, qop=auth), and with Contact = its own local TCP address so the
proxy reaches it over the same connection.  Prints one JSON line per event:

    {"ev":"online","ms":N}                       registered (N = ms the REGISTER took)
    {"ev":"auth_failed","status":N}              REGISTER refused
    {"ev":"message","from":URI,"body":TEXT,"ctype":CT}   an incoming MESSAGE (answered 200 OK)
    {"ev":"sent","n":N,"status":CODE,"reason":R} final answer to our MESSAGE
    {"ev":"published","basic":B,"status":CODE,"expires":N}   final answer to our PUBLISH
                                                 (B "open", "closed" or null for a removal)
    {"ev":"subscribed","to":URI,"status":CODE}   final answer to our SUBSCRIBE
    {"ev":"presence","from":URI,"basic":B,"note":N,"state":S,"ctype":CT}
                                                 a NOTIFY of one of our subscriptions (answered
                                                 200 OK): B "open"/"closed"/null (no PIDF body),
                                                 S the Subscription-State value
    {"ev":"bye"}                                 un-REGISTERed (after "quit")

Commands on stdin, one JSON object per line:
    {"cmd":"send","to":URI,"body":TEXT}          MESSAGE
    {"cmd":"publish","basic":"open"|"closed"[,"note":TEXT]}
                                                 PUBLISH our presence (SIP-If-Match once we
                                                 have an entity tag)
    {"cmd":"subscribe","to":URI}                 SUBSCRIBE Event: presence
    {"cmd":"quit"}                               remove our publication (PUBLISH Expires: 0),
                                                 then REGISTER Expires: 0, then exit
Every request is answered a 401/407 challenge once.
"""
import hashlib
import json
import os
import select
import socket
import sys
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

PIDF_NS = "urn:ietf:params:xml:ns:pidf"


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def rnd(n=8):
    return os.urandom(n).hex()


def parse_params(s):
    """Digest challenge parameters: name=value or name="value", comma separated."""
    res, i = {}, 0
    while i < len(s):
        while i < len(s) and s[i] in " ,\t":
            i += 1
        j = i
        while j < len(s) and s[j] != "=":
            j += 1
        name = s[i:j].strip().lower()
        j += 1
        if j < len(s) and s[j] == '"':
            k = j + 1
            val = ""
            while k < len(s) and s[k] != '"':
                if s[k] == "\\":
                    k += 1
                val += s[k]
                k += 1
            i = k + 1
        else:
            k = j
            while k < len(s) and s[k] != ",":
                k += 1
            val = s[j:k].strip()
            i = k
        if name:
            res[name] = val
    return res


def uri_of(v):
    return v[v.find("<") + 1:v.find(">")] if "<" in v else v.split(";")[0].strip()


def param_of(v, name):
    for p in v.split(";")[1:]:
        k, _, val = p.partition("=")
        if k.strip().lower() == name:
            return val.strip()
    return None


def pidf(entity, basic, note=None):
    n = "<note>%s</note>" % escape(note) if note else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<presence xmlns="%s" entity=%s><tuple id="t%s"><status><basic>%s</basic></status>%s</tuple>'
            '</presence>\n' % (PIDF_NS, quoteattr(entity), rnd(4), basic, n)).encode()


def pidf_basic(body):
    """(basic, note) of a PIDF document: "open" if any tuple is open."""
    root = ET.fromstring(body)
    basics = [e.text.strip() for e in root.iter("{%s}basic" % PIDF_NS) if e.text]
    notes = [e.text.strip() for e in root.iter("{%s}note" % PIDF_NS) if e.text]
    basic = "open" if "open" in basics else ("closed" if basics else None)
    return basic, (notes[0] if notes else None)


class UA:
    def __init__(self, user, domain, password, host, port, expires):
        self.user, self.domain, self.password = user, domain, password
        self.aor = "sip:%s@%s" % (user, domain)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setblocking(False)
        ip, lport = self.sock.getsockname()[:2]
        self.local = "%s:%d" % (ip, lport)
        self.contact = "<sip:%s@%s;transport=tcp>" % (user, self.local)
        self.buf = b""
        self.expires = expires
        self.reg = None          # the REGISTER request state (same Call-ID throughout)
        self.pub = None          # the PUBLISH request state (same Call-ID throughout)
        self.etag = None         # entity tag of our publication
        self.pending = {}        # call-id -> request state awaiting a final answer
        self.subs = {}           # call-id -> subscribed URI
        self.nsent = 0
        self.reg_start = 0.0
        self.registered = False
        self.quitting = False
        self.quit_deadline = 0.0

    # ---- wire ----
    def write(self, data):
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def digest(self, chal, method, uri):
        alg = chal.get("algorithm", "MD5")
        h = hashlib.sha256 if alg.upper() == "SHA-256" else hashlib.md5
        H = lambda s: h(s.encode()).hexdigest()  # noqa: E731
        ha1 = H("%s:%s:%s" % (self.user, chal["realm"], self.password))
        ha2 = H("%s:%s" % (method, uri))
        nc, cnonce = "00000001", rnd(8)
        hdr = 'Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=%s' % (
            self.user, chal["realm"], chal["nonce"], uri, alg)
        if "qop" in chal and "auth" in [q.strip() for q in chal["qop"].split(",")]:
            resp = H("%s:%s:%s:%s:auth:%s" % (ha1, chal["nonce"], nc, cnonce, ha2))
            hdr += ', qop=auth, nc=%s, cnonce="%s"' % (nc, cnonce)
        else:
            resp = H("%s:%s:%s" % (ha1, chal["nonce"], ha2))
        if "opaque" in chal:
            hdr += ', opaque="%s"' % chal["opaque"]
        return hdr + ', response="%s"' % resp

    def new_req(self, kind, method, ruri, to, extra=(), body=b"", ctype=None, **more):
        st = {"kind": kind, "method": method, "ruri": ruri, "to": to, "callid": rnd(12), "tag": rnd(4),
              "cseq": 0, "extra": list(extra), "body": body, "ctype": ctype, "auth": None}
        st.update(more)
        return st

    def send_req(self, st, auth=None):
        """(Re)send a request: a new CSeq, credentials when answering a challenge."""
        st["cseq"] += 1
        st["auth"] = auth
        self.pending[st["callid"]] = st
        lines = ["%s %s SIP/2.0" % (st["method"], st["ruri"]),
                 "Via: SIP/2.0/TCP %s;branch=z9hG4bK%s;rport" % (self.local, rnd(8)),
                 "Max-Forwards: 70",
                 "From: <%s>;tag=%s" % (self.aor, st["tag"]),
                 "To: <%s>" % st["to"],
                 "Call-ID: %s" % st["callid"],
                 "CSeq: %d %s" % (st["cseq"], st["method"])]
        lines += st["extra"]
        if auth:
            lines.append(auth)
        if st["ctype"]:
            lines.append("Content-Type: " + st["ctype"])
        lines.append("Content-Length: %d" % len(st["body"]))
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode() + st["body"])

    def register(self, expires):
        if not self.reg:
            self.reg = self.new_req("register", "REGISTER", "sip:" + self.domain, self.aor)
        self.reg["expires"] = expires
        self.reg["extra"] = ["Contact: " + self.contact, "Expires: %d" % expires]
        self.send_req(self.reg)

    def publish(self, basic, note=None):
        """basic None: remove the publication (Expires: 0)."""
        if not self.pub:
            self.pub = self.new_req("publish", "PUBLISH", self.aor, self.aor)
        extra = ["Event: presence", "Expires: %d" % (0 if basic is None else self.expires)]
        if self.etag:
            extra.append("SIP-If-Match: " + self.etag)
        self.pub.update(extra=extra, basic=basic, body=pidf(self.aor, basic, note) if basic else b"",
                        ctype="application/pidf+xml" if basic else None)
        self.send_req(self.pub)

    def subscribe(self, to):
        st = self.new_req("subscribe", "SUBSCRIBE", to, to,
                          ["Contact: " + self.contact, "Event: presence", "Accept: application/pidf+xml",
                           "Expires: %d" % self.expires])
        self.subs[st["callid"]] = to
        self.send_req(st)

    # ---- parsing ----
    def messages(self):
        while True:
            # keepalives between messages (RFC 5626 4.4.1)
            while self.buf[:1] in (b"\r", b"\n") and self.buf:
                if self.buf.startswith(b"\r\n\r\n"):
                    self.write(b"\r\n")
                    self.buf = self.buf[4:]
                elif self.buf.startswith(b"\r\n") and len(self.buf) >= 3 and self.buf[2:3] != b"\r":
                    self.buf = self.buf[2:]
                elif len(self.buf) < 4 and b"\r\n\r\n".startswith(self.buf):
                    return
                else:
                    self.buf = self.buf[1:]
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("utf-8", "replace")
            lines = head.split("\r\n")
            hdrs = []
            for ln in lines[1:]:
                if ln[:1] in (" ", "\t") and hdrs:
                    hdrs[-1] = (hdrs[-1][0], hdrs[-1][1] + " " + ln.strip())
                    continue
                name, _, val = ln.partition(":")
                hdrs.append((name.strip().lower(), val.strip()))
            compact = {"i": "call-id", "f": "from", "t": "to", "v": "via", "l": "content-length",
                       "c": "content-type", "m": "contact", "o": "event"}
            hdrs = [(compact.get(n, n), v) for n, v in hdrs]
            clen = int(next((v for n, v in hdrs if n == "content-length"), "0"))
            if len(self.buf) < end + 4 + clen:
                return
            body = self.buf[end + 4:end + 4 + clen]
            self.buf = self.buf[end + 4 + clen:]
            yield lines[0], hdrs, body

    def on_response(self, code, reason, get):
        if code < 200:
            return
        st = self.pending.get(get("call-id"))
        if not st or (get("cseq").split() or [""])[-1] != st["method"]:
            return
        if code in (401, 407) and not st["auth"]:
            chal = parse_params(get("www-authenticate" if code == 401 else "proxy-authenticate")[7:])
            hname = "Authorization" if code == 401 else "Proxy-Authorization"
            self.send_req(st, "%s: %s" % (hname, self.digest(chal, st["method"], st["ruri"])))
            return
        del self.pending[st["callid"]]
        kind = st["kind"]
        if kind == "register":
            if st["expires"] == 0:
                out({"ev": "bye", "status": code})
                self.quitting = "done"
            elif 200 <= code < 300:
                if not self.registered:
                    out({"ev": "online", "ms": int((time.monotonic() - self.reg_start) * 1000)})
                self.registered = True
            else:
                out({"ev": "auth_failed" if code in (401, 403, 407) else "error", "status": code,
                     "reason": reason})
        elif kind == "message":
            self.nsent += 1
            out({"ev": "sent", "n": self.nsent, "status": code, "reason": reason})
        elif kind == "publish":
            if 200 <= code < 300:
                self.etag = (get("sip-etag") or None) if st["basic"] else None
            elif code == 412:
                self.etag = None
            out({"ev": "published", "basic": st["basic"], "status": code, "reason": reason,
                 "expires": int(get("expires") or 0)})
            if self.quitting is True and st["basic"] is None:
                self.register(0)
        elif kind == "subscribe":
            out({"ev": "subscribed", "to": st["to"], "status": code, "reason": reason})

    def answer(self, hdrs, code, reason):
        get = lambda n: next((v for k, v in hdrs if k == n), "")  # noqa: E731
        resp = ["SIP/2.0 %d %s" % (code, reason)]
        resp += ["Via: " + v for n, v in hdrs if n == "via"]
        to = get("to")
        if ";tag=" not in to:
            to += ";tag=" + rnd(4)
        resp += ["From: " + get("from"), "To: " + to, "Call-ID: " + get("call-id"), "CSeq: " + get("cseq"),
                 "Content-Length: 0"]
        self.write(("\r\n".join(resp) + "\r\n\r\n").encode())

    def handle(self, start, hdrs, body):
        get = lambda n: next((v for k, v in hdrs if k == n), "")  # noqa: E731
        if start.startswith("SIP/2.0 "):
            self.on_response(int(start[8:11]), start[12:], get)
            return
        method = start.split(" ", 1)[0]
        if method == "ACK":
            return
        if method == "NOTIFY":
            to = self.subs.get(get("call-id"))
            if not to:
                self.answer(hdrs, 481, "Subscription Does Not Exist")
                return
            self.answer(hdrs, 200, "OK")
            basic = note = None
            if body and "pidf" in get("content-type").lower():
                basic, note = pidf_basic(body)
            out({"ev": "presence", "from": to, "basic": basic, "note": note,
                 "state": get("subscription-state"), "ctype": get("content-type")})
            return
        if method in ("MESSAGE", "OPTIONS"):
            self.answer(hdrs, 200, "OK")
        else:
            self.answer(hdrs, 405, "Method Not Allowed")
        if method == "MESSAGE":
            out({"ev": "message", "from": uri_of(get("from")), "body": body.decode("utf-8", "replace"),
                 "ctype": get("content-type")})

    def command(self, cmd):
        if cmd["cmd"] == "send":
            st = self.new_req("message", "MESSAGE", cmd["to"], cmd["to"], body=cmd["body"].encode(),
                              ctype="text/plain;charset=UTF-8")
            self.send_req(st)
        elif cmd["cmd"] == "publish":
            self.publish(cmd["basic"], cmd.get("note"))
        elif cmd["cmd"] == "subscribe":
            self.subscribe(cmd["to"])
        elif cmd["cmd"] == "quit":
            self.quitting = True
            self.quit_deadline = time.monotonic() + 3
            if self.etag:
                self.publish(None)
            else:
                self.register(0)

    def run(self):
        self.reg_start = time.monotonic()
        self.register(self.expires)
        stdin_open = True
        while True:
            rl = [self.sock] + ([sys.stdin] if stdin_open else [])
            r, _, _ = select.select(rl, [], [], 0.5)
            if self.sock in r:
                data = self.sock.recv(65536)
                if not data:
                    out({"ev": "closed"})
                    return
                self.buf += data
                for start, hdrs, body in list(self.messages()):
                    self.handle(start, hdrs, body)
                if self.quitting == "done":
                    return
            if stdin_open and sys.stdin in r:
                line = sys.stdin.readline()
                if not line:
                    stdin_open = False
                    continue
                self.command(json.loads(line))
            if self.quitting is True and time.monotonic() > self.quit_deadline:
                out({"ev": "bye", "status": 0})
                return


def main():
    user, domain, password, host, port = sys.argv[1:6]
    expires = 300
    if "--expires" in sys.argv:
        expires = int(sys.argv[sys.argv.index("--expires") + 1])
    UA(user, domain, password, host, int(port), expires).run()


if __name__ == "__main__":
    main()
