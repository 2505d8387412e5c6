"""One B2C order end to end through the stacks `scripts/localstack deploy`
put on LocalStack (target/localstack/stack.json), every stage asserted and
timed:

 1. order     a tenant (`printworks tenant add --aws-table`, the supported
              way), an upload (POST /v1/uploads), a real JPEG PUT to its
              presigned URL, a B2C order with an Idempotency-Key, all
              through the API stand-in (the function URL on order-api);
 2. paid      a Stripe-signed `payment_intent.succeeded` posted to
              POST /v1/payments/stripe/webhook (a function URL on the
              payment-webhook function, made here), with a signing secret
              the test puts into the deployed PaymentWebhookSecrets;
 3. rendered  stream -> events-publisher -> SNS -> render queue -> render:
              the order `rendered`, its print and preview in the prints bucket;
 4. dispatched  the order `dispatched` and its job in plant muc's queue
              (peeked: received with visibility 0, not deleted);
 5. shipped   the real target/debug/edge-agent on that queue with a
              simulated machine that packs and ships by itself, reporting to
              plant-events -> production-events: the order `shipped`, read
              through GET /v1/orders/{id};
 6. e-mails   notify's placed, paid and shipped e-mails to the customer,
              read back from LocalStack's SES (GET /_aws/ses);
 7. no dead letters in any queue of the stack or the plant stack;
 8. reprint   an operator (`printworks operator add --aws-table`) sees the
              order through the operator API (ops-api's function URL; a
              tenant key is a 401), reprints its job with an
              Idempotency-Key (replayed once), and the order ships again
              in attempt 2 from the same running agent: the first job
              superseded, the new one shipped; still no dead letters;
 9. redrive   the order's old OrderRendered put in dispatch's dead-letter
              queue: the operator lists the queues, looks at it, redrives
              it once per key (an SQS message move task back to dispatch's
              queue); dispatch handles it and the order is unchanged.

Workarounds (docs/decisions/localstack.md): API Gateway v2 is not in the
community edition, so the payment webhook's route gets a function URL of
its own; SES v2 is not either, so notify's `AWS_ENDPOINT_URL_SESV2` points,
for the test's duration, at a small translator in this process that sends
each SES v2 `SendEmail` (raw MIME) on as SES v1 `SendRawEmail` to
LocalStack, whose /_aws/ses then shows it (sender identity verified first).

The stage timings are printed and written to target/localstack/e2e-timings.json.
Skips, saying why, when there is no stack.json, LocalStack does not answer,
the stack is not deployed there, or a binary is missing: target/debug/edge-agent
and a `printworks` built with printworks-local's `aws` feature (see
PRINTWORKS below). One run at a time (a lock under target/localstack).
Each stage waits at most E2E_STAGE_TIMEOUT seconds (120).

    .venv-localstack/bin/python -m pytest -s infra/localstack/tests/test_end_to_end.py
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import http.client as httpclient
import io
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[3]
STATE = ROOT / "target" / "localstack"
STACK_JSON = STATE / "stack.json"
TIMINGS_JSON = STATE / "e2e-timings.json"
# `printworks tenant add --aws-table` needs printworks-local's `aws` feature,
# which the workspace's test build turns on (tests/Cargo.toml), as
# `cargo build --workspace --all-targets` does: PRINTWORKS_BIN, else
# target/debug/printworks.
PRINTWORKS = Path(os.environ.get("PRINTWORKS_BIN") or ROOT / "target" / "debug" / "printworks")
EDGE_AGENT = ROOT / "target" / "debug" / "edge-agent"
STAGE_TIMEOUT = float(os.environ.get("E2E_STAGE_TIMEOUT", "120"))
PLANT = "muc"
# The default brand's sender (functions/notify/brands.json): a tenant whose
# brand is not listed there sends as the default one.
SENDER = "orders@printworks.example"


# -- the deployed stack ------------------------------------------------------------
@pytest.fixture(scope="module")
def one_at_a_time():
    """One end-to-end run at a time on this machine: each points the notify
    function at its own SES translator and takes it back at the end."""
    import fcntl

    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "e2e.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def stack() -> dict:
    if not STACK_JSON.is_file():
        pytest.skip(f"no {STACK_JSON.relative_to(ROOT)}: run scripts/localstack start and deploy")
    data = json.loads(STACK_JSON.read_text())
    try:
        urllib.request.urlopen(data["endpoint"] + "/_localstack/health", timeout=5).read()
    except OSError as e:
        pytest.skip(f"LocalStack at {data['endpoint']} does not answer ({e}): scripts/localstack start")
    for binary in (PRINTWORKS, EDGE_AGENT):
        if not binary.is_file():
            pytest.skip(f"no {binary}: cargo build --workspace --bins --features printworks-local/aws")
    try:
        aws(data, "cloudformation").describe_stacks(StackName=data["stack"]["name"])
    except Exception as e:  # a restarted LocalStack has lost the stacks
        pytest.skip(f"stack {data['stack']['name']} is not deployed on {data['endpoint']} ({e}): scripts/localstack deploy")
    return data


def aws(stack: dict, service: str):
    return boto3.client(
        service,
        endpoint_url=stack["endpoint"],
        region_name=stack["region"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(read_timeout=120, retries={"total_max_attempts": 3}, s3={"addressing_style": "path"}),
    )


def aws_env(stack: dict) -> dict:
    """The environment of the programs this test runs (printworks, the
    edge agent): every AWS call to LocalStack. Inherited endpoints go:
    `scripts/test` exports `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local, for
    the emulator tests), which the SDKs would prefer to `AWS_ENDPOINT_URL`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=stack["endpoint"],
        AWS_REGION=stack["region"],
        AWS_DEFAULT_REGION=stack["region"],
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_EC2_METADATA_DISABLED="true",
        RUST_BACKTRACE="0",
    )
    return env


# -- HTTP --------------------------------------------------------------------------
def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
         connect: str | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    """A request to `url`, connecting to `connect` (host:port) when given: the
    function URLs' host names (`*.lambda-url.<region>.localhost`) are routed
    by LocalStack by their Host header, and resolved here by hand."""
    parts = urllib.parse.urlsplit(url)
    target = connect or parts.netloc
    if connect is None and (parts.hostname or "").endswith("localhost"):
        target = f"127.0.0.1:{parts.port or 80}"
    conn = httpclient.HTTPConnection(target, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    hdrs = {"Host": parts.netloc, **(headers or {})}
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Api:
    """order-api through its function URL (the HTTP API's stand-in)."""

    def __init__(self, stack: dict, key: str):
        self.base = stack["api"]["base_url"]
        self.connect = stack["api"]["connect"]
        self.key = key

    def call(self, method: str, path: str, body=None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        status, h, raw = http(self.base + path, method, data, hdrs, connect=self.connect)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode(errors="replace")
        return status, h, doc


# -- waiting and explaining -----------------------------------------------------------
class Stages:
    def __init__(self):
        self.rows: list[dict] = []
        self.began = time.monotonic()

    def run(self, name: str, fn):
        start = time.monotonic()
        row = {"stage": name, "seconds": None, "ok": False}
        self.rows.append(row)
        try:
            out = fn()
            row["ok"] = True
            return out
        finally:
            row["seconds"] = round(time.monotonic() - start, 2)

    def report(self, **about) -> str:
        total = round(time.monotonic() - self.began, 2)
        lines = [f"{'stage':<44} {'seconds':>8}  result", "-" * 62]
        for r in self.rows:
            lines.append(f"{r['stage']:<44} {r['seconds']:>8.2f}  {'ok' if r['ok'] else 'FAILED'}")
        lines.append("-" * 62)
        lines.append(f"{'total':<44} {total:>8.2f}")
        doc = {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **about,
            "stages": self.rows,
            "total_seconds": total,
        }
        TIMINGS_JSON.write_text(json.dumps(doc, indent=2) + "\n")
        return "\n".join(lines)


def wait_for(what: str, probe, timeout: float = STAGE_TIMEOUT, every: float = 0.5):
    """Polls `probe` until it returns something truthy; fails after `timeout`
    with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last seen: {last!r})")
        time.sleep(every)


def lambda_logs(stack: dict, lines: int = 40) -> str:
    out = []
    logs = Path(stack.get("lambda_logs", STATE / "lambda-logs"))
    for logical, name in sorted(stack["functions"].items()):
        path = logs / f"{name}.log"
        if not path.is_file():
            out.append(f"== {logical}: (no {path})")
            continue
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"== {logical} ({path}), last {len(tail)} lines:\n" + "\n".join(tail))
    return "\n".join(out)


# -- an image render accepts -------------------------------------------------------------
def photo_jpeg() -> bytes:
    """A 1400x2000 photo-like JPEG: poster-20x30 (206x306 mm with bleed) at
    its catalog `min_dpi` 150 needs 1217x1807 pixels (shared/data/catalog.json)."""
    from PIL import Image, ImageDraw

    w, h = 1400, 2000
    img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for i in range(0, w, 100):
        draw.ellipse([i, i, i + 300, i + 300], outline=(200, 40, 40), width=8)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


# -- SES v2 -> SES v1 ------------------------------------------------------------------
class SesV2Translator:
    """SES v2 is not in LocalStack's community edition (its SendEmail answers
    "not included in your current license plan"); SES v1 is, and /_aws/ses
    shows what v1 sent. This server takes SES v2 `SendEmail` with raw MIME
    content (what `SesMailer` sends) and sends the same bytes through SES v1
    `SendRawEmail` to LocalStack, answering v2's `{"MessageId"}`."""

    def __init__(self, stack: dict):
        ses = aws(stack, "ses")
        self.requests: list[dict] = []
        translator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if not self.path.startswith("/v2/email/outbound-emails"):
                    return self._answer(404, {"message": f"not translated: {self.path}"})
                doc = json.loads(body)
                translator.requests.append(doc)
                raw = doc.get("Content", {}).get("Raw", {}).get("Data")
                if raw is None:
                    return self._answer(400, {"message": "only raw content is translated"})
                source = doc["FromEmailAddress"]
                ses.verify_email_identity(EmailAddress=source)
                try:
                    out = ses.send_raw_email(
                        Source=source,
                        Destinations=doc.get("Destination", {}).get("ToAddresses", []),
                        RawMessage={"Data": base64.b64decode(raw)},
                    )
                except Exception as e:  # v1's refusal as v2's
                    return self._answer(400, {"__type": "MessageRejected", "message": str(e)})
                self._answer(200, {"MessageId": out["MessageId"]})

            def _answer(self, status: int, doc: dict):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400 and "__type" in doc:
                    self.send_header("x-amzn-ErrorType", doc["__type"])
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def set_function_env(lam, name: str, changes: dict[str, str | None]) -> dict:
    """Sets (or, with None, removes) variables of a function; returns the
    previous variables. LocalStack starts new environments with them."""
    cfg = lam.get_function_configuration(FunctionName=name)
    before = dict(cfg.get("Environment", {}).get("Variables", {}))
    after = dict(before)
    for k, v in changes.items():
        if v is None:
            after.pop(k, None)
        else:
            after[k] = v
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": after})
    wait_for(
        f"{name}'s configuration update",
        lambda: lam.get_function_configuration(FunctionName=name).get("LastUpdateStatus")
        in ("Successful", None),
        timeout=60,
    )
    return before


def function_url(lam, name: str) -> str:
    try:
        return lam.get_function_url_config(FunctionName=name)["FunctionUrl"]
    except lam.exceptions.ResourceNotFoundException:
        return lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]


# -- the test -------------------------------------------------------------------------
def test_a_b2c_order_from_upload_to_shipped_e_mails(stack, one_at_a_time, tmp_path, capsys):
    endpoint = stack["endpoint"]
    outputs = stack["stack"]["outputs"]
    plant = stack["plants"][PLANT]
    lam, sqs, s3, sm = (aws(stack, s) for s in ("lambda", "sqs", "s3", "secretsmanager"))
    api_fn = stack["functions"]["OrderApiFunction"]
    webhook_fn = stack["functions"]["PaymentWebhookFunction"]
    notify_fn = stack["functions"]["NotifyFunction"]
    table = outputs["OrdersTableName"]
    stages = Stages()
    ctx: dict = {}
    agent = None
    translator = None
    notify_env_before = None
    agent_log = tmp_path / "edge-agent.log"

    def order_now() -> dict:
        status, _, doc = ctx["api"].call("GET", f"/v1/orders/{ctx['order_id']}")
        assert status == 200, (status, doc)
        return doc

    try:
        # -- 0. what the stack needs first: SES v2's stand-in, a tenant ---------
        def setup():
            nonlocal translator, notify_env_before
            translator = SesV2Translator(stack)
            notify_env_before = set_function_env(
                lam, notify_fn, {"AWS_ENDPOINT_URL_SESV2": translator.url}
            )
            env_of_keys = lam.get_function_configuration(FunctionName=api_fn)["Environment"][
                "Variables"
            ]["PRINTWORKS_ENV"]
            tenant = f"e2e-{secrets.token_hex(4)}"
            out = subprocess.run(
                [str(PRINTWORKS), "tenant", "add", "--id", tenant, "--name", "End to end",
                 "--kind", "b2c", "--env", env_of_keys, "--aws-table", table],
                env=aws_env(stack), capture_output=True, text=True, timeout=60,
            )
            if "no AWS support" in out.stderr:
                pytest.fail(
                    f"{PRINTWORKS} has no AWS support (tenant add --aws-table): "
                    "build it with the workspace's test features: "
                    "cargo build --workspace --all-targets"
                )
            assert out.returncode == 0, out.stdout + out.stderr
            key = next(l for l in out.stdout.split() if l.startswith("pw_"))
            ctx.update(tenant=tenant, api=Api(stack, key))

        stages.run("0 setup: tenant, SES v2 translator", setup)

        # -- 1. upload, photo, order ----------------------------------------------
        def place():
            api = ctx["api"]
            photo = photo_jpeg()
            status, _, up = api.call(
                "POST", "/v1/uploads", {"content_type": "image/jpeg", "size_bytes": len(photo)}
            )
            assert status == 201, (status, up)
            put = up["upload"]
            status, _, body = http(put["url"], "PUT", photo, put.get("headers") or {})
            assert status in (200, 204), (status, put["url"], body[:500])
            head = s3.head_object(Bucket=outputs["UploadsBucketName"], Key=up["key"])
            assert head["ContentLength"] == len(photo)
            address = f"erika+{ctx['tenant']}@example.com"
            request = {
                "locale": "de",
                "currency": "EUR",
                "reference": "E2E-1",
                "customer": {"name": "Erika Mustermann", "email": address},
                "shipping": {
                    "method": "standard",
                    # AT: only plant muc ships there (catalog), the plant deployed.
                    "address": {"name": "Erika Mustermann", "line1": "Stephansplatz 1",
                                "postal_code": "1010", "city": "Wien", "country": "AT"},
                },
                "items": [{"sku": "poster-20x30", "quantity": 1, "options": {"finish": "matte"},
                           "images": [{"upload_id": up["upload_id"]}]}],
            }
            idem = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}
            status, h, order = api.call("POST", "/v1/orders", request, idem)
            assert status == 201, (status, order)
            assert order["state"] == "placed", order
            # The same key and body: the stored answer again.
            status, h, again = api.call("POST", "/v1/orders", request, idem)
            assert status == 201 and h.get("idempotent-replayed") == "true", (status, h, again)
            assert again["id"] == order["id"]
            ctx.update(order_id=order["id"], email=address, total=order["totals"]["total"]["amount"])

        stages.run("1 upload + JPEG PUT + order placed (API)", place)

        # -- 2. the payment webhook -----------------------------------------------
        def pay():
            raw = sm.get_secret_value(SecretId=outputs["PaymentWebhookSecretsArn"])["SecretString"]
            doc = json.loads(raw)
            if not doc.get("stripe"):
                doc["stripe"] = [f"whsec_e2e_{secrets.token_hex(16)}"]
                sm.put_secret_value(
                    SecretId=outputs["PaymentWebhookSecretsArn"], SecretString=json.dumps(doc)
                )
                # The function keeps the secrets it read for 5 minutes
                # (payment_webhook::SECRETS_TTL): a warm environment may hold
                # the empty list. A configuration change starts new ones.
                lam.update_function_configuration(
                    FunctionName=webhook_fn, Description=f"secrets {time.time():.0f}"
                )
                wait_for("payment-webhook update", lambda: lam.get_function_configuration(
                    FunctionName=webhook_fn).get("LastUpdateStatus") in ("Successful", None), 60)
            secret = doc["stripe"][0]
            url = function_url(lam, webhook_fn).rstrip("/") + "/v1/payments/stripe/webhook"
            now = int(time.time())
            body = json.dumps({
                "id": f"evt_e2e_{secrets.token_hex(8)}", "object": "event",
                "type": "payment_intent.succeeded", "api_version": "2025-10-29", "created": now,
                "livemode": False,
                "data": {"object": {
                    "id": f"pi_e2e_{secrets.token_hex(8)}", "object": "payment_intent",
                    "status": "succeeded", "amount": ctx["total"],
                    "amount_received": ctx["total"], "currency": "eur",
                    "metadata": {"order_reference": f"{ctx['tenant']}:{ctx['order_id']}"}}},
            }, separators=(",", ":"))
            sig = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
            status, _, answer = http(
                url, "POST", body.encode(),
                {"Content-Type": "application/json", "Stripe-Signature": f"t={now},v1={sig}"},
            )
            assert status == 200, (status, answer[:500])
            # Render may already have moved it on: paid or beyond.
            wait_for("order paid", lambda: order_now()["state"] != "placed" and order_now())
            o = order_now()
            assert o["payment_status"]["status"] == "captured", o

        stages.run("2 Stripe webhook -> paid", pay)

        # -- 3. rendered, print files in the prints bucket ------------------------
        def rendered():
            o = wait_for(
                "order rendered",
                lambda: (o := order_now())["state"] not in ("placed", "paid") and o,
            )
            assert o["state"] != "on_hold", o
            renders = o["items"][0].get("renders") or []
            assert len(renders) == 1, o
            render = renders[0]
            # poster-20x30's rules (catalog): at least min_dpi 150 from 1400x2000.
            assert render["effective_dpi"] >= 150, render
            bucket = outputs["PrintsBucketName"]
            for file in (render["print"], render["preview"]):
                got = s3.get_object(Bucket=bucket, Key=file["key"])["Body"].read()
                assert len(got) == file["bytes"], (file, len(got))
                assert hashlib.sha256(got).hexdigest() == file["sha256"], file
            # The print at the product's output size: 206x306 mm at 300 dpi.
            assert (render["print"]["width"], render["print"]["height"]) == (2433, 3614), render
            ctx["render"] = render

        stages.run("3 stream -> SNS -> render: rendered, prints", rendered)

        # -- 4. dispatched, the job in the plant's queue --------------------------
        def dispatched():
            wait_for(
                "order dispatched",
                lambda: (o := order_now())["state"] in ("dispatched", "in_production", "printed",
                                                        "packed", "shipped") and o,
            )
            jobs_url = plant["outputs"]["JobsQueueUrl"]

            def peek():
                got = sqs.receive_message(
                    QueueUrl=jobs_url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                    WaitTimeSeconds=1,
                ).get("Messages", [])
                return [m for m in got if ctx["order_id"] in m["Body"]]

            msgs = wait_for("the job in plant-muc-jobs", peek, timeout=30)
            job = json.loads(msgs[0]["Body"])
            assert (job["plant"], job["tenant"], job["order_id"]) == (
                PLANT, ctx["tenant"], ctx["order_id"]), job
            assert (job["copies"], job["jobs_in_package"], len(job["files"])) == (1, 1, 1), job
            assert job["files"][0]["sha256"] == ctx["render"]["print"]["sha256"], job["files"]
            ctx["job"] = job

        stages.run("4 dispatch: dispatched, job in plant-muc-jobs", dispatched)

        # -- 5. the edge agent prints, packs, ships -------------------------------
        def shipped():
            nonlocal agent
            state_dir = tmp_path / "agent"
            state_dir.mkdir()
            config = tmp_path / "edge-agent.toml"
            config.write_text(
                f'plant = "{PLANT}"\n'
                f'jobs_queue_url = "{plant["outputs"]["JobsQueueUrl"]}"\n'
                f'events_queue_url = "{outputs["PlantEventsQueueUrl"]}"\n'
                f'region = "{stack["region"]}"\n'
                f'state_dir = "{state_dir}"\n'
                "wait_secs = 2\n"
                "[driver]\nkind = \"simulated\"\ndelay_ms = 300\n"
                "[after_print]\nmode = \"simulate\"\nship_delay_ms = 300\n"
            )
            agent = subprocess.Popen(
                [str(EDGE_AGENT), "--config", str(config), "run"],
                env=aws_env(stack), stdout=open(agent_log, "wb"), stderr=subprocess.STDOUT,
                start_new_session=True,
            )

            def state():
                assert agent.poll() is None, f"edge-agent exited ({agent.returncode})"
                o = order_now()
                return o["state"] == "shipped" and o

            o = wait_for("order shipped", state)
            assert o["state"] == "shipped"
            # The agent's journal: the job taken, printed, packed and shipped.
            out = subprocess.run(
                [str(EDGE_AGENT), "--config", str(config), "status"],
                env=aws_env(stack), capture_output=True, text=True, timeout=30,
            )
            assert out.returncode == 0, out.stdout + out.stderr
            line = next((l for l in out.stdout.splitlines() if ctx["job"]["job_id"] in l), "")
            assert " shipped " in f" {line} ", out.stdout

        stages.run("5 edge-agent -> plant-events -> shipped", shipped)

        # -- 6. the customer's e-mails through SES ------------------------------
        def emails():
            def sent():
                status, _, raw = http(f"{endpoint}/_aws/ses")
                assert status == 200, raw[:300]
                msgs = json.loads(raw).get("messages", [])
                ours = [
                    (m, email.message_from_string(m.get("RawData") or "", policy=email.policy.default))
                    for m in msgs
                ]
                ours = [(m, mime) for m, mime in ours if ctx["email"] in str(mime["To"] or "")]
                return len(ours) >= 3 and ours

            ours = wait_for("placed, paid and shipped e-mails in /_aws/ses", sent)
            assert len(ours) == 3, [mime["Subject"] for _, mime in ours]
            # The order's locale is de: the subjects of notify's German catalog.
            catalog = json.loads((ROOT / "functions/notify/i18n/de.json").read_text())
            want = {t: catalog[f"{t}.subject"] for t in ("order_placed", "order_paid", "order_shipped")}
            seen = {}
            for m, mime in ours:
                # SES v1 keeps a raw message's Source, not its destinations
                # (the translator saw those: the To address alone).
                assert m.get("Source") == SENDER, m.get("Source")
                assert SENDER in str(mime["From"]), mime["From"]
                for template, subject in want.items():
                    pattern = re.escape(subject).replace(re.escape("{number}"), r"(\S+)")
                    if (found := re.fullmatch(pattern, str(mime["Subject"]))):
                        assert found.group(1).lower() in ctx["order_id"], (found.group(1), ctx["order_id"])
                        seen[template] = str(mime["Subject"])
            assert set(seen) == set(want), (seen, [mime["Subject"] for _, mime in ours])
            # Each SES v2 request went to the one customer address alone.
            for r in translator.requests:
                if ctx["email"] in json.dumps(r.get("Destination")):
                    assert r["Destination"] == {"ToAddresses": [ctx["email"]]}, r
            ctx["emails"] = seen

        stages.run("6 notify -> SES: placed, paid, shipped", emails)

        # -- 7. no dead letters ---------------------------------------------------
        def no_dead_letters():
            urls = [
                r["physical_id"]
                for s in [stack["stack"], *stack["plants"].values()]
                for r in s["resources"].values()
                if r["type"] == "AWS::SQS::Queue"
                and re.search(r"deadletter|dlq", r["physical_id"], re.I)
            ]
            assert len(urls) >= 5, urls
            full = {}
            for url in urls:
                a = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                n = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
                if n:
                    peeked = sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=0
                    ).get("Messages", [])
                    full[url] = {"messages": n, "some": [m["Body"][:400] for m in peeked]}
            assert not full, "dead letters:\n" + json.dumps(full, indent=1)

        stages.run("7 no dead letters (stack + plant)", no_dead_letters)

        # -- 8. an operator reprints the parcel; it ships again ------------------
        def reprint():
            env_of_keys = lam.get_function_configuration(FunctionName=api_fn)["Environment"][
                "Variables"
            ]["PRINTWORKS_ENV"]
            operator = f"cs-{secrets.token_hex(3)}"
            out = subprocess.run(
                [str(PRINTWORKS), "operator", "add", "--id", operator, "--role", "support",
                 "--env", env_of_keys, "--aws-table", table],
                env=aws_env(stack), capture_output=True, text=True, timeout=60,
            )
            assert out.returncode == 0, out.stdout + out.stderr
            key = next(l for l in out.stdout.split() if l.startswith("pwop_"))
            ops = Api({"api": stack["ops_api"]}, key)
            ctx["ops"] = ops
            path = f"/v1/ops/orders/{ctx['order_id']}"
            # A tenant's key is not an operator's.
            status, _, doc = Api({"api": stack["ops_api"]}, ctx["api"].key).call("GET", path)
            assert status == 401, (status, doc)
            status, _, shown = ops.call("GET", path)
            assert status == 200, (status, shown)
            assert shown["order"]["tenant"] == ctx["tenant"]
            assert "reprint" in shown["allowed_actions"], shown["allowed_actions"]
            job_id = ctx["job"]["job_id"]
            body = {"jobs": [job_id], "reason": "parcel damaged in transit"}
            status, _, acted = ops.call("POST", f"{path}/reprint", body, {"Idempotency-Key": "e2e-reprint"})
            assert status == 200, (status, acted)
            assert acted["order"]["attempt"] == 2 and acted["action"]["operator"] == operator
            # The same key again: the first answer, nothing done twice.
            status, headers, again = ops.call("POST", f"{path}/reprint", body, {"Idempotency-Key": "e2e-reprint"})
            assert (status, headers.get("idempotent-replayed")) == (200, "true"), (status, again)

            def shipped_again():
                assert agent.poll() is None, f"edge-agent exited ({agent.returncode})"
                o = order_now()
                return o["state"] == "shipped" and o.get("attempt") == 2 and o

            wait_for("the reprint shipped", shipped_again)
            status, _, shown = ops.call("GET", path)
            assert status == 200, (status, shown)
            attempts = {a["attempt"]: a["jobs"] for a in shown["attempts"]}
            assert sorted(attempts) == [1, 2], shown["attempts"]
            assert [j["status"] for j in attempts[2]] == ["shipped"], attempts
            assert [(j["job_id"], j["current"]) for j in attempts[1]] == [(job_id, False)], attempts
            assert [a["action"] for a in shown["actions"]] == ["reprint"]
            # The customer hears of it in German: the reprint's e-mail, then
            # a second shipped e-mail.
            catalog = json.loads((ROOT / "functions/notify/i18n/de.json").read_text())
            resumed = re.escape(catalog["order_resumed.subject"]).replace(re.escape("{number}"), r"\S+")
            shipped = re.escape(catalog["order_shipped.subject"]).replace(re.escape("{number}"), r"\S+")

            def subjects():
                status, _, raw = http(f"{endpoint}/_aws/ses")
                assert status == 200, raw[:300]
                found = [
                    str(email.message_from_string(m.get("RawData") or "", policy=email.policy.default)["Subject"])
                    for m in json.loads(raw).get("messages", [])
                    if ctx["email"] in (m.get("RawData") or "")
                ]
                ok = sum(bool(re.fullmatch(resumed, s)) for s in found) == 1 and sum(
                    bool(re.fullmatch(shipped, s)) for s in found
                ) == 2
                return ok and found

            wait_for("the reprint's e-mail and the second shipped e-mail", subjects)
            no_dead_letters()

        stages.run("8 operator API: reprint ships again", reprint)

        # -- 9. a dead letter looked at and redriven; handled, it changes nothing --
        def redrive():
            resources = stack["stack"]["resources"]
            dlq = resources["DispatchDeadLetterQueue"]["physical_id"]
            source = resources["DispatchQueue"]["physical_id"]
            # The order's first OrderRendered, as if dispatch had given up on it.
            stale = {
                "id": f"evt_{uuid.uuid4().hex}", "type": "OrderRendered",
                "order_id": ctx["order_id"], "tenant": ctx["tenant"],
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "data": {"attempt": 1},
            }
            sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(stale))
            ops = ctx["ops"]
            status, _, listed = ops.call("GET", "/v1/ops/dlq")
            assert status == 200, (status, listed)
            depths = {q["queue"]: q["depth"] for q in listed["queues"]}
            assert sorted(depths) == ["dispatch", "notify", "plant-events", "render", "stats"], depths
            assert depths["dispatch"] == 1, depths
            status, _, shown = ops.call("GET", "/v1/ops/dlq/dispatch")
            assert status == 200, (status, shown)
            assert [m["message"].get("event_id") for m in shown["messages"]] == [stale["id"]], shown
            before = order_now()
            headers = {"Idempotency-Key": "e2e-redrive"}
            status, _, moved = ops.call("POST", "/v1/ops/dlq/dispatch/redrive", None, headers)
            assert status == 200, (status, moved)
            assert moved["redrive"].get("task"), moved
            status, replay_headers, again = ops.call("POST", "/v1/ops/dlq/dispatch/redrive", None, headers)
            assert (status, replay_headers.get("idempotent-replayed")) == (200, "true"), (status, again)
            assert again == moved

            def drained():
                n = 0
                for url in (dlq, source):
                    a = sqs.get_queue_attributes(
                        QueueUrl=url,
                        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                    )["Attributes"]
                    n += int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
                return n == 0

            wait_for("the dead letter moved back and handled by dispatch", drained)
            after = order_now()
            assert (after["state"], after.get("attempt")) == (before["state"], before.get("attempt")), after
            assert after["updated_at"] == before["updated_at"], (before, after)
            no_dead_letters()

        stages.run("9 operator API: a dead letter redriven changes nothing", redrive)

        def statistics():
            # The stats function, on its queue from the topic, counted the
            # order as it happened: paid once, its lead time once (the
            # reprint shipped again, the order is still one), in DynamoDB.
            ops = ctx["ops"]
            today = time.strftime("%Y-%m-%d", time.gmtime())
            query = f"/v1/ops/stats?from={today}&to={today}&tenant={ctx['tenant']}"

            def counted():
                status, _, report = ops.call("GET", query)
                assert status == 200, (status, report)
                return report["lead_times"] and report

            report = wait_for("the statistics counted the order", counted)
            assert [(l["orders"], l["currency"]) for l in report["revenue"]] == [(1, "EUR")], report
            line = report["revenue"][0]
            assert line["net"] + line["vat"] == line["gross"] > 0, line
            assert [(l["plant"], l["orders"]) for l in report["lead_times"]] == [(PLANT, 1)], report
            no_dead_letters()

        stages.run("10 statistics: the stats function counted the order once", statistics)
    except BaseException:
        print("\n==== the order ====")
        if "order_id" in ctx:
            try:
                print(json.dumps(order_now(), indent=1)[:4000])
            except BaseException as e:  # noqa: BLE001
                print(f"(not readable: {e})")
        if agent_log.is_file():
            print("==== edge-agent ====\n" + agent_log.read_text(errors="replace")[-4000:])
        if translator is not None:
            print(f"==== SES v2 requests translated: {len(translator.requests)}")
        print("==== Lambda logs ====\n" + lambda_logs(stack))
        raise
    finally:
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        if notify_env_before is not None:
            set_function_env(lam, notify_fn, {"AWS_ENDPOINT_URL_SESV2": None})
        if translator is not None:
            translator.close()
        table = stages.report(order_id=ctx.get("order_id"))
        with capsys.disabled():  # shown without -s too
            print("\n" + table)
