#!/usr/bin/env bash
# make install honours DESTDIR and PREFIX: every file lands where the
# prefix says, the unit's ExecStart follows SBINDIR, the config goes to
# /etc/imfuse and an operator's edited config survives a second install;
# with PREFIX=/usr the tree is exactly what the Debian package ships (less
# the files debhelper adds).  The installed binaries run.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 2
fails=0
ok()   { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
work=$(mktemp -d /tmp/imfuse-install.XXXXXX)
trap 'rm -rf "$work"' EXIT

make -s install DESTDIR="$work/local" >"$work/make.log" 2>&1 || { cat "$work/make.log"; exit 1; }
want="etc/imfuse/imfused.conf
usr/local/bin/imfuse
usr/local/lib/systemd/system/imfused.service
usr/local/lib/sysusers.d/imfuse.conf
usr/local/sbin/imfusectl
usr/local/sbin/imfused
usr/local/share/man/man1/imfuse.1
usr/local/share/man/man5/imfused.conf.5
usr/local/share/man/man8/imfusectl.8
usr/local/share/man/man8/imfused.8"
got=$(cd "$work/local" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
[ "$got" = "$want" ] && ok "PREFIX=/usr/local (the default): the expected files" ||
    fail "PREFIX=/usr/local files: $(diff <(echo "$want") <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
grep -qx 'ExecStart=/usr/local/sbin/imfused --config /etc/imfuse/imfused.conf' \
    "$work/local/usr/local/lib/systemd/system/imfused.service" &&
    ok "the unit starts /usr/local/sbin/imfused" || fail "the unit's ExecStart follows SBINDIR"
"$work/local/usr/local/sbin/imfused" --version | grep -q '^imfused ' && ok "the installed imfused runs" ||
    fail "the installed imfused runs"
[ "$(stat -c %a "$work/local/usr/local/sbin/imfused")" = 755 ] &&
[ "$(stat -c %a "$work/local/etc/imfuse/imfused.conf")" = 644 ] && ok "modes 0755 / 0644" || fail "modes"

echo "# edited by the operator" >>"$work/local/etc/imfuse/imfused.conf"
make -s install DESTDIR="$work/local" >"$work/make.log" 2>&1 || { cat "$work/make.log"; exit 1; }
grep -q 'edited by the operator' "$work/local/etc/imfuse/imfused.conf" &&
    ok "a second make install keeps the edited config" || fail "a second make install overwrote the config"

make -s install DESTDIR="$work/usr" PREFIX=/usr >"$work/make.log" 2>&1 || { cat "$work/make.log"; exit 1; }
got=$(cd "$work/usr" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
deb=$(./tools/deb.sh 2>"$work/deb.log" | tail -n 1)
[ -f "$deb" ] || { cat "$work/deb.log"; fail "make deb"; exit 1; }
# what the package ships, less debhelper's own files and with man pages unzipped
shipped=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./||; s|\.gz$||' |
          grep -v '^usr/share/doc/' | LC_ALL=C sort)
[ "$got" = "$shipped" ] && ok "PREFIX=/usr installs exactly what the .deb ships ($(wc -l <<<"$got") files)" ||
    fail "PREFIX=/usr vs .deb: $(diff <(echo "$shipped") <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
grep -q '^ExecStart=/usr/sbin/imfused ' "$work/usr/lib/systemd/system/imfused.service" &&
    ok "PREFIX=/usr: the unit in /lib/systemd/system starts /usr/sbin/imfused" || fail "PREFIX=/usr unit"

echo "$fails checks failed"
[ $fails -eq 0 ]
