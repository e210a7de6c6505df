# tests/integration/lib/ejabberd.sh - run a throw-away ejabberd (Debian 23.01) for tests.
# Source it from bash:   . tests/integration/lib/ejabberd.sh
#
#   ejabberd_start WORKDIR C2S_PORT VHOST...  config + one self-signed cert per vhost
#                                             (CN and SAN = the vhost), STARTTLS required
#                                             on C2S_PORT of the server address (testenv.sh),
#                                             start in the foreground
#                                             in the background as user ejabberd, wait until
#                                             the port accepts and the node answers
#                                             ejabberdctl (30 s deadline)
#   ejabberd_adduser WORKDIR USER VHOST PASSWORD          (server running)
#   ejabberd_add_rosteritem WORKDIR USER VHOST CONTACT_JID NAME GROUPS SUBSCRIPTION
#                                             put CONTACT_JID on USER@VHOST's roster (server
#                                             running; pushed to USER's online sessions);
#                                             GROUPS "" or "g1;g2"; SUBSCRIPTION
#                                             none|to|from|both
#   ejabberd_ctl WORKDIR ARGS...              any other ejabberdctl command against it
#   ejabberd_stop WORKDIR                     TERM the node, KILL after 5 s every process
#                                             started for it (found by PID through the
#                                             process tree); non-zero if one survives
#   ejabberd_cafile WORKDIR                   prints the path of a PEM bundle of all vhost certs
#
# Knobs (environment, read by ejabberd_start):
#   EJABBERD_DIST_PORT=N      Erlang distribution port of the node (default C2S_PORT + 1000);
#                             no epmd is started (ERL_DIST_PORT mode)
#   EJABBERD_PASSWORD_FORMAT  auth_password_format (default scram, as Debian ships it: the
#                             server then offers PLAIN, SCRAM-SHA-1 and SCRAM-SHA-1-PLUS)
#   EJABBERD_SMACKS=0         do not load mod_stream_mgmt (XEP-0198; loaded by default)
#   EJABBERD_LOGLEVEL=debug   log every XML element sent and received (default info)
#
# Everything lives in WORKDIR (config, certs, Mnesia spool, logs, pid, Erlang
# cookie on the command line): it is given to user ejabberd, which runs the
# node and every ejabberdctl call (through setpriv), so every parent directory
# of WORKDIR must be searchable by that user.  Run as root, in a private
# network namespace (unshare -n): the node listens on the server address's
# C2S_PORT and on its distribution port, and a contact on a domain it does not
# host makes it try server-to-server (a DNS lookup, which fails at once there).
# Each ejabberdctl call starts an Erlang node (~0.7 s) that reaches the server's
# node as ejabberd@localhost over loopback: that control channel never leaves
# the server's host, so it stays on 127.0.0.1 whatever the server address is.
# Calls may run in parallel.
# Functions return non-zero with a message on stderr on failure; they never
# exit the caller.

. "$(dirname "${BASH_SOURCE[0]}")/testenv.sh"

ejabberd_log() { echo "ejabberd.sh: $*" >&2; }

ejabberd_cafile() { testenv_cafile "$1"; }

# Run ejabberdctl against the node of WORKDIR.
ejabberd_ctl() {
    local w=$1; shift
    ( cd "$w" && exec env HOME="$w" setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        ejabberdctl --config-dir "$w/etc" --config "$w/etc/ejabberd.yml" \
        --ctl-config "$w/etc/ejabberdctl.cfg" --logs "$w/logs" --spool "$w/db" "$@" )
}

