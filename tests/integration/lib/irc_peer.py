"""A real IRC user for the integration tests, on python3-irc (jaraco irc).

    /usr/bin/python3 irc_peer.py NICK HOST PORT

Prints one JSON line per event on stdout: {"ev":"online","nick":N},
{"ev":"message","from":NICK,"body":TEXT}, {"ev":"action","from":NICK,"body":TEXT},
{"ev":"notice","from":NICK,"body":TEXT}, {"ev":"error","text":...},
{"ev":"disconnected"}.  Reads commands on stdin, one JSON object a line:
{"cmd":"send","to":NICK,"body":TEXT} (answers {"ev":"sent","n":N}) and
{"cmd":"quit"}.  The nick must be free: a nick in use is an error, not
an alternate.
"""
import json
import queue
import sys
import threading

import irc.client


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def nick_of(source):
    """The nick of an event's source (a NickMask, or a plain str in old python3-irc)."""
    if not source:
        return ""
    return getattr(source, "nick", None) or irc.client.NickMask(source).nick


def main():
    nick, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cmds = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            if line.strip():
                cmds.put(json.loads(line))
        cmds.put({"cmd": "quit"})

    threading.Thread(target=read_stdin, daemon=True).start()

    reactor = getattr(irc.client, "Reactor", None) or irc.client.IRC   # IRC before irc 11
    reactor = reactor()
    # Decode as UTF-8 and show anything else visibly (the tests compare text).
    irc.client.ServerConnection.buffer_class.errors = "replace"
    state = {"sent": 0, "done": False}

    def on_welcome(c, e):
        out({"ev": "online", "nick": c.get_nickname()})

    def on_privmsg(c, e):
        out({"ev": "message", "from": nick_of(e.source), "body": e.arguments[0]})

    def on_action(c, e):
        out({"ev": "action", "from": nick_of(e.source), "body": e.arguments[0] if e.arguments else ""})

    def on_notice(c, e):
        out({"ev": "notice", "from": nick_of(e.source), "body": e.arguments[0]})

    def on_nick_in_use(c, e):
        out({"ev": "error", "text": "nick in use"})
        state["done"] = True

    def on_disconnect(c, e):
        out({"ev": "disconnected"})
        state["done"] = True

    try:
        conn = reactor.server().connect(host, port, nick, username=nick, ircname=nick)
    except irc.client.ServerConnectionError as ex:
        out({"ev": "error", "text": str(ex)})
        return 1
    conn.add_global_handler("welcome", on_welcome)
    conn.add_global_handler("privmsg", on_privmsg)
    conn.add_global_handler("action", on_action)
    conn.add_global_handler("privnotice", on_notice)
    conn.add_global_handler("nicknameinuse", on_nick_in_use)
    conn.add_global_handler("disconnect", on_disconnect)

    while not state["done"]:
        reactor.process_once(0.05)
        while True:
            try:
                cmd = cmds.get_nowait()
            except queue.Empty:
                break
            if cmd["cmd"] == "send":
                conn.privmsg(cmd["to"], cmd["body"])
                state["sent"] += 1
                out({"ev": "sent", "n": state["sent"]})
            elif cmd["cmd"] == "quit":
                if conn.is_connected():
                    conn.quit("bye")
                    conn.close()
                state["done"] = True
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
