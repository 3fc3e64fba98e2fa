"""The emulator's changes to moto, each an ``install_*`` function that replaces one moto internal.

``annex_sandbox.moto_contract`` checks, before any of them runs, that every internal replaced here is
there with the shape it expects.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

LOG = logging.getLogger("annex_sandbox")

from annex_sandbox.lambda_host import FunctionSpec, LambdaHost, log_tail

# AWS's action names where they differ from the operation's name (Lambda's Invoke is the one).
IAM_ACTION_NAMES = {"lambda:Invoke": "lambda:InvokeFunction"}


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
        return json.dumps(outcome.payload), outcome.errored, log_tail(outcome.log)

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


def fill_in_order(free: list[int], wanted: int) -> list[int]:
    """How many of ``wanted`` instances go to each pool, in order, none beyond its free addresses."""
    counts = []
    for room in free:
        take = max(min(room, wanted), 0)
        counts.append(take)
        wanted -= take
    return counts


def install_fleet_spill_over() -> None:
    """An on-demand (or lowest-price spot) fleet fills its overrides in moto's order, each up to its
    subnet's free addresses, as EC2 moves on from a pool that reports InsufficientFreeAddressesInSubnet.
    moto puts the whole count in its first override, and answers a full subnet with an HTTP 500,
    so a launch of more than one subnet's addresses (a /20 holds 4,091) failed in the emulator."""
    from moto.ec2.models.fleets import Fleet

    moto_counts = Fleet.get_launch_spec_counts

    def get_launch_spec_counts(self: Any, weight_to_add: float) -> tuple[dict[Any, int], float]:
        diversified = self.spot_options and self.spot_options.get("AllocationStrategy") == "diversified"
        specs = sorted(self.launch_specs, key=lambda spec: float(spec.spot_price or "+inf"))
        if diversified or any(s.weighted_capacity != 1 or not s.subnet_id for s in specs):
            return moto_counts(self, weight_to_add)
        free = [self.ec2_backend.get_subnet(s.subnet_id).available_ip_address_count for s in specs]
        counts = fill_in_order(free, int(weight_to_add))
        weight_map = {spec: count for spec, count in zip(specs, counts) if count}
        return weight_map, float(sum(counts))

    Fleet.get_launch_spec_counts = get_launch_spec_counts  # type: ignore[method-assign]


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


def install_ssm_parameter_resource() -> None:
    """Judge SSM parameter requests against the parameter they name, as AWS does.

    moto checks every SSM request against resource ``*``, so a policy scoped to the stack's pool
    parameters (the broker's) would be refused everything under IAM enforcement, and one that
    grants nothing would be refused too: no test could tell them apart.
    """
    from moto.ssm.responses import SimpleSystemManagerResponse

    def _determine_resource(self: Any) -> str:
        body = getattr(self, "body", None)
        try:
            name = (json.loads(body) if isinstance(body, (str, bytes)) and body else {}).get("Name")
        except ValueError:
            name = None
        if not isinstance(name, str) or not name:
            return "*"
        if name.startswith("arn:"):
            return name
        return f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"

    SimpleSystemManagerResponse._determine_resource = _determine_resource  # type: ignore[attr-defined]


def install_kms_key_from_template() -> None:
    """Let CloudFormation make a KMS key as AWS does: tags given as Key/Value, the key policy as a
    document. moto reads CloudFormation's tags as KMS's API spells them (TagKey/TagValue) and fails
    the stack, and keeps the policy as a dict, which every later call on the key fails to read."""
    from moto.kms.models import Key

    original = Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        properties["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in properties.get("Tags", [])]
        if isinstance(properties.get("KeyPolicy"), dict):
            properties["KeyPolicy"] = json.dumps(properties["KeyPolicy"])
        return original(cls, resource_name, {**cloudformation_json, "Properties": properties}, account_id,
                        region_name, **kwargs)

    Key.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]


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



