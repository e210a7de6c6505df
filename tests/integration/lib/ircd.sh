# tests/integration/lib/ircd.sh - throw-away IRC servers for tests.
# Source it from bash:   . tests/integration/lib/ircd.sh
#
#   ngircd_start WORKDIR PORT        ngircd 26 on PORT (no SASL, no MONITOR: the
#                                    ISON path), default flood protection (penalties)
#   ngircd_stop WORKDIR
#   inspircd_start WORKDIR PORT      inspircd 3 on PORT with m_cap, m_monitor
#                                    (MONITOR in ISUPPORT), default fakelag (on), 8 KiB recvq
#   inspircd_stop WORKDIR
# Every server and link listens on the server address (testenv.sh).
#
# Knobs (environment, read by inspircd_start):
#   INSPIRCD_DEBUG=1          log every line in and out (rawio) to WORKDIR/inspircd.log
#   INSPIRCD_LINK_PORT=N      also load m_sasl/m_services_account/m_spanningtree and accept
#                             a services link (atheme) on port N, name services.test,
#                             password "linkpw"
#
# Everything lives in WORKDIR (config, pid, logs).  Servers run in the
# foreground in the background of the caller; their PID is kept in
# WORKDIR/<name>.bgpid and they are stopped by that PID (TERM, KILL after
# 5 s).  Start-up waits until the port accepts (10 s deadline).  Functions
# return non-zero with a message on stderr; they never exit the caller.
# Run inside a private network namespace (unshare -n): the servers are told
# not to resolve names, and nothing can leave the namespace anyway.

. "$(dirname "${BASH_SOURCE[0]}")/testenv.sh"

ircd_log() { echo "ircd.sh: $*" >&2; }

ircd__wait_port() {
    local w=$1 name=$2 port=$3
    testenv_wait_port "$name" "$port" "$(cat "$w/$name.bgpid")" 10 "$w/$name.out" \
        || { ircd__stop "$w" "$name"; return 1; }
}

ircd__stop() {
    proc_stop_pidfile "$1/$2.bgpid"
}

ngircd_start() {
    local w=$1 port=$2
    command -v ngircd >/dev/null || { ircd_log "ngircd is not installed"; return 2; }
    mkdir -p "$w/conf.d" || return 1
    w=$(cd "$w" && pwd)
    : > "$w/ngircd.motd"
    # Comments only on their own lines (ngircd reads "a = b # c" as the value "b # c").
    cat > "$w/ngircd.conf" <<EOF
[Global]
    Name = irc.test
    Info = imfuse test server
    Listen = $IMFUSE_TEST_SERVER_ADDR
    Ports = $port
    MotdFile = $w/ngircd.motd
    PidFile = $w/ngircd.pid
    ServerUID = 65534
    ServerGID = 65534
[Limits]
    MaxConnections = 0
    # the default is 5 per IP address: every test client comes from one address
    MaxConnectionsIP = 0
    MaxNickLength = 30
    PingTimeout = 120
    PongTimeout = 20
[Options]
    DNS = no
    Ident = no
    PAM = no
    IncludeDir = $w/conf.d
EOF
    ngircd -n -f "$w/ngircd.conf" > "$w/ngircd.out" 2>&1 &
    echo $! > "$w/ngircd.bgpid"
    ircd__wait_port "$w" ngircd "$port"
}

ngircd_stop() { ircd__stop "$1" ngircd; }

