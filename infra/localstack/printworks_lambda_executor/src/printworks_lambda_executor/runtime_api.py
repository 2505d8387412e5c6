"""A Lambda function's `bootstrap` run as a host process, served the Lambda
Runtime API (2018-06-01) on a loopback port of its own.

This module knows nothing of LocalStack: `HostRuntime` takes the folder with
`bootstrap`, the environment and a timeout, and offers `start`, `invoke`
and `stop`. `executor.py` adapts it to LocalStack's `RuntimeExecutor`.

What it does, as Lambda's own runtime interface does for a custom runtime
(`provided.al2023`):

- `start` runs `<code>/bootstrap` with the function's environment plus
  `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>` and `LAMBDA_TASK_ROOT=<code>`,
  and returns once the process asks for its first event
  (`GET /runtime/invocation/next`): its configuration was read and it is
  ready. It raises `StartupFailed` if the process posts
  `/runtime/init/error` or exits first, with the process's output.
- `invoke` hands one event to the waiting `next` call and returns the
  `/response` or `/error` the process posts, with the lines the process
  printed meanwhile. A process that exits during an invocation, or overruns
  the timeout (it is then killed, as Lambda does), gives an error result.
- `stop` kills the process and the server.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API_PREFIX = "/2018-06-01/runtime"


class StartupFailed(Exception):
    """The process reported an init error, exited or never became ready."""

    def __init__(self, message: str, payload: bytes = b"", logs: str = ""):
        super().__init__(message)
        self.payload = payload
        self.logs = logs


@dataclass
class Result:
    request_id: str
    payload: bytes
    is_error: bool
    logs: str


@dataclass
class _Invocation:
    request_id: str
    payload: bytes
    function_arn: str
    trace_id: str
    deadline_ms: int
    done: threading.Event
    result: Result | None = None


def error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class HostRuntime:
    def __init__(
        self,
        code_dir: Path,
        env: dict[str, str],
        timeout_seconds: float,
        name: str = "function",
        log_file: Path | None = None,
    ):
        self.code_dir = Path(code_dir)
        self.env = {k: str(v) for k, v in env.items()}
        self.timeout_seconds = timeout_seconds
        self.name = name
        self.log_file = log_file
        self.process: subprocess.Popen | None = None
        self._events: queue.Queue[_Invocation | None] = queue.Queue()
        self._current: _Invocation | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._exited = threading.Event()
        self._init_error: bytes | None = None
        self._stopping = False
        self._serving = False
        self._log_lines: list[str] = []
        self._log_lock = threading.Lock()
        # `_drained`: the output pump tells an invocation that every byte
        # written before the request for it (`_flush_asked`) is in
        # `_log_lines` (see `_wait_for_output`).
        self._drain = threading.Condition()
        self._flush_asked = 0
        self._drained = 0
        self._pump_done = False
        self._server = _make_server(self)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, name=f"runtime-api-{name}", daemon=True
        )

    # -- address ------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def runtime_api(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle ----------------------------------------------------------
    def start(self, startup_timeout: float = 30.0) -> None:
        bootstrap = self.code_dir / "bootstrap"
        if not bootstrap.is_file():
            raise StartupFailed(f"{bootstrap} does not exist: the zip has no bootstrap")
        mode = bootstrap.stat().st_mode
        if not mode & 0o111:
            # zipfile extraction may drop the executable bit.
            bootstrap.chmod(mode | 0o755)
        with self._lock:
            self._serving = True
        self._server_thread.start()
        env = {
            # A host process still needs a PATH; nothing else of ours leaks in.
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **self.env,
            "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
            "LAMBDA_TASK_ROOT": str(self.code_dir),
        }
        self.process = subprocess.Popen(
            [str(bootstrap)],
            cwd=self.code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._pump_output, daemon=True).start()
        threading.Thread(target=self._watch_exit, daemon=True).start()
        deadline = time.monotonic() + startup_timeout
        while not self._ready.is_set():
            if self._init_error is not None:
                self.stop()
                raise StartupFailed(
                    f"{self.name}: init error", self._init_error, self.logs()
                )
            if self._exited.is_set():
                code = self.process.returncode
                self.stop()
                raise StartupFailed(
                    f"{self.name}: bootstrap exited with {code} before asking for an event",
                    error_payload("Runtime.ExitError", f"exit status {code}"),
                    self.logs(),
                )
            if self._stopping:
                raise StartupFailed(f"{self.name}: stopped during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise StartupFailed(
                    f"{self.name}: not ready after {startup_timeout:.0f} s", logs=self.logs()
                )
            self._ready.wait(0.05)

    def stop(self) -> None:
        self._stopping = True
        proc = self.process
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        with self._lock:
            current = self._current
        if current is not None and not current.done.is_set():
            current.result = Result(
                current.request_id,
                error_payload("Runtime.ExitError", "the execution environment was stopped"),
                True,
                self.logs(),
            )
            current.done.set()
        self._events.put(None)  # releases a waiting `next`
        with self._lock:
            serving, self._serving = self._serving, False
        if serving:
            self._server.shutdown()
            self._server.server_close()

    # -- invocations ----------------------------------------------------------
    def invoke(
        self,
        payload: bytes,
        request_id: str | None = None,
        function_arn: str = "",
        trace_id: str = "",
    ) -> Result:
        request_id = request_id or str(uuid.uuid4())
        deadline = time.time() + self.timeout_seconds
        inv = _Invocation(
            request_id=request_id,
            payload=payload,
            function_arn=function_arn,
            trace_id=trace_id,
            deadline_ms=int(deadline * 1000),
            done=threading.Event(),
        )
        with self._log_lock:
            first_line = len(self._log_lines)
        if self._exited.is_set():
            return Result(
                request_id,
                error_payload("Runtime.ExitError", "the process has exited"),
                True,
                self.logs(),
            )
        with self._lock:
            self._current = inv
        self._events.put(inv)
        finished = inv.done.wait(self.timeout_seconds + 0.5)
        with self._lock:
            self._current = None
        if not finished:
            # Lambda ends an overrunning invocation with its environment.
            self.stop()
            return Result(
                request_id,
                error_payload(
                    "Sandbox.Timedout",
                    f"Task timed out after {self.timeout_seconds:.2f} seconds",
                ),
                True,
                self.logs(first_line),
            )
        assert inv.result is not None
        self._wait_for_output()
        inv.result.logs = self._framed(inv, self.logs(first_line))
        return inv.result

    def _wait_for_output(self, timeout: float = 2.0) -> None:
        """Waits until what the process printed before its response is in
        `_log_lines`: the process wrote it before it posted the response,
        so once the pump, asked after that, finds the pipe empty, it has
        read and kept all of it (its next look at the pipe begins after
        the ask)."""
        with self._drain:
            self._flush_asked += 1
            asked = self._flush_asked
            self._drain.wait_for(lambda: self._drained >= asked or self._pump_done, timeout)

    def _framed(self, inv: _Invocation, output: str) -> str:
        """The invocation's output between Lambda's START, END and REPORT lines."""
        took_ms = (time.time() - (inv.deadline_ms / 1000 - self.timeout_seconds)) * 1000
        return (
            f"START RequestId: {inv.request_id} Version: $LATEST\n"
            f"{output}"
            f"END RequestId: {inv.request_id}\n"
            f"REPORT RequestId: {inv.request_id}\tDuration: {took_ms:.2f} ms\n"
        )

    # -- logs -----------------------------------------------------------------
    def logs(self, first_line: int = 0) -> str:
        with self._log_lock:
            return "".join(self._log_lines[first_line:])

    def _pump_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        sink = open(self.log_file, "ab") if self.log_file else None
        partial = b""

        def keep(lines: list[bytes]) -> None:
            with self._log_lock:
                self._log_lines.extend(l.decode("utf-8", "replace") + "\n" for l in lines)

        try:
            while True:
                with self._drain:
                    asked = self._flush_asked
                readable, _, _ = select.select([fd], [], [], 0.05)
                if not readable:
                    # Nothing to read now: all written before `asked` is kept.
                    with self._drain:
                        self._drained = max(self._drained, asked)
                        self._drain.notify_all()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                if sink:
                    sink.write(chunk)
                    sink.flush()
                *lines, partial = (partial + chunk).split(b"\n")
                keep(lines)
        finally:
            if partial:
                keep([partial])
            if sink:
                sink.close()
            with self._drain:
                self._pump_done = True
                self._drain.notify_all()

    def _watch_exit(self) -> None:
        assert self.process is not None
        code = self.process.wait()
        self._exited.set()
        with self._lock:
            current = self._current
        if current is not None and not current.done.is_set():
            current.result = Result(
                current.request_id,
                error_payload("Runtime.ExitError", f"the process exited with {code}"),
                True,
                "",
            )
            current.done.set()

    # -- Runtime API handlers (called from the server's threads) --------------
    def _next(self) -> _Invocation | None:
        self._ready.set()
        while True:
            try:
                inv = self._events.get(timeout=0.5)
            except queue.Empty:
                if self._stopping:
                    return None
                continue
            return inv

    def _complete(self, request_id: str, body: bytes, is_error: bool) -> bool:
        with self._lock:
            current = self._current
        if current is None or current.request_id != request_id or current.done.is_set():
            return False
        current.result = Result(request_id, body, is_error, "")
        current.done.set()
        return True

    def _init_failed(self, body: bytes) -> None:
        self._init_error = body or error_payload("Runtime.InitError", "init error")


def _make_server(runtime: HostRuntime) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base's name
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
            try:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The process was killed while it waited (a stop): no one
                # is left to answer.
                pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self):
            if self.path != f"{API_PREFIX}/invocation/next":
                return self._reply(HTTPStatus.NOT_FOUND, b'{"errorMessage":"not found"}')
            inv = runtime._next()
            if inv is None:
                return self._reply(HTTPStatus.GONE, b'{"errorMessage":"shutting down"}')
            headers = {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
            }
            if inv.trace_id:
                headers["Lambda-Runtime-Trace-Id"] = inv.trace_id
            self._reply(HTTPStatus.OK, inv.payload, headers)

        def do_POST(self):
            body = self._body()
            parts = self.path[len(API_PREFIX) :].strip("/").split("/")
            if self.path.startswith(API_PREFIX) and parts == ["init", "error"]:
                runtime._init_failed(body)
                return self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
            if (
                self.path.startswith(API_PREFIX)
                and len(parts) == 3
                and parts[0] == "invocation"
                and parts[2] in ("response", "error")
            ):
                if runtime._complete(parts[1], body, parts[2] == "error"):
                    return self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
                return self._reply(
                    HTTPStatus.BAD_REQUEST, b'{"errorMessage":"unknown or finished request id"}'
                )
            self._reply(HTTPStatus.NOT_FOUND, b'{"errorMessage":"not found"}')

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)