def install_s3_iam_action_names() -> None:
    """Judge an S3 request by the IAM action AWS requires for it, not by the API operation's name.

    moto's S3 handler writes AWS's action into ``data["Action"]`` before it authorizes (its
    ``ACTION_MAP``: ``ListBucket`` for ListObjects, ListObjectsV2 and HeadBucket, ``GetObject`` for
    HeadObject, ``DeleteObject`` for each key of DeleteObjects), and until moto 5.2.5 the
    authorizer read that name. From 5.2.6 the authorizer asks ``_get_action()``, which now answers
    the operation routed to (``ListObjectsV2``), so a role allowed ``s3:ListBucket``, as AWS asks,
    is refused ``s3:ListObjectsV2``, an action IAM does not have. Here ``_get_action()`` answers
    moto's own AWS action while the request is being authorized, and the operation otherwise.
    """
    from moto.s3.responses import S3Response

    operation_name = S3Response._get_action
    authorize = S3Response._authenticate_and_authorize_s3_action

    def _get_action(self: Any) -> str:
        return getattr(self, "_annex_iam_action", None) or operation_name(self)

    def _authenticate_and_authorize_s3_action(self: Any, bucket_name: str | None = None,
                                              key_name: str | None = None) -> None:
        self._annex_iam_action = (self.data or {}).get("Action")
        try:
            authorize(self, bucket_name=bucket_name, key_name=key_name)
        finally:
            self._annex_iam_action = None

    S3Response._get_action = _get_action  # type: ignore[method-assign]
    S3Response._authenticate_and_authorize_s3_action = _authenticate_and_authorize_s3_action  # type: ignore[method-assign]


LAMBDA_CONCURRENCY_ENV = "ANNEX_EMULATOR_LAMBDA_CONCURRENCY"
ACCOUNT_SETTINGS_PATH = "/2016-08-19/account-settings"


