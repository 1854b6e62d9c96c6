#!/usr/bin/env bash
# `make docker-test`: build the image on a local Debian base and run it as a user would
# (tests/test_docker_image.py). Needs root, or a running engine the caller may use.
#
# Starts a Docker engine if none answers (and stops it again at the end), makes or reuses the
# Debian base image (docker/base-image.sh), builds docker/Dockerfile with BuildKit and the host's
# network, runs the tests against the image, then removes the image tag and any container of this
# run. Kept between runs on the same machine: the base image and BuildKit's cache (pip's wheels
# and the torch layer), trimmed to $VADPIPE_DOCKER_KEEP of least recently used cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# Debian's docker.io client has BuildKit built in (newer clients need the buildx plugin for it)
export DOCKER=${DOCKER:-/usr/bin/docker} DOCKER_BUILDKIT=1
keep=${VADPIPE_DOCKER_KEEP:-30GB}
tag=vadpipe-test:$$
label=vadpipe-test-$$
tmp=$(mktemp -d /tmp/vadpipe-docker-test.XXXXXX)
started=""

say() { printf 'docker-test: %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    if "$DOCKER" info >/dev/null 2>&1; then
        local ids
        ids=$("$DOCKER" ps -aq --filter "label=$label")
        if [ -n "$ids" ]; then "$DOCKER" rm -f $ids >/dev/null || true; fi
        "$DOCKER" rmi "$tag" >/dev/null 2>&1 || true
        "$DOCKER" builder prune -f --keep-storage "$keep" >/dev/null 2>&1 || true
    fi
    if [ -n "$started" ]; then
        say "stopping the engine it started (pid $started)"
        kill "$started" 2>/dev/null || true
        wait "$started" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

# overlay2 where the kernel has overlayfs; vfs (every layer and container a full copy of the
# 6.7 GB image, minutes each) only as the fallback
start_engine() {
    say "starting dockerd (storage driver $1)"
    dockerd --storage-driver="$1" >"$tmp/dockerd.log" 2>&1 &
    started=$!
    for _ in $(seq 60); do
        "$DOCKER" info >/dev/null 2>&1 && return 0
        kill -0 "$started" 2>/dev/null || break
        sleep 1
    done
    tail -20 "$tmp/dockerd.log" >&2
    kill "$started" 2>/dev/null || true
    wait "$started" 2>/dev/null || true
    started=""
    return 1
}
if ! "$DOCKER" info >/dev/null 2>&1; then
    start_engine overlay2 || start_engine vfs || { say "could not start dockerd (log above)"; exit 1; }
fi

t0=$SECONDS
base=$(docker/base-image.sh)
t1=$SECONDS
say "base image $base ($((t1 - t0)) s)"

# pip inside the build trusts what the host's pip trusts (a TLS-intercepting proxy's CA, say)
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
secret=()
if [ -s "$cert" ]; then secret=(--secret "id=pip_cert,src=$cert"); fi
"$DOCKER" build --network host -f docker/Dockerfile --build-arg "BASE_IMAGE=$base" "${secret[@]}" \
    --progress plain -t "$tag" . >"$tmp/build.log" 2>&1 || { tail -40 "$tmp/build.log" >&2; say "build failed"; exit 1; }
t2=$SECONDS
size=$("$DOCKER" image inspect -f '{{.Size}}' "$tag")
say "built $tag: $((size / 1000000)) MB, $((t2 - t1)) s"

VADPIPE_DOCKER_IMAGE=$tag VADPIPE_DOCKER_LABEL=$label \
    "$PY" -m pytest -q -s -p no:cacheprovider tests/test_docker_image.py
say "tests $((SECONDS - t2)) s; total $((SECONDS - t0)) s"
