# tests/integration/lib/kamailio.sh - run a throw-away kamailio 5.6 SIP registrar/proxy for tests.
# Source it from bash:   . tests/integration/lib/kamailio.sh
#
#   kamailio_adduser WORKDIR USER DOMAIN PASSWORD   add a subscriber (call before kamailio_start:
#                                                   db_text caches its tables)
#   kamailio_start WORKDIR PORT DOMAIN              write kamailio.cfg + db_text dir, start it in the
#                                                   foreground in the background, listening on
#                                                   PORT (UDP and TCP) of the server address
#                                                   (testenv.sh); wait until TCP accepts (10 s)
#   kamailio_stop WORKDIR                           TERM by PID, KILL after 5 s
#   kamailio_ctl WORKDIR CMD...                     kamcmd over the ctl socket (e.g. ul.dump)
#
# Knobs (environment, read by kamailio_start):
#   KAMAILIO_ALG=SHA-256    digest algorithm of the challenges (default MD5)
#
# The server: REGISTER with digest auth (401), save("location"), then m_dump()
# of the messages msilo stored while the user was offline; MESSAGE from a
# client challenged with 407 (the authenticated user must be the From user),
# relayed with lookup("location") + t_relay() to the contact (over the UA's own
# TCP connection), or stored by msilo with a 202 when the recipient is not
# registered.  msilo's own deliveries come back over UDP from the server's
# own socket and are not challenged.  No DNS at all (dns=no, rev_dns=no,
# msilo's outbound_proxy is the IP).  Everything lives in WORKDIR.
#
# Presence (SIP/SIMPLE, RFC 3856 / RFC 3903): the presence and presence_xml
# modules (Debian package kamailio-presence-modules) serve SUBSCRIBE and
# PUBLISH for Event: presence, both challenged with 407 like MESSAGE; a user
# may PUBLISH only his own presence.  presence_xml's force_active makes every
# watcher authorised, so no XCAP server or pres-rules are needed.  NOTIFYs go
# to the SUBSCRIBE's Contact over the watcher's own TCP connection.  The
# presence tables live in the same db_text directory (schemas copied from
# /usr/share/kamailio/dbtext/kamailio).

. "$(dirname "${BASH_SOURCE[0]}")/testenv.sh"

kamailio_log() { echo "kamailio.sh: $*" >&2; }

