#!/usr/bin/env bash
# The database's own floor under the open-loop schedule of `kagi-bench open-loop`: the two
# statements of an accepted VerifyCode (a primary-key SELECT, then a conditional UPDATE
# feeding an INSERT, one commit) sent by PostgreSQL's own C client, pgbench, at a fixed
# rate (-R: open loop, latency counted from the scheduled start) over 4 connections, on a
# fresh 100,000-row database of its own. No gRPC, no TLS, no crypto: what any service that
# reads a row and commits a write per call waits for on this machine. Prints p50 … max.
#
#   bash bench/pg-floor.sh [rate, default 200] [seconds, default 60]
set -euo pipefail
rate=${1:-200}
seconds=${2:-60}
url=${KAGI_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
db=kagi_pg_floor_$$
work=$(mktemp -d)
trap 'psql -q "$url" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1; rm -rf "$work"' EXIT
psql -q "$url" -c "CREATE DATABASE $db" >/dev/null
dburl=${url%/*}/$db
"$bin/pgbench" -q -i -s 1 "$dburl" >/dev/null 2>&1
# Settled as the benchmark settles its database before the clock starts.
psql -q "$dburl" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
cat > "$work/verify.sql" <<'SQL'
\set aid random(1, 100000)
SELECT abalance, filler FROM pgbench_accounts WHERE aid = :aid;
WITH moved AS (UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid RETURNING aid) INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT 1, 1, aid, 1, now() FROM moved;
SQL
cd "$work"
"$bin/pgbench" -n -f verify.sql -R "$rate" -T "$seconds" -c 4 -j 1 -M prepared -l "$dburl" >summary.txt 2>&1
grep -E "^tps|failed" summary.txt || true
# pgbench's log: one line per transaction, its latency (µs, from the scheduled start) third.
cat pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR] = $1} END {
    printf "| pgbench, SELECT + UPDATE…INSERT, %d transactions | p50 %.2f | p90 %.2f | p99 %.2f | p99.9 %.2f | max %.2f ms |\n",
        NR, a[int(NR * .5)] / 1000, a[int(NR * .9)] / 1000, a[int(NR * .99)] / 1000, a[int(NR * .999)] / 1000, a[NR] / 1000 }'
