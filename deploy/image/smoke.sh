#!/usr/bin/env bash
# Proves an image built by build.sh is complete, without a container runtime (`podman run`
# cannot work in this sandbox): copies the image's root out of podman's storage, then
# starts each service from it with chroot as user 10001 — SQLite under /tmp, generated
# secrets — and waits for a gRPC health SERVING (grpcurl) or the portal's /healthz.
# Prints the milliseconds from exec to SERVING for each. Needs root (chroot, image mount).
# Usage: deploy/image/smoke.sh [IMAGE] [GRPCURL]
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${1:-localhost/kagi:dev}"
grpcurl="${2:-target/kagi-test-venv/bin/grpcurl}"
[ -x "$grpcurl" ] || { echo "grpcurl not found at $grpcurl (cargo test creates the test kit's venv)"; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    podman image unmount "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mnt="$(podman image mount "$image")"
mkdir -p "$work/root"
cp -a "$mnt/." "$work/root/"
root="$work/root"
echo "image root: $(du -sh --apparent-size "$root" | cut -f1), files: $(find "$root" -type f | wc -l)"
if [ -e "$root/bin/sh" ] || [ -e "$root/usr/bin/sh" ]; then echo "the image has a shell"; exit 1; fi

# What a pod would mount: secrets and a writable /tmp (the image's own, here).
secrets="$root/tmp/secrets"
install -d -o 10001 -g 10001 -m 0700 "$secrets" "$secrets/callers" "$secrets/kek" "$root/tmp/data"
for caller in reset portal login; do head -c 24 /dev/urandom | base64 >"$secrets/callers/$caller"; done
head -c 32 /dev/urandom | base64 >"$secrets/kek/smoke"
head -c 32 /dev/urandom | base64 >"$secrets/code-key"
head -c 32 /dev/urandom | base64 >"$secrets/payload-key"
chown -R 10001:10001 "$secrets" "$root/tmp/data"

# service, port, then the environment that configures it (the image's TOML-less defaults).
start() {
    local service="$1" port="$2"; shift 2
    local started_ns
    started_ns=$(date +%s%N)
    env -i "$@" "$(command -v chroot)" --userspec=10001:10001 "$root" "/usr/local/bin/kagi-$service" serve \
        >"$work/$service.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 1000); do
        if [ "$service" = portal ]; then
            curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        else
            "$grpcurl" -plaintext -max-time 1 -d '{}' "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null |
                grep -q SERVING && break
        fi
        if ! kill -0 "${pids[-1]}" 2>/dev/null; then
            echo "$service exited:"; cat "$work/$service.log"; exit 1
        fi
        sleep 0.005
    done
    local ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
    echo "$service: SERVING ${ms} ms after exec (user $(ps -o uid= -p "${pids[-1]}" | tr -d ' '))"
}

sqlite() { echo "sqlite:///tmp/data/$1.db?mode=rwc"; }
start keystore 55051 \
    KAGI_KEYSTORE_SERVER__LISTEN_ADDR=127.0.0.1:55051 KAGI_KEYSTORE_DATABASE__URL="$(sqlite keystore)" \
    KAGI_KEYSTORE_AUTH__TOKENS_DIR=/tmp/secrets/callers KAGI_KEYSTORE_KEK__KEYS_DIR=/tmp/secrets/kek
start notifier 55053 \
    KAGI_NOTIFIER_SERVER__LISTEN_ADDR=127.0.0.1:55053 KAGI_NOTIFIER_DATABASE__URL="$(sqlite notifier)" \
    KAGI_NOTIFIER_AUTH__TOKENS_DIR=/tmp/secrets/callers KAGI_NOTIFIER_SEALING__KEY_FILE=/tmp/secrets/payload-key \
    KAGI_NOTIFIER_TRANSPORT__OUTBOX_DIR=/tmp/data/outbox KAGI_NOTIFIER_MAIL__TEMPLATES_DIR=/tmp/data/notifier-templates
start reset 55052 \
    KAGI_RESET_SERVER__LISTEN_ADDR=127.0.0.1:55052 KAGI_RESET_DATABASE__URL="$(sqlite reset)" \
    KAGI_RESET_AUTH__TOKENS_DIR=/tmp/secrets/callers KAGI_RESET_CODE_HMAC_KEY_FILE=/tmp/secrets/code-key \
    KAGI_RESET_KEYSTORE__ENDPOINT=http://127.0.0.1:55051 KAGI_RESET_KEYSTORE__TOKEN_FILE=/tmp/secrets/callers/reset \
    KAGI_RESET_NOTIFIER__ENDPOINT=http://127.0.0.1:55053 KAGI_RESET_NOTIFIER__TOKEN_FILE=/tmp/secrets/callers/reset
start portal 58080 \
    KAGI_PORTAL_SERVER__LISTEN_ADDR=127.0.0.1:58080 KAGI_PORTAL_DATABASE__URL="$(sqlite portal)" \
    KAGI_PORTAL_KEYSTORE__ENDPOINT=http://127.0.0.1:55051 KAGI_PORTAL_KEYSTORE__TOKEN_FILE=/tmp/secrets/callers/portal \
    KAGI_PORTAL_RESET__ENDPOINT=http://127.0.0.1:55052 KAGI_PORTAL_RESET__TOKEN_FILE=/tmp/secrets/callers/portal
# The multi-call entry point too: `kagi keystore --help` from the image.
chroot --userspec=10001:10001 "$root" /usr/local/bin/kagi keystore --help >/dev/null
echo "all four services answered from the image"
