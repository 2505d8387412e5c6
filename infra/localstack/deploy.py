"""Deploys infra/template.yaml and one infra/plant.yaml stack to LocalStack,
as `sam package` + `sam deploy` would to AWS, and writes
target/localstack/stack.json for the tests. Run by `scripts/localstack deploy`
with the LocalStack venv's Python (boto3 comes with LocalStack).

What "packaging" means here, the same rewrite `sam package` makes of a
copy of the template (the committed template is not touched):

- each function's `CodeUri` becomes the S3 object of its zip, which holds
  `target/debug/<binary>` (the binary named by the function's
  `Metadata.BuildProperties.Binary`) as `bootstrap`, stripped;
- the `AWS::Include` of `./openapi.yaml` becomes its S3 location;
- the template (over CloudFormation's 51,200-byte `TemplateBody` limit)
  goes to S3 and is deployed by `TemplateURL`.

The template is read with CloudFormation's short forms (`!Ref`, `!Sub`,
...) turned into their long forms and sent as JSON, which CloudFormation
takes as it takes YAML.

Then: an IAM user for the plant's agent (the plant stack's
`AgentPrincipalArn`), the plant stack (`muc` by default), and a Lambda
function URL on the order-api function and one on ops-api, the
stand-ins for the HTTP API (API Gateway v2 is not in LocalStack's
community edition).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
import yaml
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "target" / "localstack"
BUILD = STATE / "build"
ARTIFACTS_BUCKET = "printworks-localstack-artifacts"
REGION = "us-east-1"


# -- CloudFormation YAML ---------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path) -> dict:
    template = yaml.load(path.read_text(), Loader=CfnLoader)
    # CloudFormation's parameter values are strings (a Number's too); YAML
    # reads `Default: 3600` as an int, which LocalStack's Fn::Sub then fails
    # to join ("expected str instance, int found"). The same value, quoted.
    for param in template.get("Parameters", {}).values():
        if isinstance(param.get("Default"), (int, float)) and not isinstance(
            param.get("Default"), bool
        ):
            param["Default"] = str(param["Default"])
    _string_mapping_keys(template, template)
    return template


def _string_mapping_keys(template: dict, node) -> None:
    """LocalStack resolves a `Number` parameter to an int, and then finds no
    such key in a mapping (whose keys are strings), where CloudFormation
    finds it: plant.yaml's `!FindInMap [RetentionSeconds, !Ref
    JobRetentionDays, Seconds]`. In the copy deployed to LocalStack such a
    parameter is a `String` (its range then unchecked by LocalStack; the
    mapping has a key only for each allowed value anyway)."""
    if isinstance(node, dict):
        args = node.get("Fn::FindInMap")
        if isinstance(args, list) and len(args) == 3 and isinstance(args[1], dict):
            name = args[1].get("Ref")
            param = template.get("Parameters", {}).get(name)
            if param and param.get("Type") == "Number":
                param["Type"] = "String"
                param.pop("MinValue", None)
                param.pop("MaxValue", None)
        for v in node.values():
            _string_mapping_keys(template, v)
    elif isinstance(node, list):
        for v in node:
            _string_mapping_keys(template, v)


# -- clients ---------------------------------------------------------------
def client(service: str, endpoint: str, attempts: int = 5):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": attempts}, s3={"addressing_style": "path"}),
    )


# -- packaging ---------------------------------------------------------------
def function_binaries(template: dict) -> dict[str, str]:
    """Logical id of each function -> the binary cargo-lambda would build."""
    out = {}
    for name, res in template["Resources"].items():
        if res.get("Type") == "AWS::Serverless::Function":
            binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if not binary:
                sys.exit(f"{name} has no Metadata.BuildProperties.Binary")
            out[name] = binary
    return out


def build_zip(binary: str, target_dir: Path) -> Path:
    src = target_dir / binary
    work = BUILD / binary
    work.mkdir(parents=True, exist_ok=True)
    bootstrap = work / "bootstrap"
    shutil.copy2(src, bootstrap)
    # Debug binaries carry their debug info; Lambda's zip limit (50 MB)
    # and the upload are easier without it.
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-debug", str(bootstrap)], check=False)
    zpath = BUILD / f"{binary}.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (0o100755 & 0xFFFF) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(bootstrap, "rb") as f, z.open(info, "w") as out:
            shutil.copyfileobj(f, out, 1 << 20)
    return zpath


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)


def package(template: dict, s3, target_dir: Path) -> dict:
    binaries = function_binaries(template)
    missing = [b for b in sorted(set(binaries.values())) if not (target_dir / b).is_file()]
    if missing:
        raise MissingBinaries(missing)
    for name, binary in binaries.items():
        zpath = build_zip(binary, target_dir)
        key = f"functions/{binary}-{sha256(zpath)[:16]}.zip"
        s3.upload_file(str(zpath), ARTIFACTS_BUCKET, key)
        template["Resources"][name]["Properties"]["CodeUri"] = {
            "Bucket": ARTIFACTS_BUCKET,
            "Key": key,
        }
    # The Globals' CodeUri (the workspace root, for `sam build`) means nothing
    # once every function has its own.
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    _rewrite_includes(template, s3)
    return template


def _rewrite_includes(node, s3) -> None:
    if isinstance(node, dict):
        transform = node.get("Fn::Transform")
        if isinstance(transform, dict) and transform.get("Name") == "AWS::Include":
            params = transform["Parameters"]
            location = params["Location"]
            if not str(location).startswith("s3://"):
                local = ROOT / "infra" / location
                key = f"includes/{local.name}"
                s3.upload_file(str(local), ARTIFACTS_BUCKET, key)
                params["Location"] = f"s3://{ARTIFACTS_BUCKET}/{key}"
        for v in node.values():
            _rewrite_includes(v, s3)
    elif isinstance(node, list):
        for v in node:
            _rewrite_includes(v, s3)


class MissingBinaries(Exception):
    def __init__(self, names):
        super().__init__(", ".join(names))
        self.names = names


# -- deploying ---------------------------------------------------------------
def deploy_stack(cfn, s3, name: str, template: dict, params: dict[str, str], endpoint: str):
    key = f"templates/{name}.json"
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=key, Body=json.dumps(template).encode())
    url = f"{endpoint}/{ARTIFACTS_BUCKET}/{key}"
    parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]
    caps = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
    try:
        cfn.describe_stacks(StackName=name)
        exists = True
    except cfn.exceptions.ClientError:
        exists = False
    started = time.monotonic()
    if exists:
        # LocalStack can neither update nor delete this stack: both fail with
        # "Invalid arguments list definition for Fn::Join" (the
        # SesSenderDomains condition). scripts/localstack deploy restarts
        # LocalStack (on the same port) and deploys again on exit code 4.
        print(f"stack {name} exists; LocalStack cannot update or delete it", file=sys.stderr)
        sys.exit(4)
    cfn.create_stack(StackName=name, TemplateURL=url, Parameters=parameters, Capabilities=caps)
    want = {"CREATE_COMPLETE"}
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status in want:
            break
        if status.endswith("FAILED") or status.endswith("ROLLBACK_COMPLETE") or (
            "ROLLBACK" in status and status.endswith("COMPLETE")
        ):
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
            failed = [
                f"  {e['LogicalResourceId']} ({e.get('ResourceType')}): {e.get('ResourceStatusReason')}"
                for e in events
                if "FAILED" in e.get("ResourceStatus", "")
            ]
            sys.exit(f"stack {name}: {status}\n" + "\n".join(failed[:20]))
        if time.monotonic() - started > 900:
            sys.exit(f"stack {name}: still {status} after 15 minutes")
        time.sleep(1)
    print(f"stack {name}: {status} in {time.monotonic() - started:.0f} s", flush=True)
    resources = {}
    paginator = cfn.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=name):
        for r in page["StackResourceSummaries"]:
            resources[r["LogicalResourceId"]] = {
                "type": r["ResourceType"],
                "physical_id": r.get("PhysicalResourceId"),
            }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return {"name": name, "outputs": outputs, "resources": resources}


def function_url(lam, function_name: str, endpoint: str) -> dict:
    try:
        cfg = lam.get_function_url_config(FunctionName=function_name)
    except lam.exceptions.ResourceNotFoundException:
        cfg = lam.create_function_url_config(FunctionName=function_name, AuthType="NONE")
    url = cfg["FunctionUrl"]
    host = url.split("://", 1)[1].split("/", 1)[0]
    port = endpoint.rsplit(":", 1)[1]
    hostname = host.split(":")[0]
    return {
        "function_url": url,
        # LocalStack routes function URLs by host name only:
        # <id>.lambda-url.<region>.localhost:PORT, which not every resolver
        # resolves (*.localhost). Connect to `connect` and send `host` as
        # the Host header (curl -H "Host: ...", or --resolve; reqwest's
        # ClientBuilder::resolve(hostname, connect)).
        "hostname": hostname,
        "host": f"{hostname}:{port}",
        "connect": f"127.0.0.1:{port}",
        "base_url": f"http://{hostname}:{port}",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--stack", default="printworks")
    ap.add_argument(
        "--plant",
        action="append",
        help="a plant stack to deploy (repeatable; default: muc). Dispatch sends a job to "
        "plant-<id>-jobs of the plant the catalog chooses: a plant without its stack "
        "fails that send (QueueDoesNotExist).",
    )
    ap.add_argument("--target-dir", default=str(ROOT / "target" / "debug"))
    args = ap.parse_args()
    endpoint = args.endpoint.rstrip("/")
    STATE.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    s3 = client("s3", endpoint)
    # One attempt: a retried CreateStack after a 500 meets its own stack.
    cfn = client("cloudformation", endpoint, attempts=1)
    iam = client("iam", endpoint)
    lam = client("lambda", endpoint)
    sts = client("sts", endpoint)
    account = sts.get_caller_identity()["Account"]
    ensure_bucket(s3, ARTIFACTS_BUCKET)

    template = load_template(ROOT / "infra" / "template.yaml")
    try:
        template = package(template, s3, Path(args.target_dir))
    except MissingBinaries as e:
        names = " ".join(f"-p {n}" for n in e.names)
        print(
            f"scripts/localstack deploy: skipped: no host binaries in {args.target_dir} for "
            f"{', '.join(e.names)}; build them with `cargo build {names}`",
            file=sys.stderr,
        )
        sys.exit(3)
    print(f"packaged in {time.monotonic() - began:.0f} s", flush=True)
    (STATE / "template.packaged.json").write_text(json.dumps(template, indent=1))

    main_stack = deploy_stack(
        cfn, s3, args.stack, template, {"Stage": "dev", "LogLevel": "info"}, endpoint
    )

    plants = {}
    for plant in args.plant or ["muc"]:
        user = f"plant-{plant}-agent"
        try:
            agent_arn = iam.get_user(UserName=user)["User"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            agent_arn = iam.create_user(UserName=user)["User"]["Arn"]
        plant_stack = deploy_stack(
            cfn,
            s3,
            f"{args.stack}-plant-{plant}",
            load_template(ROOT / "infra" / "plant.yaml"),
            {
                "PlantId": plant,
                "PlantEventsQueueArn": main_stack["outputs"]["PlantEventsQueueArn"],
                "AgentPrincipalArn": agent_arn,
                "AlarmTopicArn": main_stack["outputs"]["AlarmTopicArn"],
            },
            endpoint,
        )
        plants[plant] = {**plant_stack, "agent_user_arn": agent_arn}

    functions = {
        logical: r["physical_id"]
        for logical, r in main_stack["resources"].items()
        if r["type"] == "AWS::Lambda::Function"
    }
    api = function_url(lam, functions["OrderApiFunction"], endpoint)
    # The operator API's function, behind its own URL (on AWS, the same
    # HTTP API routes /v1/ops/* to it).
    ops_api = function_url(lam, functions["OpsApiFunction"], endpoint)
    out = {
        "endpoint": endpoint,
        "region": REGION,
        "account": account,
        "artifacts_bucket": ARTIFACTS_BUCKET,
        "stack": main_stack,
        "plants": plants,
        "functions": functions,
        "api": api,
        "ops_api": ops_api,
        "lambda_logs": str(STATE / "lambda-logs"),
    }
    path = STATE / "stack.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({time.monotonic() - began:.0f} s in all)")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
