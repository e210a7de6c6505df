#!/bin/sh
# tools/deb.sh - make deb: the Debian package of this tree, built with
# dpkg-buildpackage -b from a copy of the tree in build/deb/src (so that
# nothing is written beside the checkout), into build/deb/.  Reused while
# the files it is built from (tracked and new, not ignored) are unchanged.
# Prints the path of the .deb on its last line.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
out=build/deb
mkdir -p "$out"
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
deb=$out/imfuse_${version}_${arch}.deb

# What the package is built from: the sources, the Makefile and its
# module.mk files, debian/, the unit, config and sysusers entry
# (images/imfuse*), the man pages and the MIBs.  Tests, documents and the
# image recipe stay out, so editing them does not rebuild the package.
files() {
    if git rev-parse --git-dir >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard
    else
        find . -path ./build -prune -o -path ./.git -prune -o -type f -printf '%P\0'
    fi | grep -zE '^(Makefile|tests/module\.mk|images/imfuse|(controlplane|dataplane|protocols|tools|debian|docs/man|mibs)/)' |
        xargs -0 -r sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh
}
stamp=$(files | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)
if [ -f "$deb" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$deb"
    exit 0
fi

src=$out/src/imfuse-$version
rm -rf "$out/src" "$out"/*.deb "$out"/*.buildinfo "$out"/*.changes "$out/stamp"
mkdir -p "$src"
files | tar -C "$top" --null -T - -cf - | tar -C "$src" -xf -
echo "make deb: building $deb (log $out/build.log)" >&2
if ! (cd "$src" && dpkg-buildpackage -b -us -uc -j"$(nproc)") >"$out/build.log" 2>&1; then
    tail -30 "$out/build.log" >&2
    exit 1
fi
mv "$out/src/"*.deb "$out/src/"*.buildinfo "$out/src/"*.changes "$out/"
rm -rf "$out/src"
echo "$stamp" >"$out/stamp"
echo "$deb"
