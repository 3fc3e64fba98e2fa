"""The project's local AWS emulator: moto's server, patched in its own process where moto falls short.

The sandbox (`annex-admin sandbox`), the test suite and the benchmarks all start this one module,
``python -m annex_admin.emulator_server -H 127.0.0.1 -p PORT``, so they all see the same emulator.
It changes moto 5.2 in these places (and makes the few fixes whose docstrings follow) and leaves
everything else as moto does it:

1. Lambda functions run. Without docker, moto stores a function and runs nothing on Invoke. Here
   Invoke unpacks the function's zip and runs its handler in a child Python process (see
   ``LambdaHost``), with the credentials of the function's own role (an AssumeRole in the
   emulator, so IAM enforcement judges the function by its role's policies, as on AWS), the
   function's environment variables, and ``AWS_ENDPOINT_URL`` pointing back at this server.
   The function's timeout is enforced, and errors come back in AWS's shape.
2. IAM enforcement names Lambda's Invoke operation ``lambda:InvokeFunction`` (AWS's action) and
   checks it against the function's ARN, so an AWS-correct policy is judged as AWS would judge it.
3. EC2 tag lookups are fast. moto 5.2 looks up the tags of one EC2 resource by scanning every tag
   of every resource (``TaggedEC2Resource.get_tags`` calls ``describe_tags`` with a resource-id
   filter). A tag filter in DescribeInstances, and the response itself, ask for each instance's
   tags, so describing N tagged instances costs O(N^2) in the emulator: 5,000 instances take
   minutes, which measures moto and not the tools. Here the lookup reads the resource's own entry
   of the same tag store. The result is the same list, in the same order, for every resource id
   (ids hold no wildcard characters, so the original's anchored pattern matches exactly one id).
   In the benchmarks both the tools and the `aws` CLI baselines talk to this same server, so
   ratios stay fair.
4. The Price List API answers, when asked to. moto has no Price List API: its server answers a
   ``pricing`` request with HTTP 500 and an HTML page, which botocore reports as a failure, so a
   tool sees "the API cannot be reached". That stays the default. With the environment variable
   ``ANNEX_EMULATOR_PRICE_LIST`` naming a JSON file ``{"<regionCode>": {"<instanceType>": <USD
   per hour>}}``, ``GetProducts`` and ``DescribeServices`` answer from that catalogue instead (see
   ``PriceCatalogue`` and ``install_price_list``): products in the Price List's own document shape,
   filters, ``MaxResults`` and ``NextToken`` honoured, and IAM enforcement (``pricing:GetProducts``)
   applied as for every moto service. A region or type the file lacks is simply not a product, as
   on AWS, so the file ``{}`` gives an API that is reachable but knows no price.
5. CreateLaunchTemplateVersion honours ``SourceVersion``: the new version is the source version's
   data with the given parameters laid over it, as EC2 documents. moto stores only the parameters
   given, so a version that adds an instance profile (each project's, ``annex_admin.nodes``) would
   lose the template's image, user data and metadata options.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import functools
import hashlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Mapping

LOG = logging.getLogger("annex_admin.emulator_server")  # also when run as __main__

RUNNER = Path(__file__).resolve().with_name("lambda_runner.py")
# What AWS's Python runtime offers besides the standard library: boto3 and what it needs.
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
# AWS returns the last 4 KB of the log in X-Amz-Log-Result.
LOG_TAIL_BYTES = 4096
# AWS's action names where they differ from the operation's name (Lambda's Invoke is the one).
IAM_ACTION_NAMES = {"lambda:Invoke": "lambda:InvokeFunction"}
ROLE_SESSION_SECONDS = 3600


@dataclass(frozen=True)
class FunctionSpec:
    """What running one function needs, read from moto's LambdaFunction."""

    name: str
    arn: str
    account_id: str
    region: str
    partition: str
    handler: str
    runtime: str
    timeout: float
    memory_size: str
    version: str
    role_arn: str
    environment: Mapping[str, str]
    code: bytes
    log_group: str

    @classmethod
    def of(cls, function: Any) -> FunctionSpec:
        return cls(
            name=function.function_name,
            arn=function.function_arn,
            account_id=function.account_id,
            region=function.region,
            partition=function.partition,
            handler=function.handler or "",
            runtime=function.run_time or "",
            timeout=float(function.timeout),
            memory_size=str(function.memory_size),
            version=str(function.version),
            role_arn=function.role,
            environment={str(k): str(v) for k, v in (function.environment_vars or {}).items()},
            code=getattr(function, "code_bytes", b"") or b"",
            log_group=function.logs_group_name,
        )


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str


