#!/usr/bin/env python3
"""Writes the payment-webhook sample events (API Gateway HTTP API, payload
v2), signed with the sample secrets below by Python's own hmac module, an
implementation independent of ours. tests/.../sample_events.rs runs every
one through the handler with a clock set to SIGNED_AT.

    python3 events/payment-webhook/generate.py AMOUNT

AMOUNT is the total (minor units) of the place-order sample's request for a
B2C tenant shipping to DE; the test names it when it changes.
"""
import base64, hashlib, hmac, json, os, sys

STRIPE_SECRET = "whsec_sample_events"
ADYEN_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
SIGNED_AT = 1795341600  # 2026-11-22T10:00:00Z
STRIPE_ORDER = "demo-brand:ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f90"
ADYEN_ORDER = "demo-cards:ord_0192f1f0a0b07c3e9d2a4b5c6d7e8f91"
HERE = os.path.dirname(os.path.abspath(__file__))


def event(provider, body, headers):
    path = f"/v1/payments/{provider}/webhook"
    return {
        "version": "2.0",
        "routeKey": "POST /v1/payments/{provider}/webhook",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc123.execute-api.eu-central-1.amazonaws.com", **headers},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-central-1.amazonaws.com", "domainPrefix": "abc123",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "54.187.174.169", "userAgent": f"{provider}-webhooks/1.0"},
            "requestId": "JKJaXmPLvHcESHA=", "routeKey": "POST /v1/payments/{provider}/webhook", "stage": "$default",
            "time": "22/Nov/2026:10:00:05 +0000", "timeEpoch": (SIGNED_AT + 5) * 1000,
        },
        "isBase64Encoded": False,
        "pathParameters": {"provider": provider},
        "body": body,
    }


def stripe_header(secret, body):
    sig = hmac.new(secret.encode(), f"{SIGNED_AT}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={SIGNED_AT},v1={sig}"


def adyen_item(item):
    fields = [item.get("pspReference", ""), item.get("originalReference", ""), item.get("merchantAccountCode", ""),
              item.get("merchantReference", ""), str(item["amount"]["value"]), item["amount"]["currency"],
              item.get("eventCode", ""), item.get("success", "")]
    mac = hmac.new(bytes.fromhex(ADYEN_KEY), ":".join(fields).encode(), hashlib.sha256).digest()
    item["additionalData"] = {"hmacSignature": base64.b64encode(mac).decode()}
    return {"NotificationRequestItem": item}


def write(name, value):
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    amount = int(sys.argv[1])
    stripe_body = json.dumps({
        "id": "evt_3SampleEvents0001", "object": "event", "type": "payment_intent.succeeded",
        "api_version": "2025-10-29", "created": SIGNED_AT, "livemode": False,
        "data": {"object": {"id": "pi_3SampleEvents0001", "object": "payment_intent", "status": "succeeded",
                            "amount": amount, "amount_received": amount, "currency": "eur",
                            "metadata": {"order_reference": STRIPE_ORDER}}},
    }, separators=(",", ":"))
    write("stripe-payment-succeeded", event("stripe", stripe_body, {"stripe-signature": stripe_header(STRIPE_SECRET, stripe_body)}))
    write("stripe-wrong-secret", event("stripe", stripe_body, {"stripe-signature": stripe_header("whsec_someone_else", stripe_body)}))
    items = [
        {"amount": {"currency": "EUR", "value": amount}, "eventCode": "AUTHORISATION", "eventDate": "2026-11-22T11:00:01+01:00",
         "merchantAccountCode": "PrintworksDemo", "merchantReference": ADYEN_ORDER, "pspReference": "SAMPLEPSP0000001", "success": "true"},
        {"amount": {"currency": "EUR", "value": amount}, "eventCode": "CAPTURE", "eventDate": "2026-11-22T11:00:03+01:00",
         "merchantAccountCode": "PrintworksDemo", "merchantReference": ADYEN_ORDER, "originalReference": "SAMPLEPSP0000001",
         "pspReference": "SAMPLEPSP0000002", "success": "true"},
    ]
    adyen_body = json.dumps({"live": "false", "notificationItems": [adyen_item(i) for i in items]}, separators=(",", ":"))
    write("adyen-authorisation-and-capture", event("adyen", adyen_body, {}))
    write("unknown-provider", event("paypal", stripe_body, {"stripe-signature": stripe_header(STRIPE_SECRET, stripe_body)}))


if __name__ == "__main__":
    main()