def install_lambda_account_settings(concurrency_limit: int) -> None:
    """Answer Lambda's GetAccountSettings, which moto lacks (its server answers 404).

    The account's concurrency limit is ``concurrency_limit`` (AWS's default is 1,000; a new account
    may have 10: ``ANNEX_EMULATOR_LAMBDA_CONCURRENCY`` sets it), and what is unreserved is that limit
    less every function's reserved concurrency, as moto stores it (CloudFormation's
    ``ReservedConcurrentExecutions`` included). Code-size figures are AWS's documented defaults.
    """
    import json

    from moto.awslambda.models import lambda_backends
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    moto_call = DomainDispatcherApplication.__call__

    def settings(region: str) -> dict[str, Any]:
        functions = lambda_backends[DEFAULT_ACCOUNT_ID][region].list_functions()
        reserved = sum(int(f.reserved_concurrency or 0) for f in functions)
        return {
            "AccountLimit": {
                "TotalCodeSize": 80 * 1024**3, "CodeSizeUnzipped": 250 * 1024**2, "CodeSizeZipped": 50 * 1024**2,
                "ConcurrentExecutions": concurrency_limit,
                "UnreservedConcurrentExecutions": concurrency_limit - reserved,
            },
            "AccountUsage": {"TotalCodeSize": sum(len(getattr(f, "code_bytes", b"") or b"") for f in functions),
                             "FunctionCount": len(functions)},
        }

    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").rstrip("/") != ACCOUNT_SETTINGS_PATH or environ.get("REQUEST_METHOD") != "GET":
            return moto_call(self, environ, start_response)
        scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=", 1)[-1].split("/")
        region = scope[2] if len(scope) > 3 else "us-east-1"
        body = json.dumps(settings(region)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    DomainDispatcherApplication.__call__ = __call__  # type: ignore[method-assign]


def install_change_set_outputs() -> None:
    """Refresh a stack's template and outputs when a change set is executed, as AWS does.

    moto applies the change set to the resources and keeps the stack's template dictionary and
    outputs of before (it refreshes them after UpdateStack only), so every output naming a
    replaced, added or removed resource (a security group, a launch template of a type no longer
    allowed) went on naming the old one.
    """
    from moto.cloudformation.models import ChangeSet

    apply = ChangeSet.apply

    def apply_and_refresh(self: Any) -> None:
        apply(self)
        self.stack.template_dict = self.template_dict
        self.stack.output_map = self.stack._create_output_map()

    ChangeSet.apply = apply_and_refresh  # type: ignore[method-assign]


def install_forget_removed_resources() -> None:
    """A resource a stack update removed is forgotten, so that adding it back creates it anew.

    moto's update deletes a removed resource but keeps it among the stack's parsed resources; when
    a later update adds the same logical id again (an instance type dropped, then allowed again),
    moto takes the deleted object for the new resource and creates nothing: the stack then names a
    launch template EC2 no longer has. AWS creates the resource again.
    """
    from moto.cloudformation.parsing import ResourceMap

    update = ResourceMap.update

    def update_and_forget(self: Any, template: dict[str, Any], parameters: dict[str, Any] | None = None) -> None:
        removed = [name for name in self._resource_json_map if name not in template.get("Resources", {})]
        update(self, template, parameters)
        for name in removed:
            self._parsed_resources.pop(name, None)

    ResourceMap.update = update_and_forget  # type: ignore[method-assign]


# What AWS::EC2::SecurityGroup cannot change without a new group (the CloudFormation reference).
SECURITY_GROUP_REPLACED_BY = ("GroupName", "GroupDescription", "VpcId")


def install_security_group_update_in_place() -> None:
    """Update a CloudFormation security group in place when only its rules or tags change.

    AWS changes ``SecurityGroupIngress``, ``SecurityGroupEgress`` and ``Tags`` without interruption
    (same group id); moto deletes the group and makes a new one for any change, so the launch
    templates and the stack's outputs went on naming a group that no longer exists. A change of
    the group's name, description or VPC still replaces it, as on AWS.
    """
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.security_groups import SecurityGroup

    replace = SecurityGroup.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def update_from_cloudformation_json(
        cls: Any, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
        account_id: str, region_name: str,
    ) -> Any:
        properties = cloudformation_json.get("Properties", {})
        kept = {"GroupName": original_resource.name, "GroupDescription": original_resource.description,
                "VpcId": original_resource.vpc_id}
        if any(key in properties and properties[key] != kept[key] for key in SECURITY_GROUP_REPLACED_BY):
            return replace(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name)
        backend = ec2_backends[account_id][region_name]
        group = original_resource
        group.ingress_rules = []
        for rule in properties.get("SecurityGroupIngress", []):
            source = {key: rule[value] for key, value in (("GroupId", "SourceSecurityGroupId"),
                                                          ("GroupName", "SourceSecurityGroupName")) if rule.get(value)}
            backend.authorize_security_group_ingress(
                group_name_or_id=group.id, ip_protocol=rule["IpProtocol"], from_port=rule.get("FromPort"),
                to_port=rule.get("ToPort"), ip_ranges=rule.get("CidrIp", []),
                source_groups=[source] if source else [], vpc_id=group.vpc_id,
            )
        tags = {tag["Key"]: tag["Value"] for tag in properties.get("Tags", [])}
        stale = {tag["key"]: None for tag in group.get_tags()
                 if tag["key"] not in tags and not tag["key"].startswith("aws:")}
        if stale:
            backend.delete_tags([group.id], stale)
        for key, value in tags.items():
            group.add_tag(key, value)
        return group

    SecurityGroup.update_from_cloudformation_json = classmethod(update_from_cloudformation_json)  # type: ignore[assignment]


def install_instance_profile_path_prefix() -> None:
    """ListInstanceProfiles honours ``PathPrefix``, as IAM does (ListRoles already does in moto).

    moto 5.2.6 answers every instance profile of the account whatever the prefix, so a tool that
    lists one stack's node profiles by their path (teardown) was handed every other stack's too.
    """
    from moto.core.responses import ActionResult
    from moto.iam.models import filter_items_with_path_prefix
    from moto.iam.responses import IamResponse

    def list_instance_profiles(self: Any) -> Any:
        prefix = self._get_param("PathPrefix") or "/"
        profiles = filter_items_with_path_prefix(prefix, self.backend.get_instance_profiles())
        return ActionResult({"InstanceProfiles": profiles})

    IamResponse.list_instance_profiles = list_instance_profiles  # type: ignore[method-assign]


def install_removal_of_unmodelled_resources() -> None:
    """A stack update that drops a resource of a type moto does not model removes it, as AWS does.

    moto's CloudFormation skips creating such a resource (an ``AWS::SNS::Subscription``: the alarm
    address setup subscribes), then fails the whole change set with HTTP 500 when an update drops
    it, because it looks for the type's class to delete with. Here a type moto has no class for is
    simply dropped: moto never made anything to delete.
    """
    from moto.cloudformation import parsing

    delete = parsing.parse_and_delete_resource

    def parse_and_delete_resource(resource_name: str, resource_json: dict[str, Any], account_id: str,
                                  region_name: str) -> None:
        if parsing.resource_class_from_type(resource_json["Type"]) is None:
            return
        delete(resource_name, resource_json, account_id, region_name)

    parsing.parse_and_delete_resource = parse_and_delete_resource