@dataclass(frozen=True)
class Outcome:
    """One invocation's result: the payload (any JSON value), whether it is an error, the log."""

    payload: Any
    errored: bool
    log: str


def assume_function_role(spec: FunctionSpec) -> Credentials:
    """Temporary credentials of the function's role, issued by this emulator's own STS.

    Lambda names the session after the function, so the caller identity inside is
    ``assumed-role/<role>/<function>``; moto's IAM enforcement resolves these keys to the role.
    """
    from moto.sts.models import sts_backends

    role = sts_backends[spec.account_id][spec.partition].assume_role(
        region_name=spec.region,
        role_session_name=spec.name,
        role_arn=spec.role_arn,
        policy=None,
        duration=ROLE_SESSION_SECONDS,
        external_id=None,
    )
    return Credentials(role.access_key_id, role.secret_access_key, role.session_token)


class LambdaHost:
    """Runs functions' code for the server: unpacked zips, the runtime modules, the child process.

    Everything lives under ``root``, a directory of this server process: unpacked code is keyed
    by the zip's sha256, so each version of a function is unpacked once.
    """

    def __init__(self, endpoint: str, root: Path, credentials: Callable[[FunctionSpec], Credentials]) -> None:
        self.endpoint = endpoint
        self.root = root
        self.credentials = credentials
        self._lock = threading.Lock()
        self._runtime_dir: Path | None = None

    def code_dir(self, code: bytes) -> Path:
        target = self.root / "code" / hashlib.sha256(code).hexdigest()
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpacking-"))
        with zipfile.ZipFile(io.BytesIO(code)) as archive:
            archive.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # another invocation unpacked the same zip first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def runtime_dir(self) -> Path:
        """A directory holding only boto3 and its dependencies (links into this environment)."""
        with self._lock:
            if self._runtime_dir is None:
                self._runtime_dir = _link_modules(self.root / "runtime", RUNTIME_MODULES)
            return self._runtime_dir

    def run(self, spec: FunctionSpec, event: Any) -> Outcome:
        request_id = str(uuid.uuid4())
        if not spec.runtime.startswith("python") or not spec.code:
            return Outcome(_error("Runtime.InvalidEntrypoint", _unsupported(spec), request_id), True, "")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.root, prefix="invocation-") as work:
            result_path = Path(work) / "result.json"
            try:
                code_dir = self.code_dir(spec.code)
            except zipfile.BadZipFile as exc:
                return Outcome(_error("Runtime.InvalidEntrypoint", f"The code is not a zip: {exc}", request_id), True, "")
            command = self._command(spec, code_dir, request_id, result_path)
            try:
                completed = subprocess.run(
                    command,
                    input=json.dumps(event).encode(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self.environment(spec),
                    cwd=code_dir,
                    timeout=spec.timeout,
                )
            except subprocess.TimeoutExpired as expired:
                outcome = _timed_out(spec, request_id, _text(expired.output))
            else:
                outcome = _finished(completed.returncode, result_path, request_id, _text(completed.stdout))
        LOG.info("lambda %s %s: %s in %.2f s", spec.name, request_id,
                 "error" if outcome.errored else "ok", time.monotonic() - started)
        return Outcome(outcome.payload, outcome.errored, _framed_log(outcome.log, request_id, spec, started))

    def _command(self, spec: FunctionSpec, code_dir: Path, request_id: str, result_path: Path) -> list[str]:
        deadline_ms = int((time.time() + spec.timeout) * 1000)
        return [
            sys.executable, "-I", "-S", "-u", str(RUNNER),
            "--code-dir", str(code_dir),
            "--runtime-dir", str(self.runtime_dir()),
            f"--handler={spec.handler}",
            "--result", str(result_path),
            "--request-id", request_id,
            "--function-arn", spec.arn,
            "--deadline-ms", str(deadline_ms),
        ]

    def environment(self, spec: FunctionSpec) -> dict[str, str]:
        """The child's whole environment: the function's variables, then what Lambda sets itself.

        Nothing of the server's own environment is passed on except PATH: above all not its
        credentials. The function acts with its role's keys and reaches AWS through this server.
        """
        credentials = self.credentials(spec)
        env = dict(spec.environment)
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_REGION=spec.region,
            AWS_DEFAULT_REGION=spec.region,
            AWS_ACCESS_KEY_ID=credentials.access_key_id,
            AWS_SECRET_ACCESS_KEY=credentials.secret_access_key,
            AWS_SESSION_TOKEN=credentials.session_token,
            AWS_CONFIG_FILE=str(self.root / "aws-config-absent"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.root / "aws-credentials-absent"),
            AWS_EC2_METADATA_DISABLED="true",
            AWS_LAMBDA_FUNCTION_NAME=spec.name,
            AWS_LAMBDA_FUNCTION_TIMEOUT=f"{spec.timeout:g}",
            AWS_LAMBDA_FUNCTION_VERSION=spec.version,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=spec.memory_size,
            AWS_LAMBDA_LOG_GROUP_NAME=spec.log_group,
            AWS_EXECUTION_ENV=f"AWS_Lambda_{spec.runtime}",
            _HANDLER=spec.handler,
            PATH=os.environ.get("PATH", os.defpath),
        )
        return env


