"""Contract checks that only a deployment shows, run on the stacks that
`scripts/localstack deploy` put on LocalStack (target/localstack/stack.json):

- every function starts: its configuration is complete (a missing or bad
  variable fails the process before it asks the Runtime API for an event,
  which the executor reports as an error), shown by invoking each with a
  harmless event it answers without a function error;
- every queue's visibility timeout, redrive (receive limit and dead-letter
  queue) and consumer are what shared/src/topology.rs declares, read from
  SQS and Lambda themselves, not from the template;
- the schedule invokes the notify sweep: the deployed EventBridge rule's
  schedule, target and input, and that input, sent to the function the
  rule names, is taken as a sweep (notify refuses any other shape).

Run by `scripts/localstack check`; every test skips, saying why, when
there is no stack.json or LocalStack is not answering.
"""

from __future__ import annotations

import json
import os
import time
import re
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[3]
STACK_JSON = ROOT / "target" / "localstack" / "stack.json"
TOPOLOGY = ROOT / "shared" / "src" / "topology.rs"


@pytest.fixture(scope="session")
def stack() -> dict:
    if not STACK_JSON.is_file():
        pytest.skip(f"no {STACK_JSON.relative_to(ROOT)}: run scripts/localstack start and deploy")
    data = json.loads(STACK_JSON.read_text())
    try:
        urllib.request.urlopen(data["endpoint"] + "/_localstack/health", timeout=5).read()
    except OSError as e:
        pytest.skip(f"LocalStack at {data['endpoint']} does not answer ({e}): scripts/localstack start")
    return data


