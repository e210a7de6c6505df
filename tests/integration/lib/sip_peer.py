"""A real SIP user agent for the integration tests (bob), written from RFC 3261,
RFC 3428 and RFC 7616; no SIP library.

    python3 sip_peer.py USER DOMAIN PASSWORD HOST PORT [--expires N]

It connects over TCP, REGISTERs (answering a 401 with digest credentials:
MD5 or SHA-256, qop=auth), and with Contact = its own local TCP address so the
proxy reaches it over the same connection.  Prints one JSON line per event:

    {"ev":"online","ms":N}                       registered (N = ms the REGISTER took)
    {"ev":"auth_failed","status":N}              REGISTER refused
    {"ev":"message","from":URI,"body":TEXT,"ctype":CT}   an incoming MESSAGE (answered 200 OK)
    {"ev":"sent","n":N,"status":CODE,"reason":R} final answer to our MESSAGE
    {"ev":"bye"}                                 un-REGISTERed (after "quit")

Commands on stdin, one JSON object per line:
    {"cmd":"send","to":URI,"body":TEXT}          MESSAGE (a 407 is answered once)
    {"cmd":"quit"}                               REGISTER Expires: 0, then exit
"""
import hashlib
import json
import os
import select
import socket
import sys
import time


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


class UA:
    def __init__(self, user, domain, password, host, port, expires):
        self.user, self.domain, self.password = user, domain, password
        self.aor = "sip:%s@%s" % (user, domain)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setblocking(False)
        ip, lport = self.sock.getsockname()[:2]
        self.local = "%s:%d" % (ip, lport)
        self.buf = b""
        self.expires = expires
        self.reg_callid = rnd(12)
        self.reg_tag = rnd(4)
        self.cseq = 0
        self.pending = {}        # call-id -> dict(kind, n, ...)
        self.nsent = 0
        self.reg_start = 0.0
        self.registered = False
        self.quitting = False

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

    def request(self, method, ruri, to, callid, ftag, cseq, extra=(), body=b"", ctype=None):
        lines = ["%s %s SIP/2.0" % (method, ruri),
                 "Via: SIP/2.0/TCP %s;branch=z9hG4bK%s;rport" % (self.local, rnd(8)),
                 "Max-Forwards: 70",
                 "From: <%s>;tag=%s" % (self.aor, ftag),
                 "To: <%s>" % to,
                 "Call-ID: %s" % callid,
                 "CSeq: %d %s" % (cseq, method)]
        lines += list(extra)
        if ctype:
            lines.append("Content-Type: " + ctype)
        lines.append("Content-Length: %d" % len(body))
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def register(self, expires, auth=None):
        self.cseq += 1
        extra = ["Contact: <sip:%s@%s;transport=tcp>" % (self.user, self.local), "Expires: %d" % expires]
        if auth:
            extra.append(auth)
        self.pending[self.reg_callid] = {"kind": "register", "expires": expires,
                                         "authed": auth is not None}
        self.request("REGISTER", "sip:" + self.domain, self.aor, self.reg_callid, self.reg_tag,
                     self.cseq, extra)

    def send_message(self, to, body, auth=None, state=None):
        st = state or {"kind": "message", "to": to, "body": body, "callid": rnd(12), "tag": rnd(4),
                       "cseq": 0, "authed": False}
        st["cseq"] += 1
        extra = [auth] if auth else []
        st["authed"] = auth is not None
        self.pending[st["callid"]] = st
        self.request("MESSAGE", to, to, st["callid"], st["tag"], st["cseq"], extra,
                     body.encode(), "text/plain;charset=UTF-8")

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
                       "c": "content-type", "m": "contact"}
            hdrs = [(compact.get(n, n), v) for n, v in hdrs]
            clen = int(next((v for n, v in hdrs if n == "content-length"), "0"))
            if len(self.buf) < end + 4 + clen:
                return
            body = self.buf[end + 4:end + 4 + clen]
            self.buf = self.buf[end + 4 + clen:]
            yield lines[0], hdrs, body

    def handle(self, start, hdrs, body):
        get = lambda n: next((v for k, v in hdrs if k == n), "")  # noqa: E731
        if start.startswith("SIP/2.0 "):
            code = int(start[8:11])
            reason = start[12:]
            if code < 200:
                return
            st = self.pending.get(get("call-id"))
            if not st:
                return
            if st["kind"] == "register":
                if code in (401, 407) and not st["authed"]:
                    chal = parse_params(get("www-authenticate" if code == 401 else "proxy-authenticate")[7:])
                    hname = "Authorization" if code == 401 else "Proxy-Authorization"
                    self.register(st["expires"], "%s: %s" % (hname, self.digest(
                        chal, "REGISTER", "sip:" + self.domain)))
                    return
                del self.pending[get("call-id")]
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
            else:
                if code in (401, 407) and not st["authed"]:
                    chal = parse_params(get("www-authenticate" if code == 401 else "proxy-authenticate")[7:])
                    hname = "Authorization" if code == 401 else "Proxy-Authorization"
                    self.send_message(st["to"], st["body"], "%s: %s" % (hname, self.digest(
                        chal, "MESSAGE", st["to"])), st)
                    return
                del self.pending[get("call-id")]
                self.nsent += 1
                out({"ev": "sent", "n": self.nsent, "status": code, "reason": reason})
            return
        method = start.split(" ", 1)[0]
        if method == "ACK":
            return
        code, reason = (200, "OK") if method in ("MESSAGE", "OPTIONS") else (405, "Method Not Allowed")
        resp = ["SIP/2.0 %d %s" % (code, reason)]
        resp += ["Via: " + v for n, v in hdrs if n == "via"]
        to = get("to")
        if ";tag=" not in to:
            to += ";tag=" + rnd(4)
        resp += ["From: " + get("from"), "To: " + to, "Call-ID: " + get("call-id"), "CSeq: " + get("cseq"),
                 "Content-Length: 0"]
        self.write(("\r\n".join(resp) + "\r\n\r\n").encode())
        if method == "MESSAGE":
            frm = get("from")
            uri = frm[frm.find("<") + 1:frm.find(">")] if "<" in frm else frm.split(";")[0]
            out({"ev": "message", "from": uri, "body": body.decode("utf-8", "replace"),
                 "ctype": get("content-type")})

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
                cmd = json.loads(line)
                if cmd["cmd"] == "send":
                    self.send_message(cmd["to"], cmd["body"])
                elif cmd["cmd"] == "quit":
                    self.quitting = True
                    self.register(0)
                    self.quit_deadline = time.monotonic() + 3
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
