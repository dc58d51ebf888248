#!/usr/bin/env bash
# The keystore's audit retention purge at scale: 1,000,000 expired audit rows behind
# 100,000 recent ones, deleted with the service's own statement (store/audit.rs,
# purge_audit_before) 1,000 rows at a time, one statement per batch as the service runs
# them, on PostgreSQL (a scratch database, dropped afterwards) and on SQLite (WAL,
# secure_delete, as kagi opens it). Prints the table size, each backend's total time and
# the per-statement median / p99 / max (how long one batch holds its locks).
#
#   bash bench/audit-purge.sh [postgres URL host, default 127.0.0.1]
set -euo pipefail
host=${1:-127.0.0.1}
export PGOPTIONS="-c client_min_messages=warning"
db=kagi_audit_purge_bench
work=$(mktemp -d)
trap 'rm -rf "$work"; psql -q -h "$host" -U postgres -d test -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true' EXIT

table="CREATE TABLE audit_events (seq %s PRIMARY KEY%s, at BIGINT NOT NULL, caller TEXT NOT NULL,
  action TEXT NOT NULL, account_id TEXT NOT NULL, key_id TEXT NOT NULL, detail TEXT NOT NULL,
  trace_id TEXT NOT NULL);
CREATE INDEX audit_events_by_account ON audit_events (account_id, seq);"
purge="DELETE FROM audit_events WHERE at < 5000 AND seq IN (SELECT seq FROM audit_events ORDER BY seq LIMIT 1000);"

summary() { # stdin: one duration in ms per line
    python3 -c '
import sys
ms=[float(l) for l in sys.stdin if l.strip()]
s=sorted(ms)
print(f"{len(ms)} statements, {sum(ms)/1000:.1f} s in all, median {s[len(s)//2]:.1f} ms, p99 {s[int(len(s)*0.99)]:.1f} ms, max {s[-1]:.1f} ms")'
}

echo "PostgreSQL:"
psql -q -h "$host" -U postgres -d test -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
# shellcheck disable=SC2059
psql -q -X -h "$host" -U postgres -d "$db" <<SQL
$(printf "$table" BIGSERIAL "")
INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id)
SELECT 1000, 'login', 'verify', 'u' || (g % 100000), 'k' || g, 'drift=0', md5(g::text)
FROM generate_series(1, 1000000) g;
INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id)
SELECT 9000000000000, 'login', 'verify', 'u' || (g % 100000), 'k' || g, 'drift=0', md5(g::text)
FROM generate_series(1, 100000) g;
VACUUM ANALYZE audit_events;
SQL
psql -X -A -t -h "$host" -U postgres -d "$db" -c \
    "SELECT '  1,100,000 rows: ' || pg_size_pretty(pg_total_relation_size('audit_events'))"
{ echo '\timing on'; for _ in $(seq 1001); do echo "$purge"; done; } |
    psql -q -X -A -t -h "$host" -U postgres -d "$db" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' |
    summary | sed 's/^/  /'
psql -X -A -t -h "$host" -U postgres -d "$db" -c "SELECT '  left: ' || count(*) FROM audit_events"

echo "SQLite:"
# shellcheck disable=SC2059
sqlite3 "$work/k.db" >/dev/null <<SQL
PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON;
$(printf "$table" INTEGER " AUTOINCREMENT")
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM g WHERE n < 1000000)
INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id)
SELECT 1000, 'login', 'verify', 'u' || (n % 100000), 'k' || n, 'drift=0', hex(randomblob(16)) FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM g WHERE n < 100000)
INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id)
SELECT 9000000000000, 'login', 'verify', 'u' || (n % 100000), 'k' || n, 'drift=0', hex(randomblob(16)) FROM g;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
echo "  1,100,000 rows: $(( $(stat -c %s "$work/k.db") / 1048576 )) MB file"
{ printf 'PRAGMA synchronous = NORMAL;\nPRAGMA secure_delete = ON;\n.timer on\n'; for _ in $(seq 1001); do echo "$purge"; done; } |
    sqlite3 "$work/k.db" | awk '/^Run Time:/ {print $4 * 1000}' | summary | sed 's/^/  /'
echo "  left: $(sqlite3 "$work/k.db" 'SELECT count(*) FROM audit_events')"
