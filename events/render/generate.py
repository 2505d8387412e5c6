#!/usr/bin/env python3
"""Writes the render sample event: an SQS batch (Lambda's SQS event
source) of one OrderPaid envelope, delivered raw by the events topic to
the render queue (RawMessageDelivery, with the `type` attribute its
subscription filters on: OrderPaid only). tests/.../sample_events.rs
places the order it names (the `paid_order` fixture of printworks::testing,
one poster-20x30 to DE, with ORDER_ID as its id and its photo the upload
UPLOAD_ID of the tenant, stored in the uploads store first) and runs the
batch through Renderer::handle_sqs: the order is rendered, its print file
and preview stored.

    python3 events/render/generate.py

The event's data is what Order::place records for a B2B order (paid by
invoice on placement): the order's total; the test checks that it matches.
"""
import os, sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dispatch"))
from generate import topic_record, write as write_in  # noqa: E402

TENANT = "acme-prints"  # printworks::testing::b2b_tenant
ORDER_ID = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f96"
# Not in the event (the order names its photos): the test stores the photo under it.
UPLOAD_ID = "upl_0192f1f0a0b07c3e9d2a4b5c6d7e8fc1"
EVENT_ID = "evt_0192f1f0a0b07c3e9d2a4b5c6d7e8fa1"
PAID_AT = "2026-11-22T10:00:00Z"
SENT_AT = 1795341601  # one second later
# The total of one poster-20x30 to DE in cents: 9.90 + 4.90 shipping, 19 % VAT.
AMOUNT = {"amount": 1761, "currency": "EUR"}
VAT = {"amount": 281, "currency": "EUR"}
QUEUE_ARN = "arn:aws:sqs:eu-central-1:123456789012:printworks-RenderQueue-2H8M4R6TQ0YB"
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    envelope = {
        "id": EVENT_ID, "type": "OrderPaid", "order_id": ORDER_ID, "tenant": TENANT,
        "occurred_at": PAID_AT, "data": {"amount": AMOUNT, "vat": VAT, "method": "invoice", "attempt": 1},
    }
    record = topic_record("3b9e6d14-7a2c-4f85-b0d3-8c1e5f9a2d47", envelope, SENT_AT, QUEUE_ARN)
    write_in("order-paid", {"Records": [record]}, HERE)


if __name__ == "__main__":
    main()
