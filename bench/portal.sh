#!/usr/bin/env bash
# The portal's pages under 50 concurrent users, and the help desk's account page under 20
# concurrent operators (wrk on loopback), with their weight, against the whole system as
# `kagi dev` runs it (release build, SQLite). Prints a markdown table.
#
#   bash bench/portal.sh [seconds per page, default 10] [key notices: unlimited|off|default] [pages: all|helpdesk|key]
#
# Every view of the key (menu 1, menu 3) mails its owner a "key displayed" notice, at most
# 20 an hour per recipient: `unlimited` (the default here) lifts that allowance so wrk's one
# user measures the page and its notice, `off` measures the page without the notice, and
# `default` keeps the allowance (most views then answer 429, counted in the last column).
# `helpdesk` as the third argument measures the help desk's account page alone (its row only),
# `key` menu 1's page alone. The CPU column is what the `kagi dev` process (every service)
# spent per request, user + system time from /proc: meaningful even on a busy machine,
# where the rates and latencies are not.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-10}
notices=${2:-unlimited}
pages=${3:-all}
case $pages in all | helpdesk | key) ;; *) echo "pages: all, helpdesk or key, not $pages" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
# KAGI_BIN: measure an already built `kagi` (another build, kept aside) instead of building one.
kagi_bin=${KAGI_BIN:+$(realpath "$KAGI_BIN")}  # absolute: kagi dev starts in a scratch directory
if [ -z "$kagi_bin" ]; then
    cargo build --release -q -p kagi
    kagi_bin=$root/target/release/kagi
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
portal="http://127.0.0.1:$port"
(cd "$work" && exec "$kagi_bin" dev --portal-addr "127.0.0.1:$port" --keystore-addr 127.0.0.1:0 \
    --reset-addr 127.0.0.1:0 --notifier-addr 127.0.0.1:0 --key-display-notices "$notices" >banner.txt 2>kagi.log) &
kagi=$!
trap 'kill -INT $kagi 2>/dev/null; wait $kagi 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "Ctrl-C stops" "$work/banner.txt" 2>/dev/null && break; sleep 0.2; done
password=$(awk '/password     :/ {print $3; exit}' "$work/banner.txt")
# kagi dev names no campus network, so the login also asks for the current one-time password.
secret=$(sed -n 's/.*setup key    : //p' "$work/banner.txt" | tr -d ' ')
totp() {  # the current RFC 6238 code of a Base32 secret
    python3 -c 'import base64,hmac,struct,sys,time
k=base64.b32decode(sys.argv[1]+"="*(-len(sys.argv[1])%8)); h=hmac.new(k,struct.pack(">Q",int(time.time())//30),"sha1").digest()
o=h[-1]&15; print("%06d"%((struct.unpack(">I",h[o:o+4])[0]&0x7fffffff)%1000000))' "$1"
}
otp=$(totp "$secret")

# Log in (local mode) to measure the pages behind the login: the demo account, and the demo
# help-desk operator for the console.
login() {  # login ACCOUNT PASSWORD CODE -> the session cookie
    local jar="$work/cookies-$1" csrf
    csrf=$(curl -s -c "$jar" "$portal/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
    curl -s -b "$jar" -c "$jar" -o /dev/null --data-urlencode "csrf=$csrf" --data-urlencode "account_id=$1" \
        --data-urlencode "password=$2" --data-urlencode "one_time_password=$3" "$portal/login"
    echo "kagi_session=$(awk '$6 == "kagi_session" {print $7}' "$jar")"
}
cookie=$(login demo "$password" "$otp")
operator_password=$(awk '/^  password     :/ {n++} /^  password     :/ && n == 2 {print $3}' "$work/banner.txt")
operator_secret=$(sed -n 's/.*operator key : \([A-Z2-7 ]*\) .*/\1/p' "$work/banner.txt" | tr -d ' ')
operator_cookie=$(login operator "$operator_password" "$(totp "$operator_secret")")

echo "| page | what it does | requests/s | p50 ms | p99 ms | bytes | non-2xx | kagi CPU ms/request |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
cpu_ticks() {  # utime + stime of the kagi dev process, in clock ticks
    awk '{print $14 + $15}' "/proc/$kagi/stat"
}
measure() {  # measure PATH WHAT [CONNECTIONS] [COOKIE]
    local path=$1 what=$2 connections=${3:-50} as=${4:-$cookie}
    local bytes out
    bytes=$(curl -s -H "Cookie: $as" -o /dev/null -w '%{size_download}' "$portal$path")
    local ticks_before ticks_after
    ticks_before=$(cpu_ticks)
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Cookie: $as" "$portal$path")
    ticks_after=$(cpu_ticks)
    local rps p50 p99 requests cpu
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(python3 -c "import os,sys; print(round((int(sys.argv[2])-int(sys.argv[1]))*1000/os.sysconf('SC_CLK_TCK')/max(int(sys.argv[3]),1),3))" \
        "$ticks_before" "$ticks_after" "$requests")
    echo "| \`$path\` | $what | $rps | $(to_ms "$p50") | $(to_ms "$p99") | $bytes | ${non2xx:-0} | $cpu |"
}
to_ms() {  # wrk prints 850.00us, 12.34ms or 1.20s
    python3 -c "import sys; v=sys.argv[1]; f={'us':1e-3,'ms':1,'s':1e3}; u=next(k for k in ('us','ms','s') if v.endswith(k)); print(round(float(v[:-len(u)])*f[u],2))" "$1"
}
if [ "$pages" = all ]; then
    measure / "top page (three menus)"
    measure /key "menu 1: GetCurrentKey (PNG only), audit row, notice ($notices)"
    measure /apple "menu 3: UA check (greyed out for wrk)"
    measure /reset "menu 2 step 1 form"
    measure /login "login form"
    measure /static/portal.css "stylesheet"
fi
if [ "$pages" = key ]; then
    measure /key "menu 1: GetCurrentKey (PNG only), audit row, notice ($notices)"
    exit 0
fi
measure "/helpdesk?account=demo" "help desk account page, 20 operators: 3 admin RPCs, audited" 20 "$operator_cookie"
