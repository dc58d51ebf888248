#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for kagi-notifier's tests.

Listens on 127.0.0.1, prints "PORT <n>" once ready, and writes every accepted message to
MAILDIR/<n>.eml (atomically, via a temporary file). Every DATA transaction is logged to
MAILDIR/transcript.log as "<reply code> <message-id>" so tests can count attempts.

--script lists the reply codes for successive DATA commands, e.g. "451,451,250" (greylisted
twice, then accepted) or "550" (the last entry repeats forever). Default: always 250.
--tls starttls (STARTTLS required) or implicit (TLS from the first byte) with --cert/--key.
"""

import argparse
import asyncio
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

REPLIES = {
    "250": "250 2.0.0 Ok: queued",
    "421": "421 4.3.2 Service not available, closing transmission channel",
    "450": "450 4.2.1 Mailbox busy, try again later",
    "451": "451 4.7.1 Greylisted, please try again later",
    "452": "452 4.3.1 Insufficient system storage",
    "550": "550 5.1.1 Mailbox unavailable: no such user",
    "552": "552 5.3.4 Message size exceeds fixed limit",
    "554": "554 5.7.1 Rejected by policy",
}


class Handler:
    def __init__(self, maildir, script):
        self.maildir = maildir
        self.script = script or ["250"]
        self.calls = 0
        self.stored = 0
        self.transcript = open(os.path.join(maildir, "transcript.log"), "a", buffering=1)

    async def handle_DATA(self, server, session, envelope):
        index = min(self.calls, len(self.script) - 1)
        code = self.script[index]
        self.calls += 1
        message_id = ""
        for line in envelope.original_content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode("ascii", "replace")
                break
            if not line:
                break
        self.transcript.write(f"{code} {message_id}\n")
        if code == "250":
            self.stored += 1
            path = os.path.join(self.maildir, f"{self.stored:06d}.eml")
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(envelope.original_content)
            os.rename(tmp, path)
        return REPLIES.get(code, f"{code} scripted reply")


class Authenticator:
    """Accepts exactly one login/password pair (AUTH PLAIN or LOGIN)."""

    def __init__(self, credentials):
        user, _, password = credentials.partition(":")
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        return AuthResult(success=ok)


async def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--script", default="250")
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert", help="PEM certificate for --tls starttls/implicit")
    parser.add_argument("--key", help="PEM private key for --cert")
    parser.add_argument("--auth", help="require AUTH with USER:PASSWORD")
    args = parser.parse_args()
    os.makedirs(args.maildir, exist_ok=True)
    handler = Handler(args.maildir, [c.strip() for c in args.script.split(",") if c.strip()])
    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    starttls = args.tls == "starttls"
    # AUTH over plaintext is what the test wants; aiosmtpd warns about it.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="sink.test",
            decode_data=False,
            enable_SMTPUTF8=True,
            tls_context=context if starttls else None,
            require_starttls=starttls,
            authenticator=Authenticator(args.auth) if args.auth else None,
            auth_required=bool(args.auth),
            auth_require_tls=False,
        ),
        host="127.0.0.1",
        port=args.port,
        reuse_address=True,
        ssl=context if args.tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Exit when the test closes our stdin (or kills us).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
