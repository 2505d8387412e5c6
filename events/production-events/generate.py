#!/usr/bin/env python3
"""Writes the production-events sample events: SQS batches (Lambda's SQS
event source) of one job status report each, as the plants' edge agents
send them to the plant-events queue (straight to the queue, no topic, no
message attributes). tests/.../sample_events.rs dispatches the orders they
name to muc (the `paid_order` fixture of printworks::testing, one
poster-30x40 to AT, with these ids) and runs every batch through
ProductionEvents::handle_sqs: accepted, then shipped, for one order; failed
for the other.

    python3 events/production-events/generate.py
"""
import datetime, hashlib, json, os

TENANT = "acme-prints"  # printworks::testing::b2b_tenant
PLANT = "muc"
SHIPPED_ORDER = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f93"
FAILED_ORDER = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f94"
AT = 1795342500  # 2026-11-22T10:15:00Z
QUEUE_ARN = "arn:aws:sqs:eu-central-1:123456789012:printworks-plant-events"
# The plant's agent role (infra/plant.yaml) sends the reports.
SENDER = "AROAXQ3SAMPLEPLANTMUC:plant-muc-agent"
HERE = os.path.dirname(os.path.abspath(__file__))


def job_id(order, line, copy):
    """printworks::domain::production::job_id"""
    return f"job_{order.removeprefix('ord_')}-{line}-{copy}"


def report(order, status, at, **details):
    at = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"job_id": job_id(order, 1, 1), "plant": PLANT, "tenant": TENANT, "order_id": order,
            "status": status, "at": at, **details}


def sqs_record(message_id, body, sent_at):
    return {
        "messageId": message_id,
        "receiptHandle": "AQEB" + hashlib.sha256(message_id.encode()).hexdigest() + "/sample==",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(sent_at * 1000),
            "SenderId": SENDER,
            "ApproximateFirstReceiveTimestamp": str(sent_at * 1000 + 9),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-central-1",
    }


def write(name, value):
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    # (file, message id, order, status, seconds after AT, details)
    samples = [
        ("job-accepted", "3c1f8d52-6a0e-4b7f-8d21-9e5a4c3b2a10", SHIPPED_ORDER, "accepted", 0, {}),
        ("job-shipped", "3c1f8d52-6a0e-4b7f-8d21-9e5a4c3b2a11", SHIPPED_ORDER, "shipped", 3 * 3600,
         {"carrier": "DHL", "tracking": "00340434161094042557"}),
        ("job-failed", "3c1f8d52-6a0e-4b7f-8d21-9e5a4c3b2a12", FAILED_ORDER, "failed", 600,
         {"reason": "print head 3 clogged; the job stopped at 40 %"}),
    ]
    for name, message_id, order, status, after, details in samples:
        body = json.dumps(report(order, status, AT + after, **details), separators=(",", ":"))
        write(name, {"Records": [sqs_record(message_id, body, AT + after + 1)]})


if __name__ == "__main__":
    main()
