# tests/integration/lib/jabberd2.sh - run a throw-away jabberd2 (Debian 2.7) for tests.
# Source it from bash:   . tests/integration/lib/jabberd2.sh
#
#   jabberd2_start WORKDIR C2S_PORT VHOST...  config + one self-signed cert per vhost
#                                             (CN and SAN = the vhost), an SQLite
#                                             database, then router, sm and c2s (no
#                                             s2s), each in the foreground in the
#                                             background; waits until c2s accepts on
#                                             C2S_PORT of the server address (testenv.sh)
#                                             and answers a stream
#                                             to every vhost with features, i.e. sm
#                                             has bound them all (30 s deadline)
#   jabberd2_adduser WORKDIR USER VHOST PASSWORD          (running or not)
#   jabberd2_add_rosteritem WORKDIR USER VHOST CONTACT_JID NAME GROUPS SUBSCRIPTION
#                                             put CONTACT_JID on USER@VHOST's roster
#                                             in the database: only while USER has no
#                                             session (sm caches a loaded roster and
#                                             pushes nothing); GROUPS "" or "g1;g2";
#                                             SUBSCRIPTION none|to|from|both
#   jabberd2_stop WORKDIR                     TERM every component by PID, KILL after
#                                             5 s; non-zero if one survives
#   jabberd2_cafile WORKDIR                   prints the path of a PEM bundle of all vhost certs
#
# Knobs (environment, read by jabberd2_start):
#   JABBERD2_ROUTER_PORT=N     the router's component port (default C2S_PORT + 1000),
#                              on the server address, with a random secret
#   JABBERD2_SASL="m1 m2"      SASL mechanisms offered once TLS is up (default
#                              "scram-sha-1 plain", lower case as c2s.xml spells
#                              them; before TLS nothing is offered: STARTTLS is
#                              required)
#   JABBERD2_MSGLOG=1          the router logs every <message/> it routes to
#                              WORKDIR/logs/messages.log
#   JABBERD2_KEEPALIVE=N       c2s sends a whitespace keepalive on a client
#                              connection idle for N s (checked every second;
#                              default 0: none)
#
# Everything lives in WORKDIR (config, certs, database, logs, pid files);
# nothing in /etc or /var is used.  The components run as the calling user
# (root in the tests; jabberd2 does not drop privileges by itself) and talk
# to each other over the router port.  Run it in a private network
# namespace (unshare -n): c2s listens on the server address's C2S_PORT only.
# Needs /usr/bin/python3 (its sqlite3 module writes the database).  Functions return
# non-zero with a message on stderr on failure; they never exit the caller.

. "$(dirname "${BASH_SOURCE[0]}")/testenv.sh"

jabberd2_log() { echo "jabberd2.sh: $*" >&2; }

