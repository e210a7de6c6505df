#!/bin/sh
# images/base-cached.sh - print the path of the appliance's base root (a tar
# made by images/base.sh), building it first when the cache has none.
# Cached in $IMFUSE_IMAGE_CACHE (default /var/tmp/imfuse-image), keyed on
# images/packages, images/base.sh and the week (the mirror moves); one build
# at a time (flock), the loser of a race waits and reuses the winner's.
# Both the image (images/build.sh) and the package's install test
# (tests/packaging/deb.sh: a clean Debian 12 root with apt) start from it,
# so a cold machine runs mmdebstrap once.  Needs root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${IMFUSE_IMAGE_CACHE:-/var/tmp/imfuse-image}
mkdir -p "$cache"
key=$(cat "$here/packages" "$here/base.sh" | sha256sum | cut -c1-16)-$(date +%G-W%V)
base=$cache/base-$key.tar
exec 9>"$cache/lock"
flock 9
if [ ! -s "$base" ]; then
    echo "images/base-cached.sh: building the base root $base (cold cache: minutes; log $cache/base.log)" >&2
    t0=$(date +%s)
    # mmdebstrap mounts /proc, /sys and /dev in the root it builds: in a
    # mount namespace of its own they reach no other tree (a bind mount of
    # /dev/shm elsewhere made its clean-up fail here once).
    if ! unshare -m --propagation private "$here/base.sh" "$base.new" >"$cache/base.log" 2>&1; then
        grep -v '^\./' "$cache/base.log" | tail -n 20 >&2
        rm -f "$base.new"
        exit 1
    fi
    mv "$base.new" "$base"
    # keep the two newest (another checkout may be on other packages)
    ls -t "$cache"/base-*.tar | tail -n +3 | xargs -r rm -f
    echo "images/base-cached.sh: base root built in $(( $(date +%s) - t0 )) s" >&2
fi
echo "$base"
