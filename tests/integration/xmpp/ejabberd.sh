#!/usr/bin/env bash
# tests/integration/xmpp/ejabberd.sh - the XMPP adapter (xmpp_ops, via xmpp_probe)
# against a real ejabberd (Debian bookworm's 23.01), with a real XMPP client
# (slixmpp) on the other side: probe.sh's checks against a second server
# implementation (XMPP_SERVER=ejabberd).  STARTTLS required, SCRAM-SHA-1 with
# PLAIN and SCRAM-SHA-1-PLUS also offered (the adapter must never pick -PLUS,
# checked in ejabberd's log), XEP-0198 (a committed message is not delivered
# again at the next login), a roster change made on the server while online.
#
# Needs root (private network namespace via unshare -n; ejabberd runs as user
# ejabberd), ejabberd, openssl, setpriv, /usr/bin/python3 with slixmpp.  Exits
# 77 with a reason when those are missing.  BUILD and XMPP_PROBE as in probe.sh.
exec env XMPP_SERVER=ejabberd "$(cd "$(dirname "$0")" && pwd)/probe.sh" "$@"
