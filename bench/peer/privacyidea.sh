#!/usr/bin/env bash
# The peer row of the keystore benchmark (issue 16 item 4): privacyIDEA 3.14 under gunicorn,
# on its own SQLite file or its own PostgreSQL database, with TOKENS TOTP tokens of known
# seeds enrolled in bulk (bench/peer/enrol.py: privacyIDEA's own import and token model), its /validate/check driven by the same
# kind of closed loop as kagi's VerifyCode row (CONCURRENCY calls in flight, each a fresh
# valid code of a token not used before), then kagi's accepted VerifyCode path on the same
# backend with the same accounts and concurrency, and the ratio. Optional: not part of any
# test command. Everything it installs goes to a venv under target/; everything it creates
# (a scratch directory, the PostgreSQL database kagi_peer_pi) is removed at the end, unless
# PI_STATE names a directory to keep it in: a later run with the same backend and TOKENS then
# skips setup and enrolment (minutes per 100,000 tokens), so the tokens can be enrolled while
# the machine is busy and measured when it is quiet. `rm -rf` the directory (and drop
# kagi_peer_pi) to start over.
#
#   bash bench/peer/privacyidea.sh [sqlite|postgres] [TOKENS=100000] [SECONDS=60] [CONCURRENCY=64]
#
# Environment: PI_WORKERS (gunicorn sync workers, default 5: gunicorn's 2 x cores + 1),
# KAGI_ROW=0 to skip kagi's row, KAGI_TEST_POSTGRES_URL as for kagi-bench.
# The driver is Python (bench/peer/drive.py, standard library only): privacyIDEA answers
# tens of checks per second here, which a threaded Python loop sends with a few percent of a
# core (it prints its own CPU share), and it needs nothing built.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
backend=${1:-sqlite}
tokens=${2:-100000}
seconds=${3:-60}
concurrency=${4:-64}
workers=${PI_WORKERS:-5}
pg_url=${KAGI_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
pg_db=kagi_peer_pi

venv=$root/target/peer-venv
if ! "$venv/bin/python" -c 'import privacyidea, gunicorn, psycopg2' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'privacyidea==3.14.*' gunicorn psycopg2-binary
fi
py=$venv/bin/python

if [ -n "${PI_STATE:-}" ]; then
    work=$(realpath -m "$PI_STATE")
    mkdir -p "$work"
    keep=1
else
    work=$(mktemp -d "$root/target/peer-pi.XXXXXX")
    keep=0
fi
enrolled="$backend $tokens"
reuse=0
[ "$keep" = 1 ] && [ "$(cat "$work/enrolled" 2>/dev/null)" = "$enrolled" ] && reuse=1
gunicorn_pid=
cleanup() {
    [ -n "$gunicorn_pid" ] && kill "$gunicorn_pid" 2>/dev/null && wait "$gunicorn_pid" 2>/dev/null
    [ "$keep" = 1 ] && return
    if [ "$backend" = postgres ]; then
        psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

case $backend in
    sqlite) db_uri="sqlite:///$work/pi.sqlite" ;;
    postgres)
        if [ "$reuse" = 0 ]; then
            PGOPTIONS="-c client_min_messages=warning" psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" \
                -c "CREATE DATABASE $pg_db" >/dev/null
        fi
        base=${pg_url%%\?*}
        db_uri="postgresql+psycopg2://${base#postgres://}"
        db_uri="${db_uri%/*}/$pg_db"
        ;;
    *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac

