"""A small, independent client of the imfuse client protocol v1
(docs/CLIENT-PROTOCOL.md), used by the integration tests.

Run with /usr/bin/python3 (Debian's python3-msgpack)."""
import socket
import struct
import time

import msgpack

from testenv import APPLIANCE_ADDR


class ProtocolError(Exception):
    pass


class Client:
    def __init__(self, host=APPLIANCE_ADDR, port=7700, timeout=15.0, tls_ctx=None, tls_name=None, src=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(src, 0) if src else None)
        if tls_ctx is not None:
            self.sock = tls_ctx.wrap_socket(self.sock, server_hostname=tls_name)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.buf = b""
        self.next_id = 0
        self.events = []          # events received while waiting for replies
        self.closed = False

    # ---- framing ----
    def send_frame(self, obj):
        body = msgpack.packb(obj, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def send_raw(self, data):
        self.sock.sendall(data)

    @staticmethod
    def frame(obj):
        """The bytes of one frame (for pipelining several in one write)."""
        body = msgpack.packb(obj, use_bin_type=True)
        return struct.pack(">I", len(body)) + body

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    obj = msgpack.unpackb(body, raw=False)
                    if not isinstance(obj, dict):
                        raise ProtocolError("frame is not a map: %r" % (obj,))
                    return obj
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame within the timeout")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame within the timeout")
            if not data:
                self.closed = True
                return None
            self.buf += data

    # ---- requests ----
    def request(self, op, **fields):
        self.next_id += 1
        rid = self.next_id
        fields["op"] = op
        fields["id"] = rid
        self.send_frame(fields)
        while True:
            m = self.recv_frame()
            if m is None:
                raise ProtocolError("connection closed while waiting for the reply to %s" % op)
            if "id" in m and m["op"] in ("ok", "error"):
                if m["id"] != rid:
                    raise ProtocolError("reply for id %r while waiting for %r" % (m["id"], rid))
                return m
            self.events.append(m)

    def pipeline(self, reqs, timeout=60.0):
        """Send requests [(op, {fields})] in one write; their replies, in the
        order of the requests (events are kept)."""
        ids, data = [], b""
        for op, f in reqs:
            self.next_id += 1
            ids.append(self.next_id)
            data += Client.frame(dict(f, op=op, id=self.next_id))
        self.send_raw(data)
        got = {}
        while len(got) < len(ids):
            m = self.recv_frame(timeout)
            if m is None:
                raise ProtocolError("connection closed after %d of %d replies" % (len(got), len(ids)))
            if "id" in m and m["op"] in ("ok", "error"):
                got[m["id"]] = m
            else:
                self.events.append(m)
        return [got[i] for i in ids]

    def call(self, op, **fields):
        """request() that raises unless the reply is ok."""
        r = self.request(op, **fields)
        if r["op"] != "ok":
            raise ProtocolError("%s failed: %s: %s" % (op, r.get("code"), r.get("message")))
        return r

    def login(self, user, password, device="test"):
        return self.request("login", user=user, password=password, device=device)

    # ---- events ----
    def next_event(self, timeout=None):
        if self.events:
            return self.events.pop(0)
        m = self.recv_frame(timeout)
        if m is not None and "id" in m:
            raise ProtocolError("unexpected reply %r" % (m,))
        return m

    def wait_event(self, pred, timeout=30.0, what="event"):
        """Return the first event satisfying pred; other events are kept in order."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            for i, e in enumerate(self.events):
                if pred(e):
                    del self.events[i]
                    return e
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out waiting for %s; seen: %r" % (what, skipped[-10:]))
                try:
                    m = self.recv_frame(left)
                except TimeoutError:
                    raise TimeoutError("timed out waiting for %s; seen: %r" % (what, skipped[-10:]))
                if m is None:
                    raise ProtocolError("connection closed while waiting for %s" % what)
                if pred(m):
                    return m
                skipped.append(m)
        finally:
            self.events.extend(skipped)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
