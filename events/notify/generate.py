#!/usr/bin/env python3
"""Writes the notify sample events:

- order-events.json: an SQS batch (Lambda's SQS event source) of three
  envelopes the events topic delivered raw to the notify queue
  (RawMessageDelivery, with the `type` attribute the subscription filters
  on) for one order of the `paid_order` fixture of printworks::testing
  (tenant acme-prints, ORDER_ID as its id): OrderPlaced, OrderShipped (one
  DHL parcel) and OrderPlaced again (the same envelope delivered twice).
- sweep.json: the EventBridge schedule's constant input, which makes the
  function send deferred messages whose day has come.

tests/.../sample_events.rs stores the order and the tenant (opted in to
customer e-mail, with a phone on the order) and runs both through the
notifier: one e-mail per event, one SMS for the shipment.

    python3 events/notify/generate.py
"""
import os, sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dispatch"))
from generate import topic_record, write as write_in  # noqa: E402

TENANT = "acme-prints"
ORDER_ID = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f95"
QUEUE_ARN = "arn:aws:sqs:eu-central-1:123456789012:printworks-NotifyQueue-4K9T2V7QW1XZ"
SENT_AT = 1795341661
HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, value):
    write_in(name, value, HERE)


def record(message_id, envelope):
    return topic_record(message_id, envelope, SENT_AT, QUEUE_ARN)


def main():
    placed = {
        "id": "evt_0192f1f0a0b07c3e9d2a4b5c6d7e8fb1", "type": "OrderPlaced", "order_id": ORDER_ID,
        "tenant": TENANT, "occurred_at": "2026-11-22T10:00:00Z", "data": {},
    }
    shipped = {
        "id": "evt_0192f1f0a0b07c3e9d2a4b5c6d7e8fb2", "type": "OrderShipped", "order_id": ORDER_ID,
        "tenant": TENANT, "occurred_at": "2026-11-23T16:30:00Z",
        "data": {"plant": "muc", "packing_ref": "MUC-0FF25B18AB",
                 "shipments": [{"carrier": "DHL", "tracking": "00340434161094042557"}]},
    }
    write("order-events", {"Records": [
        record("0d7a3c52-1f4e-4b8a-9c1d-6e2f8a4b7c01", placed),
        record("0d7a3c52-1f4e-4b8a-9c1d-6e2f8a4b7c02", shipped),
        record("0d7a3c52-1f4e-4b8a-9c1d-6e2f8a4b7c03", placed),
    ]})
    write("sweep", {"sweep": "deferred"})


if __name__ == "__main__":
    main()