# privacyIDEA's production configuration with its defaults (signed SQL audit in the same
# database), only paths, keys and the log level set; then the tables and the tokens.
setup_and_enrol() {
    rm -f "$work/enrolled" "$work/pi.sqlite"
    cat >"$work/pi.cfg" <<EOF
SQLALCHEMY_DATABASE_URI = '$db_uri'
SECRET_KEY = '$(head -c 24 /dev/urandom | base64)'
PI_PEPPER = '$(head -c 24 /dev/urandom | base64)'
PI_ENCFILE = '$work/enckey'
PI_AUDIT_KEY_PRIVATE = '$work/private.pem'
PI_AUDIT_KEY_PUBLIC = '$work/public.pem'
PI_LOGFILE = '$work/privacyidea.log'
PI_LOGLEVEL = 30
PI_UUID_FILE = '$work/uuid.txt'
PI_NODE = 'bench'
EOF
    cat >"$work/pi_wsgi.py" <<EOF
from privacyidea.app import create_app
application = create_app(config_name="production", config_file="$work/pi.cfg", silent=True)
EOF
    manage() { (cd "$work" && "$venv/bin/pi-manage" "$@"); }
    manage setup create_enckey >/dev/null
    manage setup create_audit_keys >/dev/null
    manage setup create_tables >/dev/null

    echo "importing $tokens TOTP tokens into privacyIDEA ($backend)..." >&2
    "$py" bench/peer/drive.py csv "$tokens" "$work/secrets.txt" >"$work/tokens.csv"
    started=$(date +%s)
    (cd "$work" && "$py" "$root/bench/peer/enrol.py" "$work/pi.cfg" "$work/tokens.csv")
    echo "imported in $(($(date +%s) - started)) s" >&2
    rm "$work/tokens.csv"
    echo "$enrolled" >"$work/enrolled"
}
export PRIVACYIDEA_CONFIGFILE=$work/pi.cfg
if [ "$reuse" = 1 ]; then
    echo "reusing the $tokens tokens enrolled in $work ($backend)" >&2
else
    setup_and_enrol
fi

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && exec "$venv/bin/gunicorn" --workers "$workers" --bind "127.0.0.1:$port" \
    --log-level warning pi_wsgi:application) 2>"$work/gunicorn.log" &
gunicorn_pid=$!
for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$port/healthz/" && break
    sleep 0.2
done
# Warm every worker (app start, first database connection) before the clock starts.
"$py" bench/peer/drive.py "$work/secrets.txt" "http://127.0.0.1:$port" "$workers" 3 >/dev/null

peer=$("$py" bench/peer/drive.py "$work/secrets.txt" "http://127.0.0.1:$port" "$concurrency" "$seconds")
kill "$gunicorn_pid"; wait "$gunicorn_pid" 2>/dev/null || true
gunicorn_pid=
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
echo "load average while measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | accepted/s | p50 ms | p99 ms | calls | accepted | refused | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| privacyIDEA 3.14, gunicorn $workers workers, $backend, /validate/check | $(field accepted_per_s "$peer") | $(field p50_ms "$peer") | $(field p99_ms "$peer") | $(field calls "$peer") | $(field accepted "$peer") | $(field rejected "$peer") | $(field error "$peer") |"
echo
echo "driver: $concurrency threads, $seconds s (the last calls answered by $(field seconds "$peer") s), $(field driver_cpu_pct "$peer") % of one core"

if [ "${KAGI_ROW:-1}" = 1 ]; then
    kagi=$("$root/target/release/kagi-bench" compare --backend "$backend" --accounts "$tokens" \
        --concurrency "$concurrency" --rounds 1 --bin "keystore=$root/target/release/kagi-keystore" \
        --postgres-url "$pg_url" | tee -a /dev/stderr | awk -F'|' '$2 ~ /accepted/ {gsub(/ /, "", $3); print $3; exit}')
    echo
    echo "kagi-keystore accepted VerifyCode on $backend: $kagi calls/s (same accounts, $concurrency in flight)"
    "$py" -c "import sys; k, p = float(sys.argv[1]), float(sys.argv[2]); print(f'ratio: kagi / privacyIDEA = {k / p:.0f} x' if p else 'privacyIDEA accepted nothing')" \
        "$kagi" "$(field accepted_per_s "$peer")"
fi
