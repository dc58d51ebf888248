"""Closed-loop load on privacyIDEA's /validate/check: the peer row beside kagi's VerifyCode.

    python3 drive.py SECRETS_FILE URL CONCURRENCY SECONDS  # drive the server, print one row
    python3 drive.py csv COUNT SECRETS_FILE > tokens.csv  # the tokens to import, seeds known

Each call sends a fresh valid TOTP code (RFC 6238, SHA1, 6 digits, 30 s) of a token not used
before in the run, as kagi's bench sends each VerifyCode to a different account: privacyIDEA
accepts a time step of a token once, so a repeated token would be refused, not measured.
CONCURRENCY threads each keep one HTTP/1.1 connection and send their next call as soon as the
last one answered (closed loop), for SECONDS; the rate is the calls accepted within those
SECONDS, the latencies those of every call (the last ones answer after the deadline). Standard library only, so the same interpreter
that runs privacyIDEA can run it. The driver's own CPU time is printed beside the rate: at the
rates privacyIDEA reaches here (tens of calls per second) it needs a few percent of a core,
so it is not what limits the row.
"""

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import os
import random
import resource
import struct
import sys
import threading
import time
import urllib.parse


def totp(key: bytes, now: float) -> str:
    """The current code of an RFC 6238 key (SHA1, 6 digits, 30 s steps)."""
    digest = hmac.new(key, struct.pack(">Q", int(now) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 15
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1_000_000)


def write_csv(count: int, secrets_file: str) -> None:
    """privacyIDEA's OATH CSV (serial, hex key, totp, 6, 30) on stdout; the keys also to
    SECRETS_FILE (serial and Base32, one a line) for the driver."""
    with open(secrets_file, "w") as secrets:
        for i in range(count):
            key = os.urandom(20)
            serial = "BENCH%07d" % i
            sys.stdout.write(f"{serial}, {key.hex()}, totp, 6, 30\n")
            secrets.write(f"{serial} {base64.b32encode(key).decode()}\n")


def drive(secrets_file: str, url: str, concurrency: int, seconds: float) -> None:
    tokens = []
    with open(secrets_file) as f:
        for line in f:
            serial, secret = line.split()
            tokens.append((serial, base64.b32decode(secret)))
    random.shuffle(tokens)
    target = urllib.parse.urlsplit(url)
    next_token = itertools.count()  # next() on a count is atomic under the GIL
    lock = threading.Lock()
    latencies, counts = [], {"accepted": 0, "rejected": 0, "error": 0, "in_time": 0}
    start = time.monotonic()
    deadline = start + seconds

    def worker() -> None:
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        mine, tally = [], {"accepted": 0, "rejected": 0, "error": 0, "in_time": 0}
        while time.monotonic() < deadline:
            i = next(next_token)
            if i >= len(tokens):
                break
            serial, key = tokens[i]
            body = urllib.parse.urlencode({"serial": serial, "pass": totp(key, time.time())})
            sent = time.monotonic()
            try:
                connection.request("POST", "/validate/check", body, {
                    "Content-Type": "application/x-www-form-urlencoded"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                outcome = "accepted" if answer["result"]["value"] is True else "rejected"
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                connection.close()
                outcome = "error"
            answered = time.monotonic()
            mine.append(answered - sent)
            tally[outcome] += 1
            # The rate counts what was accepted within the window, when the loop was full;
            # the calls still in flight at the deadline finish (and are counted above) after.
            if outcome == "accepted" and answered <= deadline:
                tally["in_time"] += 1
        with lock:
            latencies.extend(mine)
            for k, v in tally.items():
                counts[k] += v

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    print(f"calls={len(latencies)} seconds={elapsed:.1f} accepted={counts['accepted']} "
          f"rejected={counts['rejected']} error={counts['error']} "
          f"accepted_per_s={counts['in_time'] / seconds:.1f} p50_ms={quantile(0.5):.1f} "
          f"p99_ms={quantile(0.99):.1f} driver_cpu_pct={100 * cpu / elapsed:.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["csv"]:
        write_csv(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 5:
        drive(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)
