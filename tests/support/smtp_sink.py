"""A real SMTP server (aiosmtpd) for the provider tests: accepts mail on
127.0.0.1:<port> and appends each message as a JSON line to <file>, with
the client's address and port (its connection).

  python smtp_sink.py <port> <file> [<user>:<password>]

With credentials it requires AUTH (PLAIN or LOGIN) with them.
"""

import json
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        with open(self.path, 'a') as f:
            f.write(json.dumps({
                'from': envelope.mail_from,
                'to': envelope.rcpt_tos,
                'data': envelope.content.decode('utf8', errors='replace'),
                'peer': list(session.peer),
            }) + '\n')
        return '250 Message accepted for delivery'

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith('@bounce.test'):
            return '550 No such user'
        envelope.rcpt_tos.append(address)
        return '250 OK'


def authenticator(expected):
    """Accepts AUTH PLAIN / LOGIN with exactly `user:password`."""
    def check(server, session, envelope, mechanism, auth_data):
        given = f"{auth_data.login.decode()}:{auth_data.password.decode()}"
        return AuthResult(success=given == expected)
    return check


options = {}
if len(sys.argv) > 3:
    # Plain-text AUTH is for this loopback test server only.
    options = {'authenticator': authenticator(sys.argv[3]), 'auth_require_tls': False}
controller = Controller(Sink(sys.argv[2]), hostname='127.0.0.1', port=int(sys.argv[1]), **options)
controller.start()
print('ready', flush=True)
try:
    while True:
        time.sleep(1)
finally:
    controller.stop()