def _link_modules(directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        source = origin.parent if spec.submodule_search_locations else origin
        link = directory / source.name
        if not link.exists():
            link.symlink_to(source)
    return directory


def _text(output: bytes | str | None) -> str:
    if output is None:
        return ""
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else output


def _error(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id}


def _unsupported(spec: FunctionSpec) -> str:
    if not spec.code:
        return "The local emulator runs only functions deployed as a zip"
    return f"The local emulator runs only Python functions, not {spec.runtime or 'this runtime'}"


def _timed_out(spec: FunctionSpec, request_id: str, log: str) -> Outcome:
    message = f"RequestId: {request_id} Error: Task timed out after {spec.timeout:.2f} seconds"
    return Outcome(_error("Sandbox.Timedout", message, request_id), True, log + message + "\n")


def _finished(returncode: int, result_path: Path, request_id: str, log: str) -> Outcome:
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {returncode}"
        return Outcome(_error("Runtime.ExitError", message, request_id), True, log + message + "\n")
    return Outcome(result["payload"], bool(result["errored"]), log)


def _framed_log(log: str, request_id: str, spec: FunctionSpec, started: float) -> str:
    """The function's output between the START/END/REPORT lines AWS writes around it."""
    duration_ms = (time.monotonic() - started) * 1000
    return (
        f"START RequestId: {request_id} Version: {spec.version}\n{log}"
        f"END RequestId: {request_id}\n"
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tMemory Size: {spec.memory_size} MB\n"
    )


def _log_tail(log: str) -> str:
    return log.encode("utf-8")[-LOG_TAIL_BYTES:].decode("utf-8", "ignore")


def install_lambda_execution(host: LambdaHost) -> None:
    """Make Invoke run the function (see LambdaHost) instead of asking docker.

    ``_invoke_lambda`` keeps moto's contract, ``(payload text, errored, log)``, and moto's
    ``invoke`` still turns that into the response. Around it, Invoke follows AWS where running
    code makes moto's shortcuts visible: an error is ``Unhandled`` (moto says ``Handled``), an
    ``Event`` invocation answers 202 at once and runs in the background, a ``DryRun`` runs nothing,
    and an empty payload is the event ``{}``.
    """
    from moto.awslambda.models import LambdaFunction

    moto_invoke = LambdaFunction.invoke

    def _invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
        self.logs_backend.ensure_log_group(self.logs_group_name)
        outcome = host.run(FunctionSpec.of(self), {} if event is None else event)
        self.save_logs(outcome.log)
        return json.dumps(outcome.payload), outcome.errored, _log_tail(outcome.log)

    def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
        invocation_type = request_headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            event = json.loads(body) if body else {}
            threading.Thread(target=self._invoke_lambda, args=(event,), daemon=True,
                             name=f"lambda-{self.function_name}").start()
            return b""
        payload = moto_invoke(self, body or "{}", request_headers, response_headers)
        if "x-amz-function-error" in response_headers:
            response_headers["x-amz-function-error"] = "Unhandled"
        return payload

    LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]
    LambdaFunction.invoke = invoke  # type: ignore[method-assign]


def install_invoke_action_name() -> None:
    """Judge Lambda's Invoke as AWS does: action ``lambda:InvokeFunction``, resource the function.

    moto names the action after the API operation (``lambda:Invoke``) and checks every Lambda
    request against resource ``*``, so an AWS-correct policy (InvokeFunction on the function's
    ARN) would be refused.
    """
    from moto.awslambda.responses import LambdaResponse
    from moto.iam.access_control import IAMRequestBase

    moto_init = IAMRequestBase.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        moto_init(self, *args, **kwargs)
        self._action = IAM_ACTION_NAMES.get(self._action, self._action)

    def _determine_resource(self: Any) -> str:
        if self._get_action() != "Invoke":
            return "*"
        return invoked_function_arn(self)

    IAMRequestBase.__init__ = __init__  # type: ignore[method-assign]
    LambdaResponse._determine_resource = _determine_resource  # type: ignore[attr-defined]


