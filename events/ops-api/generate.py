#!/usr/bin/env python3
"""Writes the ops-api sample events: API Gateway HTTP API (payload 2.0)
requests of the operator API, as the `/v1/ops/*` routes deliver them to
the ops-api function. tests/.../sample_events.rs adds the operator whose
key they carry (a support operator, printworks_tests::SAMPLE_OPERATOR_KEY),
places and holds the order they name (SAMPLE_ORDER_ID), and runs each
through ops_api::handle, in the order of NAMES below.

    python3 events/ops-api/generate.py
"""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER_ID = "ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90"  # printworks_tests::SAMPLE_ORDER_ID
OPERATOR_KEY = "pwop_local_sampleevents0000_SampleSecretForEventFixtures000000000000"
TENANT_KEY = "pw_local_sampleevents0000_SampleSecretForEventFixtures000000000000"


def event(method, route, path, key, body=None, idempotency_key=None):
    headers = {
        "accept": "application/json",
        "authorization": f"Bearer {key}",
        "host": "abc123.execute-api.eu-central-1.amazonaws.com",
        "user-agent": "printworks-ops/1.0",
    }
    if body is not None:
        headers["content-type"] = "application/json"
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    value = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-central-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.20", "userAgent": "printworks-ops/1.0"},
            "requestId": "OPSaXmPLvHcESHA=",
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795341600000,
        },
        "isBase64Encoded": False,
        "pathParameters": {"id": ORDER_ID},
    }
    if body is not None:
        value["body"] = json.dumps(body)
    return value


def write(name, value):
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    order = f"/v1/ops/orders/{ORDER_ID}"
    release = f"{order}/release"
    write("show-held-order", event("GET", "/v1/ops/orders/{id}", order, OPERATOR_KEY))
    write("release-with-a-tenant-key", event("POST", "/v1/ops/orders/{id}/release", release, TENANT_KEY,
                                             {"reason": "photo replaced"}, "sample-release-0"))
    write("release-without-a-reason", event("POST", "/v1/ops/orders/{id}/release", release, OPERATOR_KEY,
                                            {}, "sample-release-0"))
    write("release-held-order", event("POST", "/v1/ops/orders/{id}/release", release, OPERATOR_KEY,
                                      {"reason": "the customer sent a larger photo"}, "sample-release-1"))
    write("release-again", event("POST", "/v1/ops/orders/{id}/release", release, OPERATOR_KEY,
                                 {"reason": "once more"}, "sample-release-2"))
    write("cancel-released-order", event("POST", "/v1/ops/orders/{id}/cancel", f"{order}/cancel", OPERATOR_KEY,
                                         {"reason": "the customer called to cancel"}, "sample-cancel-1"))


if __name__ == "__main__":
    main()
