"""HostRuntime against small fake `bootstrap` programs that speak the Lambda
Runtime API as a custom runtime does (Python stands in for the Rust
binaries; the real ones are exercised by the deployment contract test)."""

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from printworks_lambda_executor.runtime_api import HostRuntime, StartupFailed

CLIENT = """\
#!{python}
import json, os, sys, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
def post(path, body):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), method="POST")
    return urllib.request.urlopen(req).status
{init}
while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
        event = json.loads(r.read())
{handle}
"""


def bootstrap(tmp_path: Path, handle: str, init: str = "") -> Path:
    code = tmp_path / "code"
    code.mkdir()
    src = CLIENT.format(
        python=sys.executable,
        init=textwrap.dedent(init),
        handle=textwrap.indent(textwrap.dedent(handle), "    "),
    )
    path = code / "bootstrap"
    path.write_text(src)
    path.chmod(0o644)  # as a zip may leave it: start() makes it executable
    return code


ECHO = """
print("handling", rid, flush=True)
post(f"/invocation/{rid}/response", {"echo": event, "env": os.environ.get("ORDERS_TABLE"),
     "task_root": os.environ["LAMBDA_TASK_ROOT"], "left_ms": deadline})
"""


@pytest.fixture
def runtimes():
    started = []
    yield started
    for rt in started:
        rt.stop()


def test_invokes_and_returns_the_response_and_logs(tmp_path, runtimes):
    code = bootstrap(tmp_path, ECHO)
    rt = HostRuntime(code, {"ORDERS_TABLE": "orders"}, timeout_seconds=5, name="echo")
    runtimes.append(rt)
    rt.start(startup_timeout=10)
    for n in range(3):
        res = rt.invoke(json.dumps({"n": n}).encode(), request_id=f"req-{n}")
        assert not res.is_error
        body = json.loads(res.payload)
        assert body["echo"] == {"n": n}
        assert body["env"] == "orders"
        assert body["task_root"] == str(code)
        assert body["left_ms"] > time.time() * 1000
        assert f"handling req-{n}" in res.logs
        assert f"req-{n - 1}" not in res.logs or n == 0


def test_error_posts_are_error_results(tmp_path, runtimes):
    code = bootstrap(
        tmp_path,
        'post(f"/invocation/{rid}/error", {"errorType": "Boom", "errorMessage": "no"})',
    )
    rt = HostRuntime(code, {}, timeout_seconds=5)
    runtimes.append(rt)
    rt.start(startup_timeout=10)
    res = rt.invoke(b"{}")
    assert res.is_error
    assert json.loads(res.payload)["errorType"] == "Boom"


def test_a_configuration_error_fails_the_start_with_the_output(tmp_path):
    code = bootstrap(
        tmp_path,
        "pass",
        init='print("missing variable ORDERS_TABLE", flush=True); sys.exit(3)',
    )
    rt = HostRuntime(code, {}, timeout_seconds=5)
    with pytest.raises(StartupFailed) as e:
        rt.start(startup_timeout=10)
    assert "exited with 3" in str(e.value)
    assert "missing variable ORDERS_TABLE" in e.value.logs


def test_an_init_error_post_fails_the_start(tmp_path):
    code = bootstrap(
        tmp_path,
        "pass",
        init='post("/init/error", {"errorType": "Config", "errorMessage": "bad"}); import time; time.sleep(30)',
    )
    rt = HostRuntime(code, {}, timeout_seconds=5)
    with pytest.raises(StartupFailed) as e:
        rt.start(startup_timeout=10)
    assert json.loads(e.value.payload)["errorType"] == "Config"


def test_a_crash_during_an_invocation_is_an_error_result(tmp_path, runtimes):
    code = bootstrap(tmp_path, "os._exit(101)")
    rt = HostRuntime(code, {}, timeout_seconds=5)
    runtimes.append(rt)
    rt.start(startup_timeout=10)
    res = rt.invoke(b"{}")
    assert res.is_error
    assert json.loads(res.payload)["errorType"] == "Runtime.ExitError"
    # the environment is gone: later invocations fail at once
    assert rt.invoke(b"{}").is_error


def test_an_overrun_is_killed_as_a_timeout(tmp_path, runtimes):
    code = bootstrap(tmp_path, "import time; time.sleep(60)")
    rt = HostRuntime(code, {}, timeout_seconds=0.5)
    runtimes.append(rt)
    rt.start(startup_timeout=10)
    began = time.monotonic()
    res = rt.invoke(b"{}")
    assert time.monotonic() - began < 5
    assert res.is_error
    assert json.loads(res.payload)["errorType"] == "Sandbox.Timedout"
    assert rt.process.poll() is not None


def test_no_bootstrap_is_a_startup_failure(tmp_path):
    (tmp_path / "code").mkdir()
    with pytest.raises(StartupFailed):
        HostRuntime(tmp_path / "code", {}, timeout_seconds=1).start(startup_timeout=2)


def test_stop_during_a_waiting_next_ends_the_process(tmp_path):
    code = bootstrap(tmp_path, ECHO)
    rt = HostRuntime(code, {}, timeout_seconds=5)
    rt.start(startup_timeout=10)
    rt.stop()
    assert rt.process.poll() is not None
    rt.stop()  # twice is harmless