inspircd_start() {
    local w=$1 port=$2 sasl= logtypes="* -USERINPUT -USEROUTPUT" loglevel=default
    if [ "${INSPIRCD_DEBUG:-0}" = 1 ]; then logtypes="*"; loglevel=rawio; fi
    command -v inspircd >/dev/null || { ircd_log "inspircd is not installed"; return 2; }
    mkdir -p "$w" || return 1
    w=$(cd "$w" && pwd)
    : > "$w/inspircd.motd"
    if [ -n "${INSPIRCD_LINK_PORT:-}" ]; then
        sasl="<module name=\"services_account\">
<module name=\"sasl\">
<module name=\"spanningtree\">
<module name=\"svshold\">
<module name=\"hidechans\">
<bind address=\"$IMFUSE_TEST_SERVER_ADDR\" port=\"$INSPIRCD_LINK_PORT\" type=\"servers\">
<link name=\"services.test\" ipaddr=\"$IMFUSE_TEST_SERVER_ADDR\" port=\"$INSPIRCD_LINK_PORT\"
      allowmask=\"$IMFUSE_TEST_SERVER_ADDR\" sendpass=\"linkpw\" recvpass=\"linkpw\" timeout=\"60\">
<uline server=\"services.test\" silent=\"yes\">
<sasl target=\"services.test\">"
    fi
    # The connect class keeps inspircd's default flood protection: fakelag on,
    # threshold 10, commandrate 1000, an 8 KiB recvq.
    cat > "$w/inspircd.conf" <<EOF
<server name="irc.test" description="imfuse test server" network="Testnet" id="0AA">
<admin name="test" nick="test" email="test@irc.test">
<bind address="$IMFUSE_TEST_SERVER_ADDR" port="$port" type="clients">
<connect name="main" allow="*" timeout="20" pingfreq="120" hardsendq="1048576" softsendq="8192"
         recvq="8192" threshold="10" commandrate="1000" fakelag="yes"
         localmax="1000" globalmax="1000" resolvehostnames="no" useident="no">
<dns server="$IMFUSE_TEST_SERVER_ADDR" timeout="1">
<files motd="$w/inspircd.motd">
<pid file="$w/inspircd.pid">
<log method="file" type="$logtypes" level="$loglevel" target="$w/inspircd.log">
<options prefixquit="Quit: " syntaxhints="no">
<security hideserver="" userstats="Pu" maxtargets="20">
<limits maxnick="30" maxident="10" maxline="512">
<module name="cap">
<module name="ircv3">
<module name="monitor">
<monitor maxentries="30">
$sasl
EOF
    (ulimit -c 0; exec inspircd --config="$w/inspircd.conf" --nofork --runasroot --nopid) \
        > "$w/inspircd.out" 2>&1 &
    echo $! > "$w/inspircd.bgpid"
    ircd__wait_port "$w" inspircd "$port"
}

inspircd_stop() { ircd__stop "$1" inspircd; }

# atheme-services linked to an inspircd started with INSPIRCD_LINK_PORT (SASL
# PLAIN through SaslServ, NickServ for accounts).  Accounts are registered by
# a client with "PRIVMSG NickServ :REGISTER PASSWORD EMAIL" (auth = none).
#   atheme_start WORKDIR LINK_PORT    start, wait until the link is up (15 s deadline)
#   atheme_stop WORKDIR
atheme_start() {
    local w=$1 port=$2 deadline
    command -v atheme-services >/dev/null || { ircd_log "atheme-services is not installed"; return 2; }
    mkdir -p "$w/data" || return 1
    w=$(cd "$w" && pwd)
    cat > "$w/atheme.conf" <<EOC
loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/pbkdf2v2";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/help";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
serverinfo {
    name = "services.test";
    desc = "imfuse test services";
    numeric = "00A";
    recontime = 1;
    netname = "Testnet";
    hidehostsuffix = "users.test";
    adminname = "test";
    adminemail = "admin@services.test";
    registeremail = "noreply@services.test";
    loglevel = { error; info; admin; network; };
    maxlogins = 5;
    maxusers = 5;
    mdlimit = 30;
    emaillimit = 10;
    emailtime = 300;
    auth = none;
    casemapping = rfc1459;
};
uplink "irc.test" {
    host = "$IMFUSE_TEST_SERVER_ADDR";
    password = "linkpw";
    port = $port;
};
nickserv {
    nick = "NickServ";
    user = "NickServ";
    host = "services.test";
    real = "Nickname Services";
    maxnicks = 5;
    expire = 30;
};
saslserv {
    nick = "SaslServ";
    user = "SaslServ";
    host = "services.test";
    real = "SASL Authentication Agent";
};
logfile "$w/atheme.log" { error; info; admin; network; register; };
general {
    flood_msgs = 0;
    flood_time = 10;
    ratelimit_uses = 100;
    ratelimit_period = 1;
    kline_time = 7;
    commit_interval = 5;
    default_clone_allowed = 50;
    default_clone_warn = 40;
    uplink_sendq_limit = 1048576;
    language = "en";
    immune_level = immune;
};
EOC
    atheme-services -n -c "$w/atheme.conf" -D "$w/data" -l "$w/atheme.out.log" -p "$w/atheme.pid" \
        > "$w/atheme.out" 2>&1 &
    echo $! > "$w/atheme.bgpid"
    deadline=$((SECONDS + 15))
    while ! grep -qi "synched\|finished synching\|burst" "$w/atheme.log" "$w/atheme.out.log" 2>/dev/null; do
        if ! kill -0 "$(cat "$w/atheme.bgpid")" 2>/dev/null; then
            ircd_log "atheme exited during start-up:"; tail -n 20 "$w/atheme.out" "$w/atheme.out.log" >&2
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            ircd_log "atheme did not link within 15 s"; tail -n 20 "$w/atheme.out" "$w/atheme.out.log" >&2
            ircd__stop "$w" atheme
            return 1
        fi
        sleep 0.1
    done
}

atheme_stop() { ircd__stop "$1" atheme; }
