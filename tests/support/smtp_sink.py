"""A real SMTP server (aiosmtpd) for the provider tests: accepts mail on
127.0.0.1:<port> and appends each message as a JSON line to <file>, with
the client's address and port (its connection).

  python smtp_sink.py <port> <file>
"""

import json
import sys
import time

from aiosmtpd.controller import Controller


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


controller = Controller(Sink(sys.argv[2]), hostname='127.0.0.1', port=int(sys.argv[1]))
controller.start()
print('ready', flush=True)
try:
    while True:
        time.sleep(1)
finally:
    controller.stop()
