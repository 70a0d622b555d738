#!/usr/bin/env python3
"""A real SMTP submission server (aiosmtpd) for the interop run: STARTTLS on --port, AUTH
PLAIN/LOGIN only after STARTTLS, every accepted message appended to --out as one JSON line
(envelope and raw data). Runs until SIGTERM.

  smtp-sink.py --port P --cert CERT --key KEY --out FILE [--user test --password testpass]
"""
import argparse
import asyncio
import json
import logging
import signal
import ssl
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Store:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        with open(self.path, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "data": data.decode("utf-8", "replace")}) + "\n")
        return "250 2.0.0 OK queued"


class Auth:
    def __init__(self, user, password):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == self.user and auth_data.password == self.password)
        return AuthResult(success=ok, handled=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="test")
    ap.add_argument("--password", default="testpass")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    c = Controller(Store(a.out), hostname=a.host, port=a.port, server_hostname="localhost",
                   tls_context=ctx, require_starttls=True,
                   authenticator=Auth(a.user, a.password), auth_required=True)
    c.start()
    print(f"listening on {a.host}:{a.port}", flush=True)
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(stop)
    c.stop()


if __name__ == "__main__":
    main()
