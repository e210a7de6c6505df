#!/usr/bin/env bash
# The client protocol checked to the letter of docs/CLIENT-PROTOCOL.md by an
# independent client written from the documentation only
# (tests/integration/client/spec.py), against build/asan/imfused and a real
# prosody, inside a private network namespace.  Needs root (unshare -n).
#
#   bash tests/integration/client/spec.sh        KEEP=1 keeps the work directory
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
. "$root/tests/integration/lib/prosody.sh"
testenv_enter "$0" "$@"
testenv_need prosody
if [ ! -x "$root/build/asan/imfused" ] || [ ! -x "$root/build/asan/imfusectl" ]; then
    (cd "$root" && make asan) || exit 1
fi

C2S=15222
C2S_TLS=15223
W=$(mktemp -d /tmp/imfuse-spec.XXXXXX) || exit 1

cleanup() {
    local pid
    # every child spec.py started is listed in $W/pids; stop those still alive, by PID
    if [ -f "$W/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && proc_stop "$pid"
        done < "$W/pids"
    fi
    [ -n "${spec_pid:-}" ] && proc_stop "$spec_pid"
    prosody_stop "$W/prosody"
    if [ "${KEEP:-0}" = 1 ]; then
        echo "# work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# one vhost, plain c2s (STARTTLS offered, not required, so tls "none" can log in)
# and direct TLS on a second port
PROSODY_REQUIRE_TLS=0 PROSODY_TLS_PORT=$C2S_TLS prosody_start "$W/prosody" "$C2S" a.test || exit 1
for u in alice bob carol dave erin frank yan; do
    prosody_adduser "$W/prosody" "$u" a.test "$u-pw" || exit 1
done
prosody_set_roster "$W/prosody" alice a.test \
    '["bob@a.test"] = { subscription = "both"; name = "Bob"; groups = { Friends = true } };' || exit 1
prosody_set_roster "$W/prosody" bob a.test \
    '["alice@a.test"] = { subscription = "both"; groups = {} }; ["carol@a.test"] = { subscription = "both"; groups = {} };' || exit 1
prosody_set_roster "$W/prosody" carol a.test '["bob@a.test"] = { subscription = "both"; groups = {} };' || exit 1
CA=$(prosody_cafile "$W/prosody") || exit 1

/usr/bin/python3 "$here/spec.py" --work "$W" --root "$root" --c2s "$C2S" --c2s-tls "$C2S_TLS" --ca "$CA" \
    --server-addr "$IMFUSE_TEST_SERVER_ADDR" --appliance-addr "$IMFUSE_TEST_APPLIANCE_ADDR" \
    --server-name "$IMFUSE_TEST_SERVER_NAME" --source-net "$IMFUSE_TEST_SOURCE_NET" \
    --imfused-wrap "$IMFUSE_TEST_APPLIANCE_WRAP" --imfused-args "$IMFUSE_TEST_APPLIANCE_ARGS" &
spec_pid=$!
wait "$spec_pid"
rc=$?
spec_pid=
exit "$rc"
