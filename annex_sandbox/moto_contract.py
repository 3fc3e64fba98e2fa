"""What the emulator expects of moto's internals, checked before it changes any of them.

The emulator replaces or wraps moto internals (``annex_sandbox.patches``, ``lambda_host``,
``price_list``). A moto release can rename, move or reshape any of them, and then a patch either
fails late, inside one request, or, worse, quietly stops applying and the emulator judges requests
as AWS does not (moto 5.2.6 changed how an S3 request's IAM action is found, and the suite's
terminate broke). So the server starts only under a moto release listed in ``CHECKED_MOTO``, and
only when every internal below is there with the parameters the patches call it with. Moving to a
new moto: add it to ``CHECKED_MOTO`` once the suite passes under it (``make lock``).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib import metadata

# The moto releases the suite has passed under, with every patch applied.
CHECKED_MOTO = ("5.2.6",)


@dataclass(frozen=True)
class Internal:
    """One moto internal a patch relies on: where it lives and, for a callable, its parameters."""

    module: str
    name: str  # dotted within the module: "Class.method"
    parameters: tuple[str, ...] | None = None  # None: it only has to exist

    @property
    def where(self) -> str:
        return f"{self.module}.{self.name}"


INTERNALS: tuple[Internal, ...] = (
    # lambda_host / install_lambda_execution: Invoke runs the function.
    Internal("moto.awslambda.models", "LambdaFunction.invoke", ("self", "body", "request_headers", "response_headers")),
    Internal("moto.awslambda.models", "LambdaFunction._invoke_lambda", ("self", "event")),
    Internal("moto.awslambda.models", "LambdaFunction.save_logs", ("self", "output")),
    Internal("moto.sts.models", "sts_backends"),
    Internal("moto.sts.models", "STSBackend.assume_role",
             ("self", "region_name", "role_session_name", "role_arn", "policy", "duration", "external_id")),
    # install_invoke_action_name: lambda:InvokeFunction on the function's ARN.
    Internal("moto.iam.access_control", "IAMRequestBase.__init__",
             ("self", "account_id", "method", "path", "data", "body", "headers", "action")),
    Internal("moto.awslambda.responses", "LambdaResponse"),
    Internal("moto.core.responses", "BaseResponse._authenticate_and_authorize_normal_action", ("self", "resource")),
    Internal("moto.utilities.utils", "get_partition", ("region",)),
    # install_fast_tag_lookup.
    Internal("moto.ec2.models.core", "TaggedEC2Resource.get_tags", ("self",)),
    Internal("moto.ec2.utils", "EC2_PREFIX_TO_RESOURCE"),
    Internal("moto.ec2.utils", "get_prefix", ("resource_id",)),
    # install_fleet_spill_over.
    Internal("moto.ec2.models.fleets", "Fleet.get_launch_spec_counts", ("self", "weight_to_add")),
    Internal("moto.ec2.models.subnets", "Subnet.available_ip_address_count"),
    Internal("moto.ec2.models.subnets", "SubnetBackend.get_subnet", ("self", "subnet_id")),
    # install_launch_template_source_version.
    Internal("moto.ec2.responses.launch_templates", "LaunchTemplates.create_launch_template_version", ("self",)),
    Internal("moto.ec2.models.launch_templates", "LaunchTemplate.create_version", ("self", "data", "description")),
    Internal("moto.ec2.models.launch_templates", "LaunchTemplate.get_version", ("self", "num")),
    # install_change_set_outputs: a change set refreshes the stack's template and outputs.
    Internal("moto.cloudformation.models", "ChangeSet.apply", ("self",)),
    Internal("moto.cloudformation.models", "Stack._create_output_map", ("self",)),
    # install_forget_removed_resources.
    Internal("moto.cloudformation.parsing", "ResourceMap.update", ("self", "template", "parameters")),
    # install_security_group_update_in_place.
    Internal("moto.ec2.models.security_groups", "SecurityGroup.update_from_cloudformation_json",
             ("original_resource", "new_resource_name", "cloudformation_json", "account_id", "region_name")),
    Internal("moto.ec2.models.security_groups", "SecurityGroupBackend.authorize_security_group_ingress",
             ("self", "group_name_or_id", "ip_protocol", "from_port", "to_port", "ip_ranges")),
    Internal("moto.ec2.models.tags", "TagBackend.delete_tags", ("self", "resource_ids", "tags")),
    Internal("moto.ec2.models", "ec2_backends"),
    # install_instance_profile_path_prefix.
    Internal("moto.iam.responses", "IamResponse.list_instance_profiles", ("self",)),
    Internal("moto.iam.models", "IAMBackend.get_instance_profiles", ("self",)),
    Internal("moto.iam.models", "filter_items_with_path_prefix", ("path_prefix", "items")),
    Internal("moto.core.responses", "ActionResult"),
    # install_removal_of_unmodelled_resources.
    Internal("moto.cloudformation.parsing", "parse_and_delete_resource",
             ("resource_name", "resource_json", "account_id", "region_name")),
    Internal("moto.cloudformation.parsing", "resource_class_from_type", ("resource_type",)),
    # install_dict_policy_documents.
    Internal("moto.iam.access_control", "IAMPolicy.__init__", ("self", "policy")),
    # install_dynamodb_table_resource.
    Internal("moto.dynamodb.responses", "DynamoHandler"),
    # install_ssm_parameter_resource.
    Internal("moto.ssm.responses", "SimpleSystemManagerResponse"),
    # install_kms_key_from_template.
    Internal("moto.kms.models", "Key.create_from_cloudformation_json",
             ("resource_name", "cloudformation_json", "account_id", "region_name")),
    # install_per_key_delete_authorization and install_s3_iam_action_names.
    Internal("moto.s3.responses", "S3Response._bucket_response_delete_keys", ("self", "bucket_name", "authenticated")),
    Internal("moto.s3.responses", "S3Response._authenticate_and_authorize_s3_action", ("self", "bucket_name", "key_name")),
    Internal("moto.s3.responses", "S3Response._get_action", ("self",)),
    Internal("moto.s3.responses", "S3Response._set_action", ("self", "action_resource_type", "method", "querystring")),
    Internal("moto.core.authorization", "ActionAuthenticatorMixin._authenticate_and_authorize_action",
             ("self", "iam_request_cls", "resource")),
    Internal("moto.s3.exceptions", "BucketAccessDeniedError"),
    Internal("moto.s3.exceptions", "S3AccessDeniedError"),
    # price_list, install_json_lambda_refusals, install_call_log: WSGI in front of moto.
    Internal("moto.moto_server.werkzeug_app", "DomainDispatcherApplication.__call__", ("self", "environ", "start_response")),
    Internal("moto.moto_server.werkzeug_app", "BackendRequest"),
    Internal("moto.core.responses", "BaseResponse.dispatch"),
    Internal("moto.core.utils", "convert_to_flask_response"),
    Internal("moto.core.exceptions", "JsonRESTError"),
    # install_lambda_account_settings.
    Internal("moto.awslambda.models", "lambda_backends"),
    Internal("moto.awslambda.models", "LambdaBackend.list_functions", ("self",)),
    Internal("moto.core", "DEFAULT_ACCOUNT_ID"),
    # server: moto's own entry point.
    Internal("moto.server", "main", ("argv",)),
)


class MotoMismatch(Exception):
    """moto is not the release, or lacks the internals, that the emulator was checked against."""


def moto_version() -> str:
    try:
        return metadata.version("moto")
    except metadata.PackageNotFoundError as exc:
        raise MotoMismatch("moto is not installed: pip install 'condor-annex[sandbox]'") from exc


def _resolve(internal: Internal) -> object:
    target: object = importlib.import_module(internal.module)
    for part in internal.name.split("."):
        target = getattr(target, part)
    return target


def problems(internals: tuple[Internal, ...] = INTERNALS) -> list[str]:
    """Each internal that is missing or has other parameters than expected, as one line each."""
    found: list[str] = []
    for internal in internals:
        try:
            target = _resolve(internal)
        except (ImportError, AttributeError) as exc:
            found.append(f"{internal.where} is missing ({exc})")
            continue
        if internal.parameters is None:
            continue
        try:
            parameters = tuple(inspect.signature(target).parameters)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            found.append(f"{internal.where} is not callable")
            continue
        if parameters[: len(internal.parameters)] != internal.parameters:
            found.append(f"{internal.where} takes ({', '.join(parameters)}), expected ({', '.join(internal.parameters)})")
    return found


def check_moto(checked: tuple[str, ...] | None = None) -> str:
    """The installed moto's version, when the emulator may run under it; MotoMismatch otherwise."""
    checked = checked or CHECKED_MOTO
    version = moto_version()
    if version not in checked:
        raise MotoMismatch(
            f"the emulator was checked against moto {', '.join(checked)}, and this is moto {version}: "
            f"install the locked version (make test does), or check the patches under {version} and add it to CHECKED_MOTO"
        )
    missing = problems()
    if missing:
        raise MotoMismatch(f"moto {version} lacks what the emulator patches: " + "; ".join(missing))
    return version
