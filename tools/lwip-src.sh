#!/bin/sh
# tools/lwip-src.sh DIR - fetch Debian's lwIP source package into DIR (cached).
#
# imfuse compiles lwIP itself with its own dataplane/lwip/lwipopts.h: the
# prebuilt liblwip is configured for another kind of program (NO_SYS=0,
# TCP_MSS 512 under glibc, predictable ISNs, no window scaling).  The source
# comes from Debian with apt, through a private apt configuration whose
# deb-src entries are derived from the machine's own apt sources (nothing in
# /etc/apt changes).  apt checks the package against the signed archive.
# Debian's patches are applied (dpkg-source -x).  Nothing is committed.
#
# Quiet and quick when DIR/.imfuse-ok exists.  Exit 0, or 1 with the reason.
set -eu
dir=${1:?usage: lwip-src.sh DIR}
[ -f "$dir/.imfuse-ok" ] && exit 0
say() { echo "lwip-src.sh: $*" >&2; }
for t in apt-get dpkg-source; do
    command -v "$t" >/dev/null || { say "$t is missing (apt-get install dpkg-dev)"; exit 1; }
done
mkdir -p "$(dirname "$dir")"
work="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir").fetch"
rm -rf "$work"
mkdir -p "$work/etc/sources.list.d" "$work/lists/partial" "$work/cache/archives/partial" "$work/pkg"
: > "$work/etc/sources.list"
# deb-src twins of the machine's sources: one-line and deb822 formats.
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f"
done > "$work/etc/sources.list.d/imfuse-src.list"
for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         /(^|\n)Types:[^\n]*(^|[ \t])deb([ \t]|\n|$)/ {
             sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, ""); print }' "$f"
done > "$work/etc/sources.list.d/imfuse-src.sources"
if [ ! -s "$work/etc/sources.list.d/imfuse-src.list" ] && [ ! -s "$work/etc/sources.list.d/imfuse-src.sources" ]; then
    say "no deb entry found in /etc/apt/sources.list{,.d} to derive a deb-src entry from"
    exit 1
fi
apt_private() {
    apt-get -q -o Dir::Etc::SourceList="$work/etc/sources.list" \
        -o Dir::Etc::SourceParts="$work/etc/sources.list.d" \
        -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" \
        -o APT::Sandbox::User=root "$@"
}
if ! apt_private update >"$work/apt.log" 2>&1; then
    say "apt-get update of the deb-src entries failed:"; tail -n 5 "$work/apt.log" >&2; exit 1
fi
if ! (cd "$work/pkg" && apt_private source --download-only lwip) >>"$work/apt.log" 2>&1; then
    say "apt-get source lwip failed:"; tail -n 5 "$work/apt.log" >&2; exit 1
fi
dsc=$(ls "$work"/pkg/lwip_*.dsc 2>/dev/null | head -n 1)
[ -n "$dsc" ] || { say "no lwip .dsc downloaded"; exit 1; }
ver=$(sed -n 's/^Version: //p' "$dsc")
case "$ver" in
2.1.*) ;;
*) say "lwip $ver: dataplane/lwip/lwipopts.h is written for lwIP 2.1"; exit 1 ;;
esac
if ! dpkg-source --no-check -x "$dsc" "$work/src" >>"$work/apt.log" 2>&1; then
    say "dpkg-source -x failed:"; tail -n 5 "$work/apt.log" >&2; exit 1
fi
[ -f "$work/src/src/core/tcp.c" ] || { say "unexpected layout: no src/core/tcp.c"; exit 1; }
rm -rf "$dir"
mv "$work/src" "$dir"
echo "$ver" > "$dir/.imfuse-ok"
rm -rf "$work"
echo "lwip-src.sh: lwIP $ver source in $dir" >&2
