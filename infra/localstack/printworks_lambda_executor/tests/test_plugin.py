"""LocalStack finds the executor and the hook through their entry points."""

from localstack.services.lambda_.invocation.runtime_executor import (
    EXECUTOR_PLUGIN_MANAGER,
    RuntimeExecutor,
)


def test_the_executor_is_a_localstack_plugin():
    assert EXECUTOR_PLUGIN_MANAGER.exists("printworks-host")
    executor = EXECUTOR_PLUGIN_MANAGER.load("printworks-host").load()
    assert issubclass(executor, RuntimeExecutor)
    assert not getattr(executor, "__abstractmethods__", None)


def test_the_dynamodb_hook_is_registered():
    from importlib.metadata import entry_points

    names = [e.name for e in entry_points(group="localstack.hooks.on_infra_start")]
    assert "printworks_dynamodb_local_without_agent" in names
