#!/usr/bin/env python3
"""Writes the stats sample event: one SQS batch (Lambda's SQS event source)
of the events the statistics count, as the events topic delivers them raw
to the stats queue (filtered on `type`): an order paid, held, then shipped
by muc 26 hours after it was placed, and a partial refund of another.
tests/.../sample_events.rs runs the batch through stats::Stats::handle_sqs
twice and reads the counters back.

    python3 events/stats/generate.py
"""
import os, sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dispatch"))
from generate import topic_record, write as write_in  # noqa: E402

TENANT = "acme-prints"
ORDER = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8fb1"
OTHER = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8fb2"
QUEUE_ARN = "arn:aws:sqs:eu-central-1:123456789012:printworks-StatsQueue-7QK2M4X9B1CD"
SENT_AT = 1795341601
HERE = os.path.dirname(os.path.abspath(__file__))


def envelope(n, kind, order, at, data):
    return {"id": f"evt_0192f1f0a0b07c3e9d2a4b5c6d7e8e{n:02x}", "type": kind, "order_id": order,
            "tenant": TENANT, "occurred_at": at, "data": data}


def main():
    events = [
        envelope(1, "OrderPaid", ORDER, "2026-11-21T08:00:00Z",
                 {"amount": {"amount": 1761, "currency": "EUR"}, "vat": {"amount": 281, "currency": "EUR"},
                  "method": "invoice", "attempt": 1}),
        envelope(2, "OrderOnHold", ORDER, "2026-11-21T08:05:00Z",
                 {"reason": "Item 1, image 1: the photo is too small for this size.", "from": "paid",
                  "details": {"code": "unprintable_resolution", "line": 1, "image": 0}}),
        envelope(3, "OrderShipped", ORDER, "2026-11-22T10:00:00Z",
                 {"plant": "muc", "packing_ref": "PW-0192F1F0", "attempt": 2, "placed_at": "2026-11-21T08:00:00Z",
                  "skus": ["poster-20x30"], "shipments": [{"carrier": "DHL", "tracking": "JJD0001"}]}),
        envelope(4, "PaymentRefunded", OTHER, "2026-11-22T11:00:00Z",
                 {"amount": {"amount": 500, "currency": "CHF"}, "refunded": {"amount": 500, "currency": "CHF"},
                  "full": False}),
    ]
    records = [topic_record(f"9d1c7e52-3a4b-4f60-8e2d-{i:012x}", e, SENT_AT + i, QUEUE_ARN)
               for i, e in enumerate(events)]
    write_in("counted-events", {"Records": records}, HERE)


if __name__ == "__main__":
    main()
