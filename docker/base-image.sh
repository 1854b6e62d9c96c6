#!/usr/bin/env bash
# Print the tag of a minimal Debian base image, making it first if this engine lacks it.
#
# Why: CI machines reach Debian's package mirror but no container registry, so the base image is
# built from Debian's packages (debootstrap --variant=minbase) and imported. The tag carries a
# hash of the suite, the mirror and this script, so a machine reuses its image between runs and
# a change here makes a new one (older vadpipe-base tags are then removed).
#
#   docker/base-image.sh            # -> vadpipe-base:bookworm-<hash>
#   SUITE=trixie docker/base-image.sh
set -euo pipefail
suite=${SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
key=$( { printf '%s\n%s\n' "$suite" "$mirror"; cat "$0"; } | sha256sum | cut -c1-12)
tag=vadpipe-base:$suite-$key

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d /tmp/vadpipe-base.XXXXXX)
log=$root.log
trap 'rm -rf "$root" "$log"' EXIT
echo "base-image.sh: debootstrap $suite from $mirror (about a minute) ..." >&2
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "base-image.sh: debootstrap $suite from $mirror failed (log above)" >&2
    exit 1
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | "$docker" import - "$tag" >/dev/null
for old in $("$docker" image ls --format '{{.Repository}}:{{.Tag}}' vadpipe-base); do
    [ "$old" = "$tag" ] || "$docker" rmi "$old" >/dev/null
done
echo "$tag"