ejabberd_start() {
    local w=$1 port=$2; shift 2
    local hosts=("$@") h dist cookie
    [ ${#hosts[@]} -gt 0 ] || { ejabberd_log "ejabberd_start: no vhost given"; return 2; }
    command -v ejabberdctl >/dev/null || { ejabberd_log "ejabberd is not installed"; return 2; }
    id ejabberd >/dev/null 2>&1 || { ejabberd_log "no user ejabberd"; return 2; }
    dist=${EJABBERD_DIST_PORT:-$((port + 1000))}
    mkdir -p "$w/certs" "$w/etc" "$w/db" "$w/logs" || return 1
    w=$(cd "$w" && pwd)
    for h in "${hosts[@]}"; do
        testenv_cert "$w/certs" "$h" --pem || return 1
    done
    cookie=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    # ejabberdctl sources this file: node name, distribution port (no epmd),
    # a private cookie (no ~ejabberd/.erlang.cookie needed), pid file.
    {
        echo 'ERLANG_NODE=ejabberd@localhost'
        echo "ERL_DIST_PORT=$dist"
        echo "ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -setcookie $cookie\""
        echo "EJABBERD_PID_PATH=$w/ejabberd.pid"
        echo "CONTRIB_MODULES_PATH=$w/contrib"
        echo "CONTRIB_MODULES_CONF_DIR=$w/etc/modules.d"
        echo 'EJABBERD_BYPASS_WARNINGS=true'
    } > "$w/etc/ejabberdctl.cfg"
    printf '{lookup,["file"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n' > "$w/etc/inetrc"
    {
        echo "loglevel: ${EJABBERD_LOGLEVEL:-info}"
        echo 'log_rotate_count: 0'
        echo 'hosts:'
        for h in "${hosts[@]}"; do echo "  - \"$h\""; done
        echo 'certfiles:'
        for h in "${hosts[@]}"; do echo "  - \"$w/certs/$h.pem\""; done
        echo 'listen:'
        echo '  -'
        echo "    port: $port"
        echo "    ip: \"$IMFUSE_TEST_SERVER_ADDR\""
        echo '    module: ejabberd_c2s'
        echo '    max_stanza_size: 262144'
        echo '    access: c2s'
        echo '    starttls_required: true'
        echo "auth_password_format: ${EJABBERD_PASSWORD_FORMAT:-scram}"
        echo 'disable_sasl_mechanisms: ["digest-md5", "X-OAUTH2"]'
        echo 'acl:'
        echo '  local:'
        echo '    user_regexp: ""'
        echo 'access_rules:'
        echo '  local:'
        echo '    allow: local'
        echo '  c2s:'
        echo '    allow: all'
        echo 'api_permissions:'
        echo '  "console commands":'
        echo '    from:'
        echo '      - ejabberd_ctl'
        echo '    who: all'
        echo '    what: "*"'
        echo 'modules:'
        echo '  mod_roster: {}'
        echo '  mod_disco: {}'
        echo '  mod_ping: {}'
        echo '  mod_caps: {}'
        echo '  mod_offline: {}'
        echo '  mod_carboncopy: {}'
        echo '  mod_admin_extra: {}'
        [ "${EJABBERD_SMACKS:-1}" = 1 ] && echo '  mod_stream_mgmt: {resend_on_timeout: if_offline}'
    } > "$w/etc/ejabberd.yml"
    chown -R ejabberd: "$w" || return 1
    chmod 0700 "$w" || return 1
    setpriv --reuid=ejabberd --regid=ejabberd --init-groups test -w "$w/db" -a -r "$w/etc/ejabberd.yml" \
        || { ejabberd_log "user ejabberd cannot use $w (is every parent directory searchable?)"; return 1; }
    # Run ejabberdctl as user ejabberd with setpriv (no su: su would put the
    # node in a session of its own and not pass our TERM on).  $! is then the
    # ejabberdctl shell; the node (beam.smp) and its helpers (erl_child_setup,
    # which starts eimp, memsup, inet_gethost in sessions of their own) are its
    # descendants: ejabberd_stop finds them through the process tree.
    ( cd "$w" && exec env HOME="$w" setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        ejabberdctl --config-dir "$w/etc" --config "$w/etc/ejabberd.yml" \
        --ctl-config "$w/etc/ejabberdctl.cfg" --logs "$w/logs" --spool "$w/db" foreground ) \
        </dev/null > "$w/ejabberd.out" 2>&1 &
    local pid=$!
    echo "$pid" > "$w/ejabberd.bgpid"
    local deadline=$((SECONDS + 30))
    # The port opens once the listeners are up; "ejabberdctl status" then
    # answers almost at once.  Poll both with a deadline.
    testenv_wait_port ejabberd "$port" "$pid" 30 "$w/ejabberd.out" "$w/logs/error.log" \
        || { ejabberd_stop "$w"; return 1; }
    until ejabberd_ctl "$w" status >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$pid" 2>/dev/null; then
            ejabberd_log "ejabberd node did not answer ejabberdctl status"
            ejabberd_stop "$w"
            return 1
        fi
        sleep 0.2
    done
    return 0
}

# "PID:STARTTIME" of PID and all its live descendants (STARTTIME guards
# against a reused PID when the list is checked later).
ejabberd__tree() {
    local root=$1 f line pid grown p
    local rest=()
    local -A ppid=() st=() want=()
    for f in /proc/[0-9]*/stat; do
        # "pid (comm) state ppid ... starttime(22)"; comm may hold spaces.
        read -r line 2>/dev/null < "$f" || continue
        pid=${line%% *}
        rest=(${line##*) })
        [ "${rest[0]}" = Z ] && continue
        ppid[$pid]=${rest[1]} st[$pid]=${rest[19]}
    done
    [ -n "${st[$root]:-}" ] || return 0
    want[$root]=1 grown=1
    while [ $grown = 1 ]; do
        grown=0
        for p in "${!ppid[@]}"; do
            if [ -z "${want[$p]:-}" ] && [ -n "${want[${ppid[$p]}]:-}" ]; then want[$p]=1 grown=1; fi
        done
    done
    for p in "${!want[@]}"; do printf '%s:%s\n' "$p" "${st[$p]}"; done
}

# Which of the "PID:STARTTIME" entries are still alive (not zombies).
ejabberd__alive() {
    local e pid line rest
    for e in "$@"; do
        pid=${e%%:*}
        read -r line 2>/dev/null < "/proc/$pid/stat" || continue
        rest=(${line##*) })
        [ "${rest[0]}" != Z ] && [ "${rest[19]}" = "${e#*:}" ] && printf '%s\n' "$e"
    done
}

ejabberd__signal() {
    local sig=$1 e; shift
    for e in "$@"; do kill "-$sig" "${e%%:*}" 2>/dev/null; done
}

# Stop the node of WORKDIR and every process started for it.  No epmd is
# ever started (ERL_DIST_PORT mode), so there is none to stop.
ejabberd_stop() {
    local w=$1 pid i procs left= kids
    [ -f "$w/ejabberd.bgpid" ] || return 0
    pid=$(cat "$w/ejabberd.bgpid")
    procs=($(ejabberd__tree "$pid"))
    if [ ${#procs[@]} -gt 0 ]; then
        # TERM the node (the shell's children): the VM shuts down cleanly, its
        # helpers exit with it and the shell, which waits for it, ends too.
        kids=$(pgrep -P "$pid")
        kill -TERM ${kids:-$pid} 2>/dev/null
        for ((i = 0; i < 50; i++)); do
            left=$(ejabberd__alive "${procs[@]}")
            [ -z "$left" ] && break
            sleep 0.1
        done
        if [ -n "$left" ]; then
            ejabberd__signal KILL $left
            for ((i = 0; i < 20; i++)); do
                left=$(ejabberd__alive "${procs[@]}")
                [ -z "$left" ] && break
                sleep 0.1
            done
        fi
    fi
    wait "$pid" 2>/dev/null
    rm -f "$w/ejabberd.bgpid"
    if [ -n "$left" ]; then
        ejabberd_log "processes of ejabberd survived KILL: $(echo $left)"
        return 1
    fi
    return 0
}

ejabberd_adduser() {
    local w=$1 user=$2 host=$3 pw=$4 out="$1/ctl.$BASHPID.out"
    ejabberd_ctl "$w" register "$user" "$host" "$pw" </dev/null >"$out" 2>&1 \
        || { ejabberd_log "ejabberdctl register $user@$host failed:"; cat "$out" >&2; return 1; }
}

ejabberd_add_rosteritem() {
    local w=$1 user=$2 host=$3 jid=$4 name=$5 group=$6 sub=$7 out="$1/ctl.$BASHPID.out"
    ejabberd_ctl "$w" add_rosteritem "$user" "$host" "${jid%@*}" "${jid#*@}" "$name" "$group" "$sub" \
        </dev/null >"$out" 2>&1 \
        || { ejabberd_log "ejabberdctl add_rosteritem $user@$host $jid failed:"; cat "$out" >&2; return 1; }
}
