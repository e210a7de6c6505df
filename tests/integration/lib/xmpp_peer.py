"""A real XMPP user for the integration tests, on slixmpp.

    /usr/bin/python3 xmpp_peer.py JID PASSWORD HOST PORT CAFILE [--echo]

Prints one JSON line per event on stdout: {"ev":"online"}, {"ev":"message",
"from":..., "body":...}.  Reads commands on stdin, one per line, as JSON:
{"cmd":"send","to":JID,"body":TEXT}, {"cmd":"burst","to":JID,"n":N,"prefix":P,
"pad":TEXT} (N chat messages "P000000 TEXT", "P000001 TEXT"...) and
{"cmd":"quit"}; answers {"ev":"sent","n":N} after each send or burst.  With --echo it answers every chat
message with "echo: " and the text (the demo's bob).
"""
import asyncio
import json
import logging
import ssl
import sys

import slixmpp


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cafile, echo=False):
        super().__init__(jid, password)
        self.echo = echo
        self.ca_certs = cafile
        self.sent = 0
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda *_: out({"ev": "auth_failed"}))
        self.register_plugin("xep_0199")

    async def on_start(self, _):
        self.send_presence()
        await self.get_roster()
        out({"ev": "online"})
        if self.echo:
            return
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader()
        self.stdin_pipe = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        # The loop holds tasks only weakly: without this reference the
        # garbage collector may destroy the task while it waits for a line,
        # and the peer silently stops taking commands.
        self.commands_task = asyncio.ensure_future(self.commands(reader))

    async def commands(self, reader):
        while True:
            line = await reader.readline()
            if not line:
                self.disconnect()
                return
            cmd = json.loads(line)
            if cmd["cmd"] == "send":
                self.send_message(mto=cmd["to"], mbody=cmd["body"], mtype="chat")
                self.sent += 1
                out({"ev": "sent", "n": self.sent})
            elif cmd["cmd"] == "burst":
                for i in range(cmd["n"]):
                    self.send_message(mto=cmd["to"], mbody="%s%06d %s" % (cmd["prefix"], i, cmd.get("pad", "")),
                                      mtype="chat")
                    if i % 500 == 499:
                        await asyncio.sleep(0)      # let the transport write
                self.sent += cmd["n"]
                out({"ev": "sent", "n": self.sent})
            elif cmd["cmd"] == "quit":
                self.disconnect()
                return

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            out({"ev": "message", "from": str(msg["from"].bare), "body": msg["body"]})
            if self.echo:
                self.send_message(mto=msg["from"].bare, mbody="echo: " + msg["body"], mtype="chat")


def main():
    jid, password, host, port, cafile = sys.argv[1:6]
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    p = Peer(jid, password, cafile, echo="--echo" in sys.argv[6:])
    p.connect(address=(host, int(port)))
    p.add_event_handler("disconnected", lambda *_: p.loop.stop())
    try:
        p.loop.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
