"""A real XMPP user (slixmpp) for one task, then it quits: the other side
of the xmpp_probe checks (xmpp/probe.sh, xmpp/jabberd2.sh).

    /usr/bin/python3 xmpp_user.py MODE ADDR PORT CAFILE JID PASSWORD [ARGS]

  recv [ANSWER]        print "GOT <from-bare> <body>" for the first chat
                       message, answer it with ANSWER if given, then quit
  send TO BODY         send presence and one chat message, then quit
  roster CONTACT NAME  add CONTACT (groups G1, G2) to the roster, print
                       "ROSTER-SET <type>", then quit (no presence sent)

Prints "READY" once the session has started and the roster is fetched.
"""
import asyncio
import sys

import slixmpp

mode, addr, port, ca, jid, pw = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
args = sys.argv[7:]


class User(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(jid, pw)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)

    async def on_start(self, event):
        if mode != "roster":
            self.send_presence()
        await self.get_roster()
        print("READY", flush=True)
        if mode == "send":
            self.send_message(mto=args[0], mbody=args[1], mtype="chat")
            await asyncio.sleep(1)
            self.disconnect()
        elif mode == "roster":
            iq = await self.update_roster(args[0], name=args[1], groups=["G1", "G2"])
            print("ROSTER-SET %s" % iq["type"], flush=True)
            self.disconnect()

    def on_message(self, msg):
        if mode == "recv" and msg["type"] in ("chat", "normal"):
            print("GOT %s %s" % (msg["from"].bare, msg["body"]), flush=True)
            if args:
                self.send_message(mto=msg["from"], mbody=args[0], mtype="chat")
            self.disconnect()


u = User()
u.ca_certs = ca
u.connect(address=(addr, port))
u.process(forever=False)
