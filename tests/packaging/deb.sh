#!/usr/bin/env bash
# The Debian package (make deb): lintian finds no error or warning, and in
# a fresh Debian 12 root (mmdebstrap --variant=apt, nothing else) it
# installs with "apt install ./imfuse_*.deb" (its dependencies come from
# the archive), creates the imfuse user, enables the unit, runs - imfused
# --version, and imfused as that user serving imfusectl on the packaged
# config's control socket - and purges without a trace.
# Needs root, mmdebstrap and the Debian archive; the fresh root is cached
# for a week in /var/tmp/imfuse-fresh-root.  Bounded by timeouts.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 2
[ "$(id -u)" = 0 ] || { echo "skipped: needs root (chroot, mounts)" >&2; exit 77; }
for t in mmdebstrap lintian dpkg-buildpackage; do
    command -v $t >/dev/null || { echo "skipped: $t missing (make deps)" >&2; exit 77; }
done
fails=0
ok()   { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }

deb=$(timeout 900 ./tools/deb.sh | tail -n 1)
[ -f "$deb" ] || { echo "make deb failed"; exit 1; }
ok "make deb: $deb"
timeout 600 lintian --fail-on error,warning "$deb" >"$top/build/deb/lintian.log" 2>&1
rc=$?
out=$(grep -v '^running with root privileges' "$top/build/deb/lintian.log")
[ "$rc" = 0 ] && ok "lintian: no error, no warning${out:+ ($(echo "$out" | wc -l) notes)}" ||
    fail "lintian (rc $rc): $out"
[ -n "$out" ] && echo "$out" | sed 's/^/    /'

# The fresh root: what "a fresh machine" has.  Cached per week (the
# archive moves) and per recipe (this line).
recipe="mmdebstrap --variant=apt --format=tar bookworm"
cache=/var/tmp/imfuse-fresh-root
key=$(echo "$recipe" | sha256sum | cut -c1-12)-$(date +%G-W%V)
tar=$cache/bookworm-$key.tar
mkdir -p "$cache"
if [ ! -s "$tar" ]; then
    echo "building a fresh bookworm root (cached in $cache)"
    src=()
    [ -f /etc/apt/sources.list.d/debian.sources ] && src=(/etc/apt/sources.list.d/debian.sources)
    if ! timeout 900 $recipe "$tar.new" "${src[@]}" </dev/null >"$cache/mmdebstrap.log" 2>&1; then
        tail -20 "$cache/mmdebstrap.log"; rm -f "$tar.new"; exit 1
    fi
    rm -f "$cache"/bookworm-*.tar
    mv "$tar.new" "$tar"
fi

root=$(mktemp -d /var/tmp/imfuse-fresh-root/root.XXXXXX)
cleanup() { rm -rf "$root"; }
trap cleanup EXIT
tar -C "$root" -xf "$tar"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/"
debname=$(basename "$deb")
version=$(dpkg-deb -f "$deb" Version)

# Everything in the root runs in a private mount namespace: its mounts end
# with it.  In the root, the script prints "ok - ..." / "FAIL - ..." lines.
cat >"$root/tmp/check.sh" <<CHECK
set -u
ok()   { echo "ok   - \$*"; }
fail() { echo "FAIL - \$*"; }
export DEBIAN_FRONTEND=noninteractive
cd /tmp
apt-get update -q >/tmp/apt.log 2>&1 || { tail -5 /tmp/apt.log; fail "apt-get update"; exit 1; }
if apt-get install -y -q ./$debname >>/tmp/apt.log 2>&1; then ok "apt install ./$debname"
else tail -15 /tmp/apt.log; fail "apt install ./$debname"; exit 1; fi
v=\$(imfused --version)
[ "\$v" = "imfused $version" ] && ok "imfused --version: \$v" || fail "imfused --version: \$v"
imfusectl --help >/dev/null && imfuse --help >/dev/null && ok "imfusectl and imfuse run" || fail "imfusectl/imfuse --help"
getent passwd imfuse | grep -q ':/var/lib/imfuse:/usr/sbin/nologin\$' && ok "the imfuse system user: \$(getent passwd imfuse)" ||
    fail "the imfuse user: \$(getent passwd imfuse)"
[ -L /etc/systemd/system/multi-user.target.wants/imfused.service ] && ok "imfused.service is enabled" ||
    fail "imfused.service enabled"
grep -q '^control = /run/imfuse/imfused.sock' /etc/imfuse/imfused.conf && ok "the default config is in /etc/imfuse" ||
    fail "/etc/imfuse/imfused.conf"
# what systemd's StateDirectory= and RuntimeDirectory= would make
install -d -m 0700 -o imfuse -g imfuse /var/lib/imfuse /run/imfuse
setpriv --reuid=imfuse --regid=imfuse --init-groups --inh-caps=-all \
    imfused --config /etc/imfuse/imfused.conf --listen "" >/tmp/imfused.log 2>&1 &
pid=\$!
for i in \$(seq 300); do [ -S /run/imfuse/imfused.sock ] && break; sleep 0.1; done
s=\$(timeout 20 imfusectl stats 2>&1)
echo "\$s" | grep -q '^clients_accepted ' && ok "imfused serves imfusectl stats on /run/imfuse/imfused.sock" ||
    { fail "imfusectl stats: \$s"; cat /tmp/imfused.log; }
[ "\$(stat -c '%U %a' /var/lib/imfuse/appliance.key 2>&1)" = "imfuse 600" ] && ok "the key is the imfuse user's, 0600" ||
    fail "appliance.key: \$(stat -c '%U %a' /var/lib/imfuse/appliance.key 2>&1)"
kill -TERM \$pid; wait \$pid; rc=\$?
[ \$rc = 0 ] && ok "SIGTERM: exit 0" || fail "SIGTERM: exit \$rc"
if apt-get purge -y -q imfuse >>/tmp/apt.log 2>&1; then ok "apt purge imfuse"; else tail -15 /tmp/apt.log; fail "apt purge"; fi
left=
for f in /usr/sbin/imfused /usr/sbin/imfusectl /usr/bin/imfuse /lib/systemd/system/imfused.service \
         /etc/imfuse /var/lib/imfuse /run/imfuse /etc/systemd/system/multi-user.target.wants/imfused.service \
         /usr/share/man/man8/imfused.8.gz; do
    [ -e "\$f" ] || [ -L "\$f" ] && left="\$left \$f"
done
[ -z "\$left" ] && ok "purge left nothing behind" || fail "purge left:\$left"
st=\$(dpkg-query -W -f='\${db:Status-Status}' imfuse 2>/dev/null)
[ "\$st" = not-installed ] || [ -z "\$st" ] && ok "dpkg: imfuse not installed" || fail "dpkg status: \$st"
CHECK
out=$(timeout 900 unshare -m --propagation private sh -c '
    mount --bind "$1" "$1" && mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" &&
    mount -t tmpfs tmpfs "$1/run" && exec chroot "$1" /bin/bash /tmp/check.sh' sh "$root" 2>&1)
rc=$?
echo "$out"
[ $rc = 0 ] || fail "the checks in the fresh root ended with rc $rc"
n=$(grep -c '^FAIL' <<<"$out")
fails=$((fails + n))
[ "$(grep -c '^ok' <<<"$out")" -ge 12 ] || fail "every check in the fresh root ran"

echo "$fails checks failed"
[ $fails -eq 0 ]