def aws(stack: dict, service: str):
    return boto3.client(
        service,
        endpoint_url=stack["endpoint"],
        region_name=stack["region"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(read_timeout=120, retries={"total_max_attempts": 1}),
    )


# -- what the code declares ------------------------------------------------------
def queue_specs() -> dict[str, dict]:
    """The `QueueSpec` constants of shared/src/topology.rs."""
    src = TOPOLOGY.read_text()
    specs = {}
    for m in re.finditer(r"pub const (\w+): QueueSpec = QueueSpec \{(.*?)\n\};", src, re.S):
        name, body = m.group(1), m.group(2)

        def field(pattern: str) -> str | None:
            f = re.search(pattern, body, re.S)
            return f.group(1) if f else None

        consumer = re.search(
            r'consumer: Some\(Consumer \{\s*function: "(\w+)",\s*batch_size: (\d+)', body
        )
        specs[name] = {
            "resource": field(r'\n    resource: "(\w+)"'),
            "dead_letter_resource": field(r'dead_letter_resource: "(\w+)"'),
            "visibility_timeout": int(field(r"visibility_timeout: Duration::from_secs\((\d+)\)")),
            "max_receive_count": int(field(r"max_receive_count: (\d+)")),
            "consumer": (consumer.group(1), int(consumer.group(2))) if consumer else None,
        }
    assert set(specs) >= {"RENDER", "DISPATCH", "NOTIFY", "PLANT_EVENTS", "PLANT_JOBS"}, specs
    return specs


SPECS = queue_specs()
STACK_QUEUES = ["RENDER", "DISPATCH", "NOTIFY", "PLANT_EVENTS"]


def queue_url(stack: dict, spec_name: str, logical_id: str) -> str:
    if spec_name == "PLANT_JOBS":
        resources = next(iter(stack["plants"].values()))["resources"]
    else:
        resources = stack["stack"]["resources"]
    return resources[logical_id]["physical_id"]


# -- queues ------------------------------------------------------------------------
@pytest.mark.parametrize("spec_name", STACK_QUEUES + ["PLANT_JOBS"])
def test_queue_visibility_and_redrive_are_the_codes(stack, spec_name):
    spec = SPECS[spec_name]
    sqs = aws(stack, "sqs")
    url = queue_url(stack, spec_name, spec["resource"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["VisibilityTimeout"]) == spec["visibility_timeout"], attrs
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == spec["max_receive_count"], redrive
    dlq_url = queue_url(stack, spec_name, spec["dead_letter_resource"])
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    assert redrive["deadLetterTargetArn"] == dlq_arn


@pytest.mark.parametrize("spec_name", [n for n in STACK_QUEUES if SPECS[n]["consumer"]])
def test_queue_consumer_and_batch_size_are_the_codes(stack, spec_name):
    spec = SPECS[spec_name]
    function, batch_size = spec["consumer"]
    sqs, lam = aws(stack, "sqs"), aws(stack, "lambda")
    url = queue_url(stack, spec_name, spec["resource"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    mappings = lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert len(mappings) == 1, mappings
    mapping = mappings[0]
    assert mapping["FunctionArn"].split(":")[6] == stack["functions"][function]
    assert mapping["BatchSize"] == batch_size
    assert mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
    assert mapping["State"] in ("Enabled", "Enabling", "Creating")


# -- every function starts -------------------------------------------------------------
def http_event(method: str, path: str, body: str = "") -> dict:
    """An API Gateway / function URL payload 2.0 event."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "localhost"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "localstack",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "contract-check",
            },
            "requestId": "contract-check",
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:00:00:00 +0000",
            "timeEpoch": 1796428800000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


HARMLESS = {
    # No API key: 401 from the handler, after its configuration was read.
    "OrderApiFunction": http_event("GET", "/v1/products"),
    # No operator key: 401 from the handler.
    "OpsApiFunction": http_event("GET", "/v1/ops/orders/ord_00000000000000000000000000000000"),
    # Unsigned: refused by the handler before anything is written.
    "PaymentWebhookFunction": http_event("POST", "/v1/payments/stripe", "{}"),
    "EventsPublisherFunction": {"Records": []},
    "RenderFunction": {"Records": []},
    "DispatchFunction": {"Records": []},
    "ProductionEventsFunction": {"Records": []},
    "NotifyFunction": {"Records": []},
    "StatsFunction": {"Records": []},
    # What its schedule sends: one run over an empty table.
    "ReconcilerFunction": {"reconcile": "all"},
}


def function_output(stack: dict, name: str, lines: int = 20) -> str:
    path = Path(stack.get("lambda_logs", "")) / f"{name}.log"
    if not path.is_file():
        return f"(no {path})"
    return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])


def test_every_function_of_the_stack_is_checked(stack):
    assert set(stack["functions"]) == set(HARMLESS)


@pytest.mark.parametrize("logical_id", sorted(HARMLESS))
def test_every_function_starts_and_answers(stack, logical_id):
    lam = aws(stack, "lambda")
    name = stack["functions"][logical_id]
    try:
        out = lam.invoke(FunctionName=name, Payload=json.dumps(HARMLESS[logical_id]).encode())
    except lam.exceptions.ClientError as e:
        # A process that ends before its first `next` (a configuration
        # error) fails the environment's start: LocalStack answers the
        # Invoke with a ServiceException (AWS: FunctionError Runtime.ExitError).
        pytest.fail(f"{logical_id} did not start: {e}\nits output:\n{function_output(stack, name)}")
    payload = out["Payload"].read().decode()
    assert "FunctionError" not in out, (
        f"{logical_id} failed: {payload}\nits output:\n{function_output(stack, name)}"
    )
    body = json.loads(payload)
    if HARMLESS[logical_id].get("version") == "2.0":
        # The handler answered over HTTP: a client error, not a 5xx.
        assert 400 <= body["statusCode"] < 500, body
    elif logical_id == "ReconcilerFunction":
        # The run's report: its idle-index queries answered, nothing to do.
        assert body["looked_at"] == 0 and body["failed"] == 0, body
    else:
        assert body == {"batchItemFailures": []}, body


def test_the_api_stand_in_reaches_order_api(stack):
    api = stack["api"]
    req = urllib.request.Request(
        f"http://{api['connect']}/v1/products", headers={"Host": api["host"]}
    )
    try:
        status = urllib.request.urlopen(req, timeout=60).status
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 401, "no API key: the handler's 401"


def test_the_deployed_operator_api_serves_the_console_and_says_live_needs_polling(stack):
    """On AWS the console is served by the operator API's function (the
    HTTP API routes GET /console* to it), with its policy; the Lambda
    cannot stream, so the live route says to poll."""
    ops = stack["ops_api"]

    def get(path):
        req = urllib.request.Request(f"http://{ops['connect']}{path}", headers={"Host": ops["host"]})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    status, headers, page = get("/console")
    assert status == 200, page[:300]
    policy = {k.lower(): v for k, v in headers.items()}["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy, policy
    assert b'src="/console/console.js"' in page
    status, _, script = get("/console/console.js")
    assert status == 200 and b"/v1/ops/live" in script
    status, _, body = get("/v1/ops/live")
    assert status == 401, body  # no operator key: refused before anything
    assert json.loads(body)["error"]["code"] == "unauthorized"


# -- the schedule -----------------------------------------------------------------------
def schedule_of(stack: dict, logical_id: str) -> str:
    """The name of the schedule rule whose target is the function `logical_id`."""
    events = aws(stack, "events")
    function = stack["functions"][logical_id]
    rules = [
        r["physical_id"]
        for r in stack["stack"]["resources"].values()
        if r["type"] == "AWS::Events::Rule"
    ]
    assert len(rules) == 2, rules
    found = [
        name
        for name in rules
        if any(
            t["Arn"].split(":")[6] == function
            for t in events.list_targets_by_rule(Rule=name)["Targets"]
        )
    ]
    assert len(found) == 1, (logical_id, rules)
    return found[0]


def test_the_schedule_invokes_the_reconciler_every_five_minutes(stack):
    events, lam = aws(stack, "events"), aws(stack, "lambda")
    rule_name = schedule_of(stack, "ReconcilerFunction")
    rule = events.describe_rule(Name=rule_name)
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    assert rule["State"] == "ENABLED"
    target = events.list_targets_by_rule(Rule=rule_name)["Targets"][0]
    out = lam.invoke(
        FunctionName=stack["functions"]["ReconcilerFunction"], Payload=target["Input"].encode()
    )
    payload = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, payload
    assert payload["failed"] == 0, payload


def test_the_schedule_invokes_the_notify_sweep(stack):
    events, lam = aws(stack, "events"), aws(stack, "lambda")
    rule_name = schedule_of(stack, "NotifyFunction")
    rule = events.describe_rule(Name=rule_name)
    assert rule["ScheduleExpression"] == "rate(15 minutes)"
    assert rule["State"] == "ENABLED"
    targets = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    assert len(targets) == 1, targets
    target = targets[0]
    notify = stack["functions"]["NotifyFunction"]
    assert target["Arn"].split(":")[6] == notify
    assert json.loads(target["Input"]) == {"sweep": "deferred"}
    # What the rule sends, the function takes as the sweep.
    out = lam.invoke(FunctionName=notify, Payload=target["Input"].encode())
    payload = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, payload
    assert "swept" in payload, payload


@pytest.mark.skipif(
    os.environ.get("LOCALSTACK_WAIT_SCHEDULE") != "1",
    reason="waits up to two minutes for a schedule to fire: LOCALSTACK_WAIT_SCHEDULE=1",
)
def test_eventbridge_delivers_the_sweep_on_a_schedule(stack):
    """The deployed rule fires every 15 minutes, too long to wait: a copy of it
    at rate(1 minute), with the deployed rule's own target and input, shows
    that EventBridge's schedule reaches the function (its invocation appears
    in the function's log group)."""
    rule_name = schedule_of(stack, "NotifyFunction")
    events, logs = aws(stack, "events"), aws(stack, "logs")
    target = events.list_targets_by_rule(Rule=rule_name)["Targets"][0]
    notify = stack["functions"]["NotifyFunction"]
    probe = f"{rule_name}-probe"
    began_ms = int(time.time() * 1000)
    events.put_rule(Name=probe, ScheduleExpression="rate(1 minute)", State="ENABLED")
    events.put_targets(
        Rule=probe, Targets=[{"Id": "sweep", "Arn": target["Arn"], "Input": target["Input"]}]
    )
    try:
        deadline = time.time() + 130
        seen = []
        while time.time() < deadline and not seen:
            time.sleep(5)
            try:
                found = logs.filter_log_events(
                    logGroupName=f"/aws/lambda/{notify}",
                    startTime=began_ms,
                    filterPattern="START",
                )
                seen = found["events"]
            except logs.exceptions.ResourceNotFoundException:
                pass
        assert seen, "no invocation of the notify function within 130 s of a rate(1 minute) rule"
    finally:
        events.remove_targets(Rule=probe, Ids=["sweep"])
        events.delete_rule(Name=probe)
