"""LocalStack's `RuntimeExecutor` on `HostRuntime`: the function's zip is
unpacked by LocalStack (`prepare_for_execution`) and its `bootstrap` runs as
a process of this machine, next to LocalStack, instead of in a container.

Interface: localstack/services/lambda_/invocation/runtime_executor.py
(LocalStack 2026.3). The functions reach LocalStack at 127.0.0.1 on its
gateway port: `get_endpoint_from_executor` is what LocalStack writes into
`AWS_ENDPOINT_URL` and `LOCALSTACK_HOSTNAME`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from localstack import config
from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.lambda_models import (
    FunctionVersion,
    InvocationResult,
)
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

from .runtime_api import HostRuntime, StartupFailed

LOG = logging.getLogger(__name__)

# Generous: LocalStack's own startup timer (LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT)
# stops the environment first, which ends the wait below.
STARTUP_WAIT_SECONDS = 600.0


class HostRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.runtime: HostRuntime | None = None

    def start(self, env_vars: dict[str, str]) -> None:
        code = self.function_version.config.code
        if code is None:
            raise LambdaRuntimeException(
                "printworks-host runs zip functions only (no image functions)"
            )
        code_dir = Path(code.get_unzipped_code_location())
        log_file = None
        if log_dir := os.environ.get("PRINTWORKS_LAMBDA_LOG_DIR"):
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            log_file = Path(log_dir) / f"{self.function_version.id.function_name}.log"
        self.runtime = HostRuntime(
            code_dir=code_dir,
            env=env_vars,
            timeout_seconds=float(self.function_version.config.timeout),
            name=self.function_version.id.function_name,
            log_file=log_file,
        )
        try:
            self.runtime.start(startup_timeout=STARTUP_WAIT_SECONDS)
        except StartupFailed as e:
            LOG.warning("%s; output:\n%s", e, e.logs)
            raise LambdaRuntimeException(f"{e}: {e.payload.decode('utf-8', 'replace')}") from e

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        if self.runtime is None:
            return ""
        return f"http://{self.runtime.runtime_api}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if self.runtime is None:
            raise LambdaRuntimeException(f"executor {self.id} was not started")
        body = payload.get("payload") or ""
        result = self.runtime.invoke(
            body.encode() if isinstance(body, str) else body,
            request_id=payload.get("invoke-id"),
            function_arn=payload.get("invoked-function-arn", ""),
            trace_id=payload.get("trace-id", ""),
        )
        return InvocationResult(
            request_id=result.request_id,
            payload=result.payload,
            is_error=result.is_error,
            logs=result.logs,
        )

    def get_logs(self) -> str:
        return self.runtime.logs() if self.runtime else ""

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        if function_version.config.package_type != PackageType.Zip:
            raise LambdaRuntimeException("printworks-host runs zip functions only")
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        LOG.info(
            "printworks-host Lambda executor: functions run as host processes "
            "(gateway port %s)",
            config.GATEWAY_LISTEN[0].port,
        )
        return True
