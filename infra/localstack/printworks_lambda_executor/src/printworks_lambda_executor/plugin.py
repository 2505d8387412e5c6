"""The plux plugin that names the executor `printworks-host`
(LAMBDA_RUNTIME_EXECUTOR=printworks-host); registered in pyproject.toml
under the entry point group `localstack.lambda.runtime_executor`."""

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "printworks-host"

    def load(self, *args, **kwargs):
        from .executor import HostRuntimeExecutor

        return HostRuntimeExecutor
