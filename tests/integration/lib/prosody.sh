# tests/integration/lib/prosody.sh - run a throw-away prosody 0.12 for tests.
# Source it from bash:   . tests/integration/lib/prosody.sh
#
#   prosody_start WORKDIR C2S_PORT VHOST...   config + one self-signed cert per vhost
#                                             (CN and SAN = the vhost), start in the
#                                             foreground in the background, listening on
#                                             the server address (testenv.sh); wait until
#                                             C2S_PORT accepts there (10 s deadline)
#   prosody_adduser WORKDIR USER VHOST PASSWORD
#   prosody_set_roster WORKDIR USER VHOST 'LUA TABLE BODY'
#   prosody_stop WORKDIR                      TERM by PID, KILL after 5 s
#   prosody_cafile WORKDIR                    prints the path of a PEM bundle of all vhost certs
#
# Knobs (environment, read by prosody_start):
#   PROSODY_DISABLE_PLAIN=1   disable_sasl_mechanisms = { "PLAIN" } (SCRAM only)
#   PROSODY_SMACKS=0          do not load mod_smacks (XEP-0198; built into 0.12, on by default here)
#   PROSODY_TLS_PORT=N        also listen for direct TLS (c2s_direct_tls_ports)
#   PROSODY_REQUIRE_TLS=0     c2s_require_encryption = false (default true)
#   PROSODY_LOG_LEVEL=L       lowest level logged to WORKDIR/prosody.log (default debug: every
#                             stanza; the bench uses warn, debug logging costs more than routing)
#
# Everything lives in WORKDIR (config, certs, data, log, pid).  Run as root:
# the config says run_as_root = true.  Functions return non-zero with a
# message on stderr on failure; they never exit the caller.

. "$(dirname "${BASH_SOURCE[0]}")/testenv.sh"

prosody_log() { echo "prosody.sh: $*" >&2; }

# Prosody's datamanager file-name encoding: every non-alphanumeric byte -> %xx.
prosody__enc() {
    local s=$1 out= c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        if [[ $c == [a-zA-Z0-9] ]]; then out+=$c; else out+=$(printf '%%%02x' "'$c"); fi
    done
    printf '%s' "$out"
}

prosody_cafile() { testenv_cafile "$1"; }

prosody_start() {
    local w=$1 port=$2; shift 2
    local hosts=("$@") h mods
    [ ${#hosts[@]} -gt 0 ] || { prosody_log "prosody_start: no vhost given"; return 2; }
    command -v prosody >/dev/null || { prosody_log "prosody is not installed"; return 2; }
    mkdir -p "$w/certs" "$w/data" || return 1
    w=$(cd "$w" && pwd)
    for h in "${hosts[@]}"; do
        testenv_cert "$w/certs" "$h" || return 1
    done
    mods='"roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "message"; "iq"'
    [ "${PROSODY_SMACKS:-1}" = 1 ] && mods+='; "smacks"'
    {
        echo 'run_as_root = true'
        echo "pidfile = \"$w/prosody.pid\""
        echo "data_path = \"$w/data\""
        echo "log = { ${PROSODY_LOG_LEVEL:-debug} = \"$w/prosody.log\" }"
        echo "interfaces = { \"$IMFUSE_TEST_SERVER_ADDR\" }"
        echo "c2s_ports = { $port }"
        if [ -n "${PROSODY_TLS_PORT:-}" ]; then
            echo "c2s_direct_tls_ports = { $PROSODY_TLS_PORT }"
        else
            echo 'c2s_direct_tls_ports = { }'
        fi
        echo 's2s_ports = { }'
        echo 'modules_disabled = { "s2s" }'
        echo 'authentication = "internal_hashed"'
        if [ "${PROSODY_REQUIRE_TLS:-1}" = 1 ]; then
            echo 'c2s_require_encryption = true'
        else
            echo 'c2s_require_encryption = false'
        fi
        echo "certificates = \"$w/certs\""
        echo "modules_enabled = { $mods }"
        [ "${PROSODY_DISABLE_PLAIN:-0}" = 1 ] && echo 'disable_sasl_mechanisms = { "PLAIN" }'
        for h in "${hosts[@]}"; do
            echo "VirtualHost \"$h\""
            echo "    ssl = { key = \"$w/certs/$h.key\"; certificate = \"$w/certs/$h.crt\" }"
        done
    } > "$w/prosody.cfg.lua"
    prosody --config "$w/prosody.cfg.lua" -F > "$w/prosody.out" 2>&1 &
    echo $! > "$w/prosody.bgpid"
    testenv_wait_port prosody "$port" $! 10 "$w/prosody.out" "$w/prosody.log" \
        || { prosody_stop "$w"; return 1; }
}

prosody_stop() {
    proc_stop_pidfile "$1/prosody.bgpid"
}

# Works with the server running or stopped (prosodyctl writes the account file).
prosody_adduser() {
    local w=$1 user=$2 host=$3 pw=$4
    prosodyctl --config "$w/prosody.cfg.lua" register "$user" "$host" "$pw" </dev/null >/dev/null 2>&1 \
        || { prosody_log "prosodyctl register $user@$host failed"; return 1; }
}

# Write USER@VHOST's roster file directly.  Call it before prosody_start or
# while USER is offline: prosody reads a roster from disk at login and keeps
# it in memory while the user has a session (a running server would overwrite
# the file on the next roster change).  BODY is the inside of the Lua table,
# e.g. '["bob@b.test"] = { subscription = "both"; name = "Bob"; groups = { Friends = true } };'
prosody_set_roster() {
    local w=$1 user=$2 host=$3 body=$4 dir
    dir="$w/data/$(prosody__enc "$host")/roster"
    mkdir -p "$dir" || return 1
    printf 'return {\n  [false] = { version = 1; pending = {} };\n  %s\n};\n' "$body" \
        > "$dir/$(prosody__enc "$user").dat"
}