kamailio__moddir() {
    local d
    for d in /usr/lib/x86_64-linux-gnu/kamailio/modules /usr/lib/*/kamailio/modules /usr/lib/kamailio/modules; do
        [ -f "$d/tm.so" ] && { printf '%s\n' "$d"; return 0; }
    done
    return 1
}

kamailio__dbinit() {
    local db=$1
    mkdir -p "$db" || return 1
    [ -f "$db/version" ] && return 0
    # Table versions as kamailio 5.6 checks them at start-up (its own dbtext/kamailio/version).
    { printf 'id(int,auto) table_name(string) table_version(int) \n'
      printf '%s\n' 1:subscriber:7 2:silo:8 3:presentity:5 4:active_watchers:12 5:watchers:3 6:xcap:4
    } > "$db/version"
    printf 'id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) \n' \
        > "$db/subscriber"
    printf '%s\n' 'id(int,auto) src_addr(string) dst_addr(string) username(string) domain(string) inc_time(int) exp_time(int) snd_time(int) ctype(string) body(string,null) extra_hdrs(string,null) callid(string,null) status(int,null) ' \
        > "$db/silo"
    local t schemas=/usr/share/kamailio/dbtext/kamailio
    for t in presentity active_watchers watchers xcap; do
        if [ ! -f "$schemas/$t" ]; then
            kamailio_log "no db_text schema $schemas/$t (apt-get install kamailio)"; return 1
        fi
        # Every column may be null: db_text reads an empty value back as null
        # (presentity.sender is written empty), has no column defaults, and
        # kamailio 5.6 leaves active_watchers.flags out of its inserts (SQL
        # would fill in 0).  Strict columns make the next start fail.
        head -n 1 "$schemas/$t" | sed -E 's/\((int|string)\)/(\1,null)/g' > "$db/$t" || return 1
    done
}

kamailio_adduser() {
    local w=$1 user=$2 dom=$3 pw=$4 n ha1 ha1b
    kamailio__dbinit "$w/db" || return 1
    n=$(($(wc -l < "$w/db/subscriber")))
    ha1=$(printf '%s' "$user:$dom:$pw" | md5sum | cut -d' ' -f1)
    ha1b=$(printf '%s' "$user@$dom:$dom:$pw" | md5sum | cut -d' ' -f1)
    # db_text escapes ':' in values as '\:'.
    printf '%s:%s:%s:%s:%s:%s\n' "$n" "$user" "$dom" "${pw//:/\\:}" "$ha1" "$ha1b" >> "$w/db/subscriber"
}

kamailio_start() {
    local w=$1 port=$2 dom=$3 mods
    command -v kamailio >/dev/null || { kamailio_log "kamailio is not installed"; return 2; }
    mods=$(kamailio__moddir) || { kamailio_log "kamailio modules not found"; return 2; }
    mkdir -p "$w/run" || return 1
    w=$(cd "$w" && pwd)
    kamailio__dbinit "$w/db" || return 1
    local ip=$IMFUSE_TEST_SERVER_ADDR
    cat > "$w/kamailio.cfg" <<EOF
#!KAMAILIO
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=2
tcp_children=2
dns=no
rev_dns=no
use_dns_cache=off
auto_aliases=no
listen=udp:$ip:$port
listen=tcp:$ip:$port
alias="$dom"
mpath="$mods/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "db_text.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "msilo.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
modparam("ctl", "binrpc", "unix:$w/run/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("auth", "algorithm", "${KAMAILIO_ALG:-MD5}")
modparam("auth_db", "db_url", "text://$w/db")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("msilo", "db_url", "text://$w/db")
modparam("msilo", "add_date", 0)
modparam("msilo", "outbound_proxy", "sip:$ip:$port;transport=udp")
modparam("presence", "db_url", "text://$w/db")
modparam("presence_xml", "db_url", "text://$w/db")
modparam("presence_xml", "force_active", 1)

request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (!sanity_check()) { exit; }
    if (is_method("REGISTER")) {
        if (!auth_check("\$fd", "subscriber", "1")) { auth_challenge("\$fd", "1"); exit; }
        consume_credentials();
        if (!save("location")) { sl_reply_error(); exit; }
        m_dump();
        exit;
    }
    if (is_method("MESSAGE")) {
        # msilo's deliveries come from our own UDP socket; clients use TCP.
        if (!(proto == UDP && src_ip == $ip && src_port == $port)) {
            if (!auth_check("\$fd", "subscriber", "1")) { auth_challenge("\$fd", "1"); exit; }
            consume_credentials();
        }
        if (!lookup("location")) {
            if (!m_store("\$ru")) { sl_send_reply("500", "Offline Store Failed"); exit; }
            sl_send_reply("202", "Accepted For Later Delivery");
            exit;
        }
        if (!t_relay()) { sl_reply_error(); }
        exit;
    }
    if (is_method("PUBLISH|SUBSCRIBE")) {
        if (!auth_check("\$fd", "subscriber", "1")) { auth_challenge("\$fd", "1"); exit; }
        consume_credentials();
        if (is_method("PUBLISH") && \$tU != \$fU) { sl_send_reply("403", "Publish Only Your Own Presence"); exit; }
        if (!t_newtran()) { sl_reply_error(); exit; }
        if (is_method("PUBLISH")) { handle_publish(); } else { handle_subscribe(); }
        t_release();
        exit;
    }
    if (is_method("OPTIONS") && uri == myself) { sl_send_reply("200", "OK"); exit; }
    if (is_method("ACK")) { exit; }
    sl_send_reply("405", "Method Not Allowed");
    exit;
}
EOF
    kamailio -f "$w/kamailio.cfg" -DD -E -Y "$w/run" -P "$w/run/kamailio.pid" -m 64 -M 8 \
        > "$w/kamailio.log" 2>&1 &
    echo $! > "$w/kamailio.bgpid"
    testenv_wait_port kamailio "$port" $! 10 "$w/kamailio.log" || { kamailio_stop "$w"; return 1; }
}

kamailio_stop() {
    proc_stop_pidfile "$1/kamailio.bgpid"
}

kamailio_ctl() {
    local w=$1; shift
    kamcmd -s "unix:$w/run/kamailio_ctl" "$@"
}
