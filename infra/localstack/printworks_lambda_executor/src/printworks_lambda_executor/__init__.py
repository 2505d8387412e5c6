"""printworks' LocalStack Lambda executor: runs each function's `bootstrap`
as a host process (no Docker). See docs/decisions/localstack.md."""
