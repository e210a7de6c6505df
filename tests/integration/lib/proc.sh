# tests/integration/lib/proc.sh - stop the processes a test started, by PID.
# Sourced by the server libraries (prosody.sh, ircd.sh, kamailio.sh, jabberd2.sh)
# and by test scripts.
#
#   proc_stop PID            TERM, KILL after 5 s; returns 1 if it survived KILL (2 s)
#   proc_stop_pidfile FILE   proc_stop the PID written in FILE, then remove FILE
#                            (kept when the process survived); 0 when FILE is absent

proc_stop() {
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            for ((i = 0; i < 20; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
    fi
    wait "$pid" 2>/dev/null     # reaps it when it is this shell's child
    ! kill -0 "$pid" 2>/dev/null
}

proc_stop_pidfile() {
    local f=$1
    [ -f "$f" ] || return 0
    proc_stop "$(cat "$f")" || return 1
    rm -f "$f"
}
