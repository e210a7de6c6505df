#!/bin/sh
# images/smoke/guest.sh - the appliance smoke test, run inside the guest by
# imfuse-smoke.service (images/smoke.sh boots it).  Checks that imfused came
# up under systemd (Type=notify: active means READY=1 arrived), keeps the
# watchdog fed, runs hardened as the imfuse user, answers imfusectl, that
# the first-boot step created the seeded user, that this user can log in as
# a client, that systemctl reload applies a config change, and that imfused
# stops cleanly.  Every check is printed on the
# console, then the marker "IMFUSE-SMOKE: PASS" (or FAIL), then power off.
set -u
SEED_USER=smoke
SEED_PASSWORD='smoke pass 1'
fails=0
say() { echo "imfuse-smoke: $*"; }
check() {   # DESCRIPTION COMMAND...
    d=$1; shift
    if "$@" >/dev/null 2>&1; then say "ok   - $d"; else say "FAIL - $d"; fails=$((fails + 1)); fi
}
prop() { systemctl show -P "$2" "$1"; }
is() { [ "$1" = "$2" ]; }

# imfused under systemd
check "imfused.service active/running ($(prop imfused ActiveState)/$(prop imfused SubState))" \
    is "$(prop imfused ActiveState)/$(prop imfused SubState)" active/running
check "Type=notify, so active means imfused sent READY=1" is "$(prop imfused Type)" notify
check "its STATUS= line: $(prop imfused StatusText)" \
    sh -c 'systemctl show -P StatusText imfused | grep -q "^serving clients on 127.0.0.1:7700"'
pid=$(prop imfused MainPID)
check "runs as the imfuse user (pid $pid)" is "$(stat -c %U /proc/"$pid")" imfuse
check "with no capabilities" sh -c "grep -q '^CapEff:[[:space:]]*0*\$' /proc/$pid/status"
check "NoNewPrivileges" sh -c "grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status"
check "seccomp filter on" sh -c "grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status"
check "StateDirectory /var/lib/imfuse: imfuse 700" is "$(stat -c '%U %a' /var/lib/imfuse)" "imfuse 700"
check "appliance key: imfuse 600" is "$(stat -c '%U %a' /var/lib/imfuse/appliance.key)" "imfuse 600"
check "control socket /run/imfuse/imfused.sock: imfuse 600" \
    is "$(stat -c '%U %a' /run/imfuse/imfused.sock)" "imfuse 600"
check "systemd-analyze security: exposure at most 3.0" systemd-analyze security --threshold=30 imfused.service
say "$(systemd-analyze security imfused.service 2>/dev/null | tail -n 1)"

# the operator's tool, on the default socket
check "imfusectl stats answers" sh -c 'imfusectl stats | grep -q "^clients_accepted "'

# the first-boot step
check "imfuse-first-user.service ran and succeeded" \
    is "$(prop imfuse-first-user ExecMainStatus)/$(prop imfuse-first-user Result)" 0/success
check "the seed file is gone" test ! -e /etc/imfuse/first-user
check "imfusectl user list shows the seeded user" \
    sh -c "imfusectl user list | awk 'NR > 1 { print \$1 }' | grep -qx $SEED_USER"

# a client login over the client listener, as that user
check "imfuse logs in as $SEED_USER and pings" \
    env IMFUSE_PASSWORD="$SEED_PASSWORD" imfuse -u "$SEED_USER" raw '{"op":"ping"}'
check "a wrong password is refused" sh -c "! IMFUSE_PASSWORD=wrong imfuse -u $SEED_USER raw '{\"op\":\"ping\"}'"

# the watchdog, for real: 3 s, and imfused must still be the same process 8 s later
mkdir -p /run/systemd/system/imfused.service.d
printf '[Service]\nWatchdogSec=3s\n' >/run/systemd/system/imfused.service.d/smoke-watchdog.conf
systemctl daemon-reload
systemctl restart imfused
pid=$(prop imfused MainPID)
wd1=$(prop imfused WatchdogTimestampMonotonic)
sleep 8
check "WatchdogSec=3s: pings keep it alive (same pid $pid, still active)" \
    is "$(prop imfused MainPID)/$(prop imfused ActiveState)" "$pid/active"
check "the watchdog timestamp moved ($wd1 -> $(prop imfused WatchdogTimestampMonotonic))" \
    sh -c "[ \"\$(systemctl show -P WatchdogTimestampMonotonic imfused)\" -gt $wd1 ]"
rm -f /run/systemd/system/imfused.service.d/smoke-watchdog.conf
systemctl daemon-reload

# systemctl reload (ExecReload: imfusectl reload): open registration switched on in
# the config file, applied without a restart, said in the journal
pid=$(prop imfused MainPID)
cp /etc/imfuse/imfused.conf /run/imfused.conf.orig
echo 'open-registration = true' >>/etc/imfuse/imfused.conf
systemctl reload imfused
check "systemctl reload: the same process, still active ($pid)" \
    is "$(prop imfused MainPID)/$(prop imfused ActiveState)" "$pid/active"
sleep 1
check "the journal says what the reload changed" \
    sh -c 'journalctl -b -u imfused -o cat | grep -q "reload: open-registration: false -> true"'
check "a client registers a user now (open registration on)" \
    env IMFUSE_PASSWORD='reg pass' imfuse -u smoke2 register
check "imfusectl config: open-registration = true, from the config file" \
    sh -c 'imfusectl config | grep -q "^open-registration *= true *# /etc/imfuse/imfused.conf line"'
cp /run/imfused.conf.orig /etc/imfuse/imfused.conf
check "imfusectl reload: back off" sh -c 'imfusectl reload | grep -q "open-registration: true -> false"'

# a clean stop
systemctl stop imfused
check "systemctl stop: result success, exit status 0" \
    is "$(prop imfused Result)/$(prop imfused ExecMainStatus)" success/0
check "imfused logged that it stopped" sh -c 'journalctl -b -u imfused -o cat | grep -q "imfused: stopped"'

if [ $fails -ne 0 ]; then
    say "--- journal of imfused and imfuse-first-user"
    journalctl -b -u imfused -u imfuse-first-user -o short-monotonic --no-pager | tail -n 40 |
        sed 's/^/imfuse-smoke: | /'
fi
say "guest uptime $(cut -d' ' -f1 /proc/uptime) s"
if [ $fails -eq 0 ]; then say "IMFUSE-SMOKE: PASS"; else say "IMFUSE-SMOKE: FAIL ($fails checks)"; fi
systemctl poweroff --no-block
