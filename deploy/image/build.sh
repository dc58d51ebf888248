#!/usr/bin/env bash
# Builds kagi's container image with Debian's podman, offline: a release build of the
# multi-call `kagi` launcher, stripped, plus only what it needs at run time, copied into a
# FROM scratch image. Usage: deploy/image/build.sh [IMAGE]   (default localhost/kagi:dev)
# Prints the image's size. Prove it with deploy/image/smoke.sh IMAGE.
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${1:-localhost/kagi:dev}"

if ! command -v podman >/dev/null 2>&1; then
    echo "--- installing Debian's podman and buildah"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq podman buildah >/dev/null
fi

# KAGI_BINARY: package an already built `kagi` (a CI cache) instead of building one.
binary="${KAGI_BINARY:-target/release/kagi}"
if [ -z "${KAGI_BINARY:-}" ]; then
    echo "--- cargo build --release -p kagi"
    # No line tables in the shipped binary (the workspace's release profile keeps them for
    # profiling); stripped below in any case.
    CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked -p kagi
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "--- preparing the image root in $root"
install -d -m 0755 "$root/usr/local/bin" "$root/etc/ssl/certs"
install -d -m 1777 "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/kagi"
strip --strip-all "$root/usr/local/bin/kagi"
for service in keystore reset notifier portal; do
    ln -s kagi "$root/usr/local/bin/kagi-$service"
done
# The shared libraries the binary links (libc, libm, libgcc_s…) and the dynamic loader, at
# the paths ldd reports, so the loader finds them as on the build machine.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
    while read -r lib; do
        cp --dereference --parents "$lib" "$root/"
    done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/nonexistent:/nonexistent\nkagi:x:10001:10001:kagi:/nonexistent:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\nkagi:x:10001:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

echo "--- podman build -t $image"
podman build --quiet --file deploy/image/Containerfile --tag "$image" "$root"
podman image inspect "$image" --format 'image {{.RepoTags}}: {{.Size}} bytes'