# Where Debian puts the storage, authreg and sm modules (a multiarch path).
jabberd2__libdir() {
    local d
    for d in ${JABBERD2_LIBDIR:-} /usr/lib/*/jabberd2 /usr/lib/jabberd2; do
        [ -e "$d/storage_sqlite.so" ] && [ -e "$d/authreg_sqlite.so" ] && { printf '%s\n' "$d"; return 0; }
    done
    return 1
}

jabberd2_cafile() { testenv_cafile "$1"; }

# jabberd2__sql WORKDIR SQL [PARAM...]: run one statement (? parameters)
# against WORKDIR's database, creating the database and its tables first.
jabberd2__sql() {
    local w=$1 sql=$2; shift 2
    mkdir -p "$w/db" || return 1
    /usr/bin/python3 - "$w/db/jabberd2.db" "$(jabberd2__schema)" "$sql" "$@" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=10)
with con:
    con.executescript(sys.argv[2])
    if sys.argv[3]:
        con.execute(sys.argv[3], sys.argv[4:])
con.close()
PY
}

# The tables that the sm modules configured below and c2s's authreg use
# (column names as jabberd2's storage_sqlite / authreg_sqlite query them).
jabberd2__schema() {
    cat <<'SQL'
CREATE TABLE IF NOT EXISTS "authreg" (
    "username" TEXT NOT NULL, "realm" TEXT NOT NULL, "password" TEXT);
CREATE TABLE IF NOT EXISTS "active" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "time" INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS "roster-items" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "jid" TEXT NOT NULL, "name" TEXT, "to" BOOLEAN NOT NULL, "from" BOOLEAN NOT NULL,
    "ask" INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS "roster-groups" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "jid" TEXT NOT NULL, "group" TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS "queue" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "xml" TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS "status" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "status" TEXT NOT NULL, "show" TEXT, "last-login" INTEGER DEFAULT 0,
    "last-logout" INTEGER DEFAULT 0, "xml" TEXT);
CREATE TABLE IF NOT EXISTS "privacy-default" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "default" TEXT);
CREATE TABLE IF NOT EXISTS "privacy-items" (
    "collection-owner" TEXT NOT NULL, "object-sequence" INTEGER PRIMARY KEY,
    "list" TEXT NOT NULL, "type" TEXT, "value" TEXT, "deny" BOOLEAN, "order" INTEGER,
    "block" INTEGER);
SQL
}

jabberd2_start() {
    local w=$1 port=$2; shift 2
    local hosts=("$@") h rport secret mech
    [ ${#hosts[@]} -gt 0 ] || { jabberd2_log "jabberd2_start: no vhost given"; return 2; }
    local b
    for b in router sm c2s; do
        command -v "jabberd2-$b" >/dev/null || { jabberd2_log "jabberd2-$b is not installed"; return 2; }
    done
    local lib
    lib=$(jabberd2__libdir) || { jabberd2_log "no jabberd2 SQLite modules found (JABBERD2_LIBDIR)"; return 2; }
    rport=${JABBERD2_ROUTER_PORT:-$((port + 1000))}
    mkdir -p "$w/certs" "$w/db" "$w/logs" || return 1
    w=$(cd "$w" && pwd)
    for h in "${hosts[@]}"; do
        testenv_cert "$w/certs" "$h" --pem || return 1
    done
    jabberd2__sql "$w" "" || { jabberd2_log "cannot create $w/db/jabberd2.db"; return 1; }
    secret=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

    # The components log in to the router as user "jabberd" with this secret.
    printf '<users>\n  <user><name>jabberd</name><secret>%s</secret></user>\n</users>\n' "$secret" \
        > "$w/router-users.xml"
    {
        echo '<router>'
        echo '  <id>router</id>'
        echo "  <pidfile>$w/router.pid</pidfile>"
        echo "  <log type='file'><file>$w/logs/router.log</file></log>"
        echo '  <local>'
        echo "    <ip>$IMFUSE_TEST_SERVER_ADDR</ip>"
        echo "    <port>$rport</port>"
        echo "    <users>$w/router-users.xml</users>"
        echo '  </local>'
        echo '  <check><interval>60</interval><keepalive>0</keepalive></check>'
        echo '  <io><max_fds>256</max_fds><limits><bytes>0</bytes><connects>0</connects></limits>'
        echo '    <access><order>allow,deny</order></access></io>'
        echo '  <aci><acl type="all"><user>jabberd</user></acl></aci>'
        [ "${JABBERD2_MSGLOG:-0}" = 1 ] \
            && echo "  <message_logging><enabled/><file>$w/logs/messages.log</file></message_logging>"
        echo '</router>'
    } > "$w/router.xml"
    # sm: one session manager for every vhost; only the modules a client of
    # these tests needs (roster, presence, delivery, offline storage, ping,
    # disco, privacy lists as the default chains have them).
    {
        echo '<sm>'
        echo '  <id>sm</id>'
        echo "  <pidfile>$w/sm.pid</pidfile>"
        echo "  <router><ip>$IMFUSE_TEST_SERVER_ADDR</ip><port>$rport</port><user>jabberd</user><pass>$secret</pass>"
        echo '    <retry><init>10</init><lost>3</lost><sleep>1</sleep></retry></router>'
        echo "  <log type='file'><file>$w/logs/sm.log</file></log>"
        echo '  <local>'
        for h in "${hosts[@]}"; do echo "    <id>$h</id>"; done
        echo '  </local>'
        echo '  <storage>'
        echo "    <path>$lib</path>"
        echo '    <driver>sqlite</driver>'
        echo "    <sqlite><dbname>$w/db/jabberd2.db</dbname><busy-timeout>5000</busy-timeout></sqlite>"
        echo '  </storage>'
        echo '  <modules>'
        echo "    <path>$lib</path>"
        echo "    <chain id='sess-start'><module>status</module></chain>"
        echo "    <chain id='sess-end'><module>status</module></chain>"
        echo "    <chain id='in-sess'><module>validate</module><module>status</module><module>privacy</module>"
        echo '      <module>roster</module><module>iq-ping</module><module>disco</module>'
        echo '      <module>offline</module><module>presence</module><module>deliver</module></chain>'
        echo "    <chain id='out-sess'></chain>"
        echo "    <chain id='in-router'><module>session</module><module>validate</module>"
        echo '      <module>presence</module><module>privacy</module></chain>'
        echo "    <chain id='out-router'><module>privacy</module></chain>"
        echo "    <chain id='pkt-sm'><module>iq-ping</module><module>disco</module><module>status</module>"
        echo '      <module>presence</module></chain>'
        echo "    <chain id='pkt-user'><module>roster</module><module>presence</module><module>disco</module>"
        echo '      <module>deliver</module><module>offline</module></chain>'
        echo "    <chain id='pkt-router'><module>session</module><module>disco</module></chain>"
        echo "    <chain id='user-load'><module>active</module><module>roster</module><module>privacy</module></chain>"
        echo "    <chain id='user-unload'></chain>"
        echo "    <chain id='user-create'><module>active</module></chain>"
        echo "    <chain id='user-delete'><module>active</module><module>offline</module>"
        echo '      <module>privacy</module><module>roster</module><module>status</module></chain>'
        echo '  </modules>'
        echo '  <discovery><identity><category>server</category><type>im</type>'
        echo '    <name>imfuse test jabberd2</name></identity></discovery>'
        echo '  <user><auto-create/></user>'
        echo '</sm>'
    } > "$w/sm.xml"
    {
        echo '<c2s>'
        echo '  <id>c2s</id>'
        echo "  <pidfile>$w/c2s.pid</pidfile>"
        echo "  <router><ip>$IMFUSE_TEST_SERVER_ADDR</ip><port>$rport</port><user>jabberd</user><pass>$secret</pass>"
        echo '    <retry><init>10</init><lost>3</lost><sleep>1</sleep></retry></router>'
        echo "  <log type='file'><file>$w/logs/c2s.log</file></log>"
        echo '  <local>'
        for h in "${hosts[@]}"; do
            echo "    <id pemfile='$w/certs/$h.pem' require-starttls='yes'>$h</id>"
        done
        echo "    <ip>$IMFUSE_TEST_SERVER_ADDR</ip>"
        echo "    <port>$port</port>"
        echo '  </local>'
        echo '  <io><max_fds>256</max_fds>'
        echo '    <limits><bytes>0</bytes><stanzas>0</stanzas><connects>0</connects>'
        echo '      <stanzasize>262144</stanzasize></limits>'
        echo '    <access><order>allow,deny</order></access>'
        if [ "${JABBERD2_KEEPALIVE:-0}" -gt 0 ]; then
            echo "    <check><interval>1</interval><idle>0</idle><keepalive>$JABBERD2_KEEPALIVE</keepalive></check>"
        else
            echo '    <check><interval>0</interval><idle>0</idle><keepalive>0</keepalive></check>'
        fi
        echo '  </io>'
        echo '  <authreg>'
        echo "    <path>$lib</path>"
        echo '    <module>sqlite</module>'
        echo '    <mechanisms><traditional/><sasl/></mechanisms>'
        echo '    <ssl-mechanisms><traditional/><sasl>'
        for mech in ${JABBERD2_SASL:-scram-sha-1 plain}; do echo "      <$mech/>"; done
        echo '    </sasl></ssl-mechanisms>'
        echo "    <sqlite><dbname>$w/db/jabberd2.db</dbname><busy-timeout>5000</busy-timeout>"
        echo '      <password_type><plaintext/></password_type></sqlite>'
        echo '  </authreg>'
        echo '</c2s>'
    } > "$w/c2s.xml"

    local deadline=$((SECONDS + 30)) comp pid
    for comp in router sm c2s; do
        "jabberd2-$comp" -c "$w/$comp.xml" </dev/null > "$w/logs/$comp.out" 2>&1 &
        echo "$!" > "$w/$comp.bgpid"
        if [ "$comp" = router ]; then
            # sm and c2s retry their router connection, but only a few times.
            jabberd2__wait_port "$w" "$rport" router $deadline || { jabberd2_stop "$w"; return 1; }
        fi
    done
    jabberd2__wait_port "$w" "$port" c2s $deadline || { jabberd2_stop "$w"; return 1; }
    # A login needs sm: until sm has bound a vhost at the router (and c2s has
    # heard of it), c2s answers a stream to it with a host-gone error.
    until jabberd2__streams_ok "$port" "${hosts[@]}" 2>"$w/logs/ready.err"; do
        if [ $SECONDS -ge $deadline ] || ! jabberd2__running "$w"; then
            jabberd2_log "c2s did not offer a stream to every vhost within 30 s:"
            cat "$w/logs/ready.err" >&2
            tail -n 20 "$w/logs/router.log" "$w/logs/sm.log" "$w/logs/sm.out" >&2 2>/dev/null
            jabberd2_stop "$w"
            return 1
        fi
        sleep 0.2
    done
    return 0
}

# True when c2s on the server address's PORT answers a stream header to each
# HOST with stream features (not a stream error).
jabberd2__streams_ok() {
    /usr/bin/python3 - "$IMFUSE_TEST_SERVER_ADDR" "$@" <<'PY'
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
for host in sys.argv[3:]:
    with socket.create_connection((addr, port), timeout=2) as s:
        s.sendall(("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
                   "'http://etherx.jabber.org/streams' to='%s' version='1.0'>" % host).encode())
        buf = b""
        while b"</stream:features>" not in buf and b"stream:error" not in buf:
            d = s.recv(4096)
            if not d:
                break
            buf += d
        if b"</stream:features>" not in buf:
            sys.exit("%s: %s" % (host, buf.decode(errors="replace")[-300:]))
PY
}

# True while every component started for WORKDIR runs.
jabberd2__running() {
    local w=$1 comp
    for comp in router sm c2s; do
        [ -f "$w/$comp.bgpid" ] && kill -0 "$(cat "$w/$comp.bgpid")" 2>/dev/null || return 1
    done
}

jabberd2__wait_port() {
    local w=$1 port=$2 comp=$3 deadline=$4
    testenv_wait_port "jabberd2-$comp" "$port" "$(cat "$w/$comp.bgpid")" $((deadline - SECONDS)) \
        "$w/logs/$comp.out" "$w/logs/$comp.log"
}

# Stop c2s, sm, then the router (each by the PID recorded at its start).
jabberd2_stop() {
    local w=$1 comp left=
    for comp in c2s sm router; do
        proc_stop_pidfile "$w/$comp.bgpid" || left+=" $comp:$(cat "$w/$comp.bgpid")"
    done
    if [ -n "$left" ]; then
        jabberd2_log "jabberd2 components survived KILL:$left"
        return 1
    fi
    return 0
}

jabberd2_adduser() {
    local w=$1 user=$2 host=$3 pw=$4
    jabberd2__sql "$w" 'INSERT INTO "authreg" ("username", "realm", "password") VALUES (?, ?, ?)' \
        "$user" "$host" "$pw" \
        || { jabberd2_log "cannot add $user@$host"; return 1; }
}

jabberd2_add_rosteritem() {
    local w=$1 user=$2 host=$3 jid=$4 name=$5 groups=$6 sub=$7 to=0 from=0 g
    case $sub in
    none) ;; to) to=1 ;; from) from=1 ;; both) to=1 from=1 ;;
    *) jabberd2_log "bad subscription $sub"; return 2 ;;
    esac
    jabberd2__sql "$w" \
        'INSERT INTO "roster-items" ("collection-owner", "jid", "name", "to", "from", "ask") VALUES (?, ?, ?, ?, ?, 0)' \
        "$user@$host" "$jid" "$name" "$to" "$from" \
        || { jabberd2_log "cannot add $jid to $user@$host's roster"; return 1; }
    local gl=()
    IFS=';' read -r -a gl <<<"$groups"
    for g in "${gl[@]}"; do
        [ -n "$g" ] || continue
        jabberd2__sql "$w" 'INSERT INTO "roster-groups" ("collection-owner", "jid", "group") VALUES (?, ?, ?)' \
            "$user@$host" "$jid" "$g" \
            || { jabberd2_log "cannot add $jid to group $g"; return 1; }
    done
}
