#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for airlock-notify's email tests.

    smtp_server.py --out FILE [--cert PEM --key PEM] [--user U --password P]
                   [--fail-first N]

Listens on 127.0.0.1 on a port the kernel picks and prints "PORT <n>" once
it accepts connections. With --cert/--key it offers STARTTLS; with --user it
offers AUTH (only after STARTTLS, aiosmtpd's default) and accepts that login
alone; with --fail-first it answers the first N messages with a transient
451. Each message received is appended to FILE as one JSON line before the
server answers 250, so a client that got its 250 finds the line there:
mail_from, rcpt_tos, tls (the session was upgraded with STARTTLS),
tls_version, user (the authenticated login, or null), answer (the reply's
code) and content (the raw message). The server runs until its stdin closes: the test holds the pipe,
so the server cannot outlive it.
"""

import argparse
import asyncio
import json
import socket
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, out, fail_first):
        self.out = out
        self.fail_left = fail_first

    async def handle_DATA(self, server, session, envelope):
        answer = "250 OK"
        if self.fail_left > 0:
            self.fail_left -= 1
            answer = "451 4.3.0 Try again later"
        ssl_object = session.ssl.get("ssl_object") if session.ssl else None
        user = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "tls_version": ssl_object.version() if ssl_object else None,
            "user": user,
            "answer": int(answer[:3]),
            "content": envelope.content.decode("utf-8", "replace"),
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return answer


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if auth_data.login == user.encode() and auth_data.password == password.encode():
            return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)

    return authenticate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()

    tls_context = None
    if args.cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.cert, args.key)
    authenticator = authenticator_for(args.user, args.password) if args.user else None

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    recorder = Recorder(args.out, args.fail_first)

    def smtp():
        return SMTP(
            recorder,
            hostname="smtp.test",
            tls_context=tls_context,
            authenticator=authenticator,
            loop=loop,
        )

    # Bound here, not by aiosmtpd's Controller, so that port 0 can be used
    # and the port reported only once the socket listens.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = loop.run_until_complete(loop.create_server(smtp, sock=sock))

    def wait_for_stdin_to_close():
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
