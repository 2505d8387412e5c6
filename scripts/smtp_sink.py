"""A real SMTP server for the notify tests (aiosmtpd, from the test
virtualenv): listens on 127.0.0.1:<port>, refuses recipients at
refused.example with 550, and writes every message it accepts as JSON into
<dir>: the envelope, the decoded headers and the text parts, parsed by
Python's own email package (an implementation independent of ours).

usage: python smtp_sink.py <port> <dir>
"""

import email
import email.policy
import json
import pathlib
import signal
import sys
import threading
import uuid

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out: pathlib.Path):
        self.out = out

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().endswith("@refused.example"):
            # As Postfix does, the refusal names the address.
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        parts = [
            {"type": part.get_content_type(), "content": part.get_content()}
            for part in message.walk()
            if not part.is_multipart()
        ]
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {name: str(value) for name, value in message.items()},
            "parts": parts,
        }
        name = uuid.uuid4().hex
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        tmp.rename(self.out / f"{name}.json")
        return "250 Message accepted for delivery"


def main() -> None:
    port, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
