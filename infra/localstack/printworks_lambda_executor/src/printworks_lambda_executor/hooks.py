"""LocalStack runs DynamoDB Local with `-javaagent:ddb-local-loader-0.1.jar`,
its own patch (more than 20 GSIs) that it downloads from GitHub at run time.
Offline that download fails and so would the JVM, so this hook (entry point
group `localstack.hooks.on_infra_start`) drops the agent from the command
line when the agent jar is absent. The jar and the Java it runs on are put
where LocalStack looks by `scripts/localstack install`."""

import os

from localstack.runtime import hooks


@hooks.on_infra_start()
def dynamodb_local_without_agent():
    from localstack.services.dynamodb import server
    from localstack.services.dynamodb.packages import dynamodblocal_package

    original = server.DynamodbServer._create_shell_command

    def without_missing_agent(self) -> list[str]:
        agent = dynamodblocal_package.get_installer().get_ddb_agent_jar_path()
        cmd = original(self)
        if os.path.exists(agent):
            return cmd
        return [arg for arg in cmd if not arg.startswith("-javaagent:")]

    server.DynamodbServer._create_shell_command = without_missing_agent
