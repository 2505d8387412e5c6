#!/usr/bin/env python3
"""Writes the dispatch sample event: an SQS batch (Lambda's SQS event
source) of one OrderRendered envelope, delivered raw by the events topic
(RawMessageDelivery, the `type` attribute the subscription filters on).
tests/.../sample_events.rs places the order it names (the `paid_order`
fixture of printworks::testing with ORDER_ID as its id, rendered by the
`rendered` fixture) and runs the batch through Dispatcher::handle_sqs.

    python3 events/dispatch/generate.py

The renders are those the `rendered` fixture records (stand-in print files
whose bytes say what they are); the test checks that they match.
"""
import hashlib, json, os, struct

TENANT = "acme-prints"  # printworks::testing::b2b_tenant
ORDER_ID = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f92"
# (sku, quantity, images): two posters and a greeting card, to AT (only muc serves AT).
ITEMS = [("poster-30x40", 2, 1), ("card-a6-folded", 1, 1)]
EVENT_ID = "evt_0192f1f0a0b07c3e9d2a4b5c6d7e8fa2"
RENDERED_AT = "2026-11-22T10:01:00Z"
SENT_AT = 1795341661  # one second later
QUEUE_ARN = "arn:aws:sqs:eu-central-1:123456789012:printworks-DispatchQueue-7Q3XJ2W0PZ1M"
HERE = os.path.dirname(os.path.abspath(__file__))


def rendered_file(key, content):
    data = content.encode()
    return {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "width": 100, "height": 150, "bytes": len(data)}


def renders(line, images):
    out = []
    for j in range(images):
        base = f"{TENANT}/{ORDER_ID}/{line}-{j + 1}"
        out.append({
            "image": j,
            "print": rendered_file(f"{base}/print.jpg", f"print of {base}/print.jpg"),
            "preview": rendered_file(f"{base}/preview.jpg", f"preview of {base}/preview.jpg"),
            "effective_dpi": 300,
            "warnings": [],
        })
    return out


def md5_of_attributes(attributes):
    """SQS's MD5OfMessageAttributes: name, type, transport 1 (string), value."""
    encoded = b""
    for name in sorted(attributes):
        a = attributes[name]
        for part in (name, a["dataType"]):
            encoded += struct.pack(">I", len(part.encode())) + part.encode()
        value = a["stringValue"].encode()
        encoded += b"\x01" + struct.pack(">I", len(value)) + value
    return hashlib.md5(encoded).hexdigest()


def sqs_record(message_id, body, attributes, sender, sent_at, queue_arn):
    return {
        "messageId": message_id,
        "receiptHandle": "AQEB" + hashlib.sha256(message_id.encode()).hexdigest() + "/sample==",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(sent_at * 1000),
            "SenderId": sender,
            "ApproximateFirstReceiveTimestamp": str(sent_at * 1000 + 12),
        },
        "messageAttributes": attributes,
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        **({"md5OfMessageAttributes": md5_of_attributes(attributes)} if attributes else {}),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "eu-central-1",
    }


def topic_record(message_id, envelope, sent_at, queue_arn):
    """An event envelope as the events topic delivers it raw to a queue
    subscribed by `type`, as Lambda's SQS event source hands it over."""
    body = json.dumps(envelope, separators=(",", ":"))
    attributes = {"type": {"stringValue": envelope["type"], "stringListValues": [],
                           "binaryListValues": [], "dataType": "String"}}
    return sqs_record(message_id, body, attributes, "AIDAIT2UOQQY3AUEKVGXU", sent_at, queue_arn)


def write(name, value, here=HERE):
    with open(os.path.join(here, f"{name}.json"), "w") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    envelope = {
        "id": EVENT_ID, "type": "OrderRendered", "order_id": ORDER_ID, "tenant": TENANT,
        "occurred_at": RENDERED_AT,
        "data": {"items": [{"line": line, "sku": sku, "renders": renders(line, images)}
                           for line, (sku, _, images) in enumerate(ITEMS, start=1)],
                 "attempt": 1},
    }
    record = topic_record("5f0c2a1e-8b7d-4c39-9e61-2d4a7b0c9f12", envelope, SENT_AT, QUEUE_ARN)
    write("order-rendered", {"Records": [record]})


if __name__ == "__main__":
    main()