def invoked_function_arn(response: Any) -> str:
    """The ARN an Invoke request names: a name, a partial or a full ARN, with or without qualifier."""
    from urllib.parse import unquote

    from moto.utilities.utils import get_partition

    named = unquote(response.path.rsplit("/", 2)[-2])
    if named.startswith("arn:"):
        return named
    account_id, name = response.current_account, named
    if ":function:" in named:
        account_id, _, name = named.split(":", 2)
    qualifier = response.querystring.get("Qualifier", [None])[0]
    if qualifier and ":" not in name:
        name = f"{name}:{qualifier}"
    region = response.region
    return f"arn:{get_partition(region)}:lambda:{region}:{account_id}:function:{name}"


def install_fast_tag_lookup() -> None:
    """Read one resource's tags from its own entry of moto's tag store (see the module's 3.)."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        # .get, not [...]: the store is a defaultdict and a lookup must not add an entry.
        tags = self.ec2_backend.tags.get(resource_id, {})
        resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
            for key, value in list(tags.items())
        ]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]


def install_launch_template_source_version() -> None:
    """A new launch template version copies its SourceVersion (see the module's 5.)."""
    import copy

    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.responses.launch_templates import LaunchTemplates

    asked = threading.local()  # the SourceVersion of the request this thread is answering
    respond, create = LaunchTemplates.create_launch_template_version, LaunchTemplate.create_version

    def create_launch_template_version(self: Any) -> Any:
        asked.source = self._get_param("SourceVersion")
        try:
            return respond(self)
        finally:
            asked.source = None

    def create_version(self: Any, data: dict[str, Any], description: str) -> Any:
        source = getattr(asked, "source", None)
        if source is not None:
            data = {**copy.deepcopy(self.get_version(source).data), **data}
        return create(self, data, description)

    LaunchTemplates.create_launch_template_version = create_launch_template_version  # type: ignore[method-assign]
    LaunchTemplate.create_version = create_version  # type: ignore[method-assign]


def install_dict_policy_documents() -> None:
    """Let IAM enforcement read inline role policies that CloudFormation created.

    moto stores a role's inline policy from a template as the parsed document (a dict), and its
    access check then fails with KeyError (HTTP 500) for every request signed with that role's
    credentials: a function's role, the broker's, could never be judged. A dict is read here as
    the document it is; strings and managed policies go through unchanged.
    """
    import json

    from moto.iam.access_control import IAMPolicy

    original = IAMPolicy.__init__

    def __init__(self: Any, policy: Any) -> None:
        if isinstance(policy, dict) and "policy_document" not in policy and "Statement" in policy:
            policy = json.dumps(policy)
        original(self, policy)

    IAMPolicy.__init__ = __init__  # type: ignore[method-assign]


def install_dynamodb_table_resource() -> None:
    """Judge DynamoDB item requests against the table they name, as AWS does.

    moto checks every DynamoDB request against resource ``*``, so a policy scoped to one table's
    ARN (the broker's and the enforcer's) would refuse everything under IAM enforcement.
    """
    from moto.dynamodb.responses import DynamoHandler

    def _determine_resource(self: Any) -> str:
        table = (getattr(self, "body", None) or {}).get("TableName")
        if not isinstance(table, str) or not table:
            return "*"
        if table.startswith("arn:"):
            return table
        return f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"

    DynamoHandler._determine_resource = _determine_resource  # type: ignore[attr-defined]


def install_per_key_delete_authorization() -> None:
    """Judge DeleteObjects key by key (s3:DeleteObject on each object's ARN), as AWS does.

    moto checks s3:DeleteObject against the bucket's ARN and, when that is refused, refuses every
    key: a policy that allows deleting under a prefix (the broker's, the enforcer's) could then
    never delete. Here each key is judged on its own; when every key is allowed the request goes
    on as moto would run it, and when any is refused the whole request is refused (AWS would
    delete the others: a narrower answer, never a wider one).
    """
    import xmltodict
    from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError
    from moto.s3.responses import S3Response

    original = S3Response._bucket_response_delete_keys

    def _bucket_response_delete_keys(self: Any, bucket_name: str, authenticated: bool = True) -> Any:
        if authenticated:
            return original(self, bucket_name, authenticated)
        objects = xmltodict.parse(self.body, strip_whitespace=False)["Delete"].get("Object", [])
        keys = [o["Key"] for o in (objects if isinstance(objects, list) else [objects])]
        try:
            for key in keys:
                self._authenticate_and_authorize_s3_action(bucket_name=bucket_name, key_name=key)
        except (BucketAccessDeniedError, S3AccessDeniedError):
            return original(self, bucket_name, False)
        return original(self, bucket_name, True)

    S3Response._bucket_response_delete_keys = _bucket_response_delete_keys  # type: ignore[method-assign]


# -- the Price List API (see the module's 4.) ---------------------------------------------------

PRICE_LIST_ENV = "ANNEX_EMULATOR_PRICE_LIST"
PRICE_LIST_TARGET = "AWSPriceListService"
PRICE_LIST_FORMAT = "aws_v1"
EC2_SERVICE_CODE = "AmazonEC2"
# AWS's codes for the on-demand offer term and for its hourly rate, the same in every EC2 product.
ON_DEMAND_TERM_CODE = "JRTCKXETXF"
HOURLY_RATE_CODE = "6YS6EN2CT7"
MAX_RESULTS = 100  # GetProducts' MaxResults is 1..100
FILTER_TYPES = ("TERM_MATCH", "EQUALS", "CONTAINS", "ANY_OF", "NONE_OF")
# What AWS's JSON-protocol services call moto's IAM refusals.
JSON_AUTH_ERRORS = {
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
}
# What every product of the catalogue is: the filters condor-annex (and most tools) ask for.
LINUX_ON_DEMAND = {
    "servicecode": EC2_SERVICE_CODE,
    "servicename": "Amazon Elastic Compute Cloud",
    "locationType": "AWS Region",
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
    "operation": "RunInstances",
    "marketoption": "OnDemand",
}


class PriceListError(Exception):
    """An error answer of the Price List API: its type (``__type``), message and HTTP status."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _invalid(message: str) -> PriceListError:
    return PriceListError("InvalidParameterException", message)


class PriceCatalogue:
    """Hourly on-demand Linux prices per region and type, as the Price List API's products.

    Each (region, instance type) is one product, rendered as GetProducts returns it: a JSON
    document with ``product`` (``productFamily``, ``attributes``, ``sku``), ``serviceCode``,
    ``terms.OnDemand.<sku>.<offer term>.priceDimensions.<rate>.pricePerUnit.USD`` (a string with
    ten decimals), ``version`` and ``publicationDate``. The attributes are the ones a Linux,
    shared-tenancy, on-demand instance carries (``LINUX_ON_DEMAND``) plus ``instanceType``,
    ``regionCode`` and ``location``; the rest of a real product's attributes (vCPUs, memory, usage
    type...) are left out. Products come in a fixed order (region, then type).
    """

    def __init__(self, hourly: Mapping[str, Mapping[str, float]], published: datetime | None = None) -> None:
        stamp = published or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.publication_date = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.version = stamp.strftime("%Y%m%d%H%M%S")
        self.products = [
            self._product(region, itype, float(usd))
            for region, types in sorted(hourly.items())
            for itype, usd in sorted(types.items())
        ]

    @classmethod
    def load(cls, path: Path) -> PriceCatalogue:
        """The catalogue in a JSON file; top-level keys starting with ``_`` are comments (so the
        shipped ``annex_cloud/prices.json`` is a catalogue too). ValueError when malformed."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the price list {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected {{region: {{instance type: USD per hour}}}}")
        hourly: dict[str, dict[str, float]] = {}
        for region, types in data.items():
            if region.startswith("_"):
                continue
            if not isinstance(types, dict):
                raise ValueError(f"{path}: {region!r} must map instance types to USD per hour")
            for itype, usd in types.items():
                if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd <= 0:
                    raise ValueError(f"{path}: {region} {itype}: {usd!r} is not a price in USD per hour")
            hourly[region] = {str(t): float(u) for t, u in types.items()}
        published = datetime.fromtimestamp(int(path.stat().st_mtime), tz=timezone.utc)
        return cls(hourly, published)

    def _product(self, region: str, itype: str, usd: float) -> dict[str, Any]:
        sku = base64.b32encode(hashlib.sha256(f"{region}/{itype}".encode()).digest()).decode()[:16]
        term = f"{sku}.{ON_DEMAND_TERM_CODE}"
        rate = f"{term}.{HOURLY_RATE_CODE}"
        attributes = dict(LINUX_ON_DEMAND, instanceType=itype, regionCode=region)
        location = _price_list_location(region)
        if location:
            attributes["location"] = location
        return {
            "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
            "serviceCode": EC2_SERVICE_CODE,
            "terms": {
                "OnDemand": {
                    term: {
                        "priceDimensions": {
                            rate: {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd:g} per On Demand Linux {itype} Instance Hour",
                                "appliesTo": [],
                                "rateCode": rate,
                                "beginRange": "0",
                                "pricePerUnit": {"USD": f"{usd:.10f}"},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": self.publication_date,
                        "offerTermCode": ON_DEMAND_TERM_CODE,
                        "termAttributes": {},
                    }
                }
            },
            "version": self.version,
            "publicationDate": self.publication_date,
        }

    def attribute_names(self) -> list[str]:
        return sorted({name for product in self.products for name in product["product"]["attributes"]})

    def get_products(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """GetProducts: the products matching every filter, one page of them, and the next token."""
        service_code = request.get("ServiceCode")
        if not isinstance(service_code, str) or not service_code:
            raise _invalid("ServiceCode is required")
        _format_version(request)
        filters = _filters(request.get("Filters"))
        limit = _max_results(request.get("MaxResults"))
        query = hashlib.sha256(json.dumps([service_code, filters], sort_keys=True).encode()).hexdigest()[:16]
        start = _token_offset(request.get("NextToken"), query)
        matching = [p for p in self.products if p["serviceCode"] == service_code and _matches(p, filters)]
        page = matching[start:start + limit]
        answer: dict[str, Any] = {"FormatVersion": PRICE_LIST_FORMAT, "PriceList": [json.dumps(p) for p in page]}
        if start + limit < len(matching):
            answer["NextToken"] = _token(start + limit, query)
        return answer

    def describe_services(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """DescribeServices: AmazonEC2 (the one service the catalogue has) and its attribute names."""
        _format_version(request)
        _max_results(request.get("MaxResults"))
        service_code = request.get("ServiceCode")
        services = []
        if service_code in (None, "", EC2_SERVICE_CODE):
            services.append({"ServiceCode": EC2_SERVICE_CODE, "AttributeNames": self.attribute_names()})
        return {"FormatVersion": PRICE_LIST_FORMAT, "Services": services}


def _price_list_location(region: str) -> str | None:
    """The Price List's ``location`` of a region: botocore's region description, except that the
    Price List still says "EU (Ireland)" where botocore says "Europe (Ireland)"."""
    description = _region_descriptions().get(region)
    if description and description.startswith("Europe ("):
        return "EU (" + description[len("Europe ("):]
    return description


@functools.lru_cache(maxsize=1)
def _region_descriptions() -> dict[str, str]:
    import botocore.session

    return {
        region: str(data["description"])
        for partition in botocore.session.get_session().get_data("endpoints").get("partitions", [])
        for region, data in partition.get("regions", {}).items()
        if data.get("description")
    }


def _format_version(request: Mapping[str, Any]) -> None:
    if request.get("FormatVersion", PRICE_LIST_FORMAT) != PRICE_LIST_FORMAT:
        raise _invalid(f"FormatVersion must be {PRICE_LIST_FORMAT}")


def _max_results(value: Any) -> int:
    if value is None:
        return MAX_RESULTS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RESULTS:
        raise _invalid(f"MaxResults must be between 1 and {MAX_RESULTS}")
    return value


def _filters(value: Any) -> list[tuple[str, str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("Filters must be a list")
    filters = []
    for item in value:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("Type", "Field", "Value")):
            raise _invalid("Each filter needs Type, Field and Value")
        if item["Type"] not in FILTER_TYPES:
            raise _invalid(f"Filter type {item['Type']!r} is not one of {', '.join(FILTER_TYPES)}")
        filters.append((item["Type"], item["Field"], item["Value"]))
    return filters


def _matches(product: Mapping[str, Any], filters: list[tuple[str, str, str]]) -> bool:
    """Every filter holds. ``ServiceCode`` is a field too; a product lacking the attribute fails
    the filter (NONE_OF too). TERM_MATCH and EQUALS compare exactly, CONTAINS is a substring,
    ANY_OF and NONE_OF take a comma-separated list of values."""
    attributes = product["product"]["attributes"]
    for kind, field, wanted in filters:
        actual = product["serviceCode"] if field == "ServiceCode" else attributes.get(field)
        if actual is None:
            return False
        choices = {v.strip() for v in wanted.split(",")}
        holds = {
            "TERM_MATCH": actual == wanted,
            "EQUALS": actual == wanted,
            "CONTAINS": wanted in actual,
            "ANY_OF": actual in choices,
            "NONE_OF": actual not in choices,
        }[kind]
        if not holds:
            return False
    return True


def _token(offset: int, query: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset, "query": query}).encode()).decode()


def _token_offset(token: Any, query: str) -> int:
    """Where a page starts: 0 without a token; a token only continues the query that issued it."""
    if token is None:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        offset = decoded["offset"]
        same_query = decoded["query"] == query
    except (ValueError, TypeError, KeyError):
        same_query, offset = False, None
    if not same_query or not isinstance(offset, int) or offset < 0:
        raise PriceListError(
            "InvalidNextTokenException", "The pagination token is invalid. Try again without a pagination token.")
    return offset


def price_list_app(catalogue: PriceCatalogue) -> Any:
    """A WSGI app answering the Price List API from ``catalogue``, built as moto builds a service's.

    Requests go through moto's ``BaseResponse`` (so IAM enforcement checks the signature and the
    action, ``pricing:GetProducts`` or ``pricing:DescribeServices``, against resource ``*``, as
    AWS does; refusals come back as ``AccessDeniedException`` and the like, in JSON) and moto's
    request normalisation and recorder. Other Price List operations answer 501 with a message
    saying the emulator does not have them.
    """
    from flask import Flask
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import BaseResponse
    from moto.core.utils import convert_to_flask_response
    from moto.moto_server.werkzeug_app import BackendRequest
    from werkzeug.exceptions import HTTPException

    headers = {"Content-Type": "application/x-amz-json-1.1"}

    class PriceListResponse(BaseResponse):
        def __init__(self) -> None:
            super().__init__(service_name="pricing")

        def call_action(self) -> Any:
            action = self._get_action()
            if action not in ("GetProducts", "DescribeServices"):
                return 501, dict(headers), json.dumps({
                    "__type": "NotImplemented",
                    "message": "the local emulator's Price List API answers GetProducts and DescribeServices,"
                               f" not {action}",
                })
            return super().call_action()

        def _authenticate_and_authorize_normal_action(self, resource: str = "*") -> None:
            """moto's IAM enforcement, its refusals worded as a JSON-protocol service words them
            (moto answers every service's in XML, which botocore reads as a bare HTTP 403)."""
            try:
                super()._authenticate_and_authorize_normal_action(resource)
            except HTTPException as exc:
                error_type = getattr(exc, "error_type", None)
                if error_type is None:
                    raise
                error = JsonRESTError(JSON_AUTH_ERRORS.get(error_type, error_type), getattr(exc, "message", ""))
                error.code = exc.code
                raise error from exc

        def _answer(self, operation: Callable[[Mapping[str, Any]], dict[str, Any]]) -> Any:
            try:
                request = json.loads(self.body or "{}")
                if not isinstance(request, dict):
                    raise _invalid("The request body must be a JSON object")
                answer = operation(request)
            except ValueError:
                error = _invalid("The request body is not JSON")
            except PriceListError as exc:
                error = exc
            else:
                LOG.info("price list %s: %s", self._get_action(), _summary(request, answer))
                return json.dumps(answer), dict(headers)
            LOG.info("price list %s: %s", self._get_action(), error.error_type)
            body = json.dumps({"__type": error.error_type, "message": error.message})
            return body, dict(headers, status=error.status, **{"x-amzn-ErrorType": error.error_type})

        def get_products(self) -> Any:
            return self._answer(catalogue.get_products)

        def describe_services(self) -> Any:
            return self._answer(catalogue.describe_services)

    app = Flask("annex-price-list")
    app.request_class = BackendRequest
    app.add_url_rule("/", endpoint="price-list", view_func=convert_to_flask_response(PriceListResponse.dispatch),
                     methods=["POST"], strict_slashes=False)
    return app


def _summary(request: Mapping[str, Any], answer: Mapping[str, Any]) -> str:
    """One log line per answer: what was asked and how many products came back."""
    asked = " ".join(f"{f.get('Field')}={f.get('Value')}" for f in request.get("Filters") or [] if isinstance(f, dict))
    if "PriceList" in answer:
        more = ", more" if "NextToken" in answer else ""
        return f"{request.get('ServiceCode')} {asked or '(no filter)'}: products {len(answer['PriceList'])}{more}"
    return f"services {len(answer.get('Services', []))}"


def install_price_list(catalogue: PriceCatalogue) -> None:
    """Put the Price List API (``price_list_app``) in front of moto's dispatcher.

    A request whose ``X-Amz-Target`` is ``AWSPriceListService.*`` (only the Price List's JSON 1.1
    protocol uses that prefix) goes to the catalogue; every other request goes to moto unchanged.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    app = price_list_app(catalogue)
    moto_call = DomainDispatcherApplication.__call__

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(PRICE_LIST_TARGET + "."):
            return app(environ, start_response)
        return moto_call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__  # type: ignore[method-assign]


# Lambda's REST-JSON error names for what moto reports as Query-style XML codes.
LAMBDA_ERROR_TYPES = {
    "InvalidClientTokenId": "UnrecognizedClientException",
    "InvalidAccessKeyId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
    "AccessDenied": "AccessDeniedException",
}


def install_json_lambda_refusals() -> None:
    """Answer refused Lambda requests as Lambda does: JSON with ``x-amzn-ErrorType``.

    moto's IAM enforcement answers every refusal in XML; for Lambda's REST-JSON protocol botocore
    then sees only an HTTP status ("403") and the XML as the message, where AWS sends, say,
    ``UnrecognizedClientException`` for a revoked key. Only 4xx XML answers on Lambda's paths
    are rewritten.
    """
    import json
    import re

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    moto_call = DomainDispatcherApplication.__call__

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO", "").startswith("/2015-03-31/functions"):
            return moto_call(self, environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda _data: None

        body = b"".join(moto_call(self, environ, capture))
        status, headers = captured["status"], captured["headers"]
        code = re.search(rb"<Code>([A-Za-z]+)</Code>", body)
        if status.startswith("4") and body.lstrip().startswith(b"<") and code:
            message = re.search(rb"<Message>(.*?)</Message>", body, re.S)
            error_type = LAMBDA_ERROR_TYPES.get(code.group(1).decode(), code.group(1).decode())
            body = json.dumps({"Type": "User", "message": message.group(1).decode() if message else ""}).encode()
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("x-amzn-ErrorType", error_type)]
        start_response(status, headers)
        return [body]

    DomainDispatcherApplication.__call__ = __call__  # type: ignore[method-assign]


CALL_LOG_PREFIX = "api-call"


def describe_call(environ: dict[str, Any], body: bytes) -> tuple[str, str, str]:
    """(access key id, service, operation) of one request, as far as its wire form says.

    Query protocol: the ``Action`` parameter; JSON protocols: ``X-Amz-Target``; REST protocols
    (S3, Lambda): the method and the path's first segment after the bucket or API version.
    """
    import re
    import urllib.parse

    authorization = environ.get("HTTP_AUTHORIZATION", "")
    scope = re.search(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/", authorization)
    key, service = (scope.group(1), scope.group(2)) if scope else ("-", "-")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return key, service, target.rsplit(".", 1)[-1]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" not in query and body and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        query = urllib.parse.parse_qs(body.decode(errors="replace"))
    if "Action" in query:
        return key, service, query["Action"][0]
    path = environ.get("PATH_INFO", "")
    if service == "lambda" and path.endswith("/invocations"):
        return key, service, "Invoke"
    return key, service, f"{environ.get('REQUEST_METHOD', '')} {'object' if path.count('/') > 1 else 'bucket'}"


def install_call_log() -> None:
    """One log line per API request: who (access key id), which service and operation.

    Benchmarks and tests count a command's AWS calls from these lines, and tell the scientist's
    own calls (her IAM user's key) from the broker's (its role's temporary key)."""
    import io

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    inner_call = DomainDispatcherApplication.__call__

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if environ.get("HTTP_AUTHORIZATION"):
            LOG.info("%s %s %s %s", CALL_LOG_PREFIX, *describe_call(environ, body))
        return inner_call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__  # type: ignore[method-assign]


def price_catalogue_from_environment(environ: Mapping[str, str]) -> PriceCatalogue | None:
    """The catalogue ``ANNEX_EMULATOR_PRICE_LIST`` names; None (moto's behaviour) when unset.
    A file that is named but unreadable or malformed stops the server: a test would otherwise
    quietly see an unreachable API."""
    path = environ.get(PRICE_LIST_ENV, "")
    if not path:
        return None
    try:
        return PriceCatalogue.load(Path(path))
    except ValueError as exc:
        raise SystemExit(f"{PRICE_LIST_ENV}: {exc}") from exc


def own_endpoint(argv: list[str]) -> str:
    """This server's URL as a child process on the same machine reaches it, from moto's arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 5000)))
    parser.add_argument("-s", "--ssl", action="store_true")
    parser.add_argument("-c", "--ssl-cert")
    args, _ = parser.parse_known_args(argv)
    host = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if args.ssl or args.ssl_cert else "http"
    return f"{scheme}://{host}:{args.port}"


def _private_directory() -> Path:
    root = Path(tempfile.mkdtemp(prefix="annex-emulator-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def _configure_logging() -> None:
    """Our own lines only: moto's and werkzeug's logging stay as moto sets them up."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    args = sys.argv[1:] if argv is None else argv
    _configure_logging()
    install_fast_tag_lookup()
    install_launch_template_source_version()
    install_invoke_action_name()
    install_dict_policy_documents()
    install_dynamodb_table_resource()
    install_per_key_delete_authorization()
    install_json_lambda_refusals()
    install_lambda_execution(LambdaHost(own_endpoint(args), _private_directory(), assume_function_role))
    catalogue = price_catalogue_from_environment(os.environ)
    if catalogue is not None:
        install_price_list(catalogue)
        LOG.info("price list: %d products from %s", len(catalogue.products), os.environ[PRICE_LIST_ENV])
    install_call_log()  # outermost: it sees every request, the Price List's too
    moto_main(args)


if __name__ == "__main__":
    main()
