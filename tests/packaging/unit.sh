#!/usr/bin/env bash
# The unit's hardening, offline: systemd-analyze security scores
# images/imfused.service at most 3.0 ("OK") for the kernel backend, and
# the unit keeps the settings the design asks for.  (The unit runs for
# real under systemd in the appliance image: images/smoke.sh.)
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 2
command -v systemd-analyze >/dev/null || { echo "skipped: systemd-analyze missing (make deps)" >&2; exit 77; }
fails=0
ok()   { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
unit=images/imfused.service
out=$(systemd-analyze security --offline=yes --threshold=30 "$unit" 2>&1)
rc=$?
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
[ $rc = 0 ] && [ -n "$score" ] && ok "systemd-analyze security --offline: $score (at most 3.0)" ||
    { fail "systemd-analyze security --offline: ${score:-no score} (rc $rc)"; grep '✗' <<<"$out"; }
for want in Type=notify NotifyAccess=main WatchdogSec= User=imfuse StateDirectory=imfuse \
            ConfigurationDirectory=imfuse RuntimeDirectory=imfuse NoNewPrivileges=yes ProtectSystem=strict \
            ProtectHome=yes PrivateTmp=yes 'CapabilityBoundingSet=$' SystemCallFilter=@system-service; do
    grep -q "^$want" "$unit" && ok "$unit has ${want%\$}" || fail "$unit lacks ${want%\$}"
done
echo "$fails checks failed"
[ $fails -eq 0 ]
