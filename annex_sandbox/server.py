"""The project's local AWS emulator: moto's server, patched in its own process where moto falls short.

The sandbox (`annex-admin sandbox`), the test suite and the benchmarks all start this one module,
``python -m annex_sandbox.server -H 127.0.0.1 -p PORT``, so they all see the same emulator.
It starts only under a moto release it was checked against, with every internal it replaces in
the shape it expects (``annex_sandbox.moto_contract``). It changes moto in these places (and makes
the few fixes whose docstrings are in ``annex_sandbox.patches``) and leaves everything else as moto
does it:

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
6. S3 requests are judged by AWS's IAM action (``s3:ListBucket`` for ListObjectsV2, ``s3:GetObject``
   for HeadObject), as moto did until 5.2.5 (``install_s3_iam_action_names``).
7. Lambda's GetAccountSettings answers (moto has none): the account's concurrency limit (1,000, or
   ``ANNEX_EMULATOR_LAMBDA_CONCURRENCY``) and what the functions leave unreserved.
8. A stack updated through a change set has its new template and outputs, as on AWS (moto kept
   the outputs of before: a removed launch template stayed named), and a security group whose
   rules or tags change is updated in place, keeping its id, as AWS does (moto made a new group,
   which nothing named); a resource an update removed is created again when a later update adds
   it back (moto kept the deleted object and created nothing).
9. An EC2 Fleet fills its subnets in turn: moto puts a fleet's whole count in its first override's
   subnet and answers a full subnet with HTTP 500; here each override takes at most its subnet's
   free addresses and the rest goes to the next, as EC2 moves on from a pool without addresses
   (``install_fleet_spill_over``). A launch larger than one subnet holds (a /20: 4,091) now runs.
10. ListInstanceProfiles honours ``PathPrefix`` (moto answers every profile of the account), so
   listing one stack's node profiles by their path finds no other stack's
   (``install_instance_profile_path_prefix``).
11. A stack update that drops a resource of a type moto does not model (the SNS subscription of
   the alarm address) drops it; moto failed the change set with HTTP 500
   (``install_removal_of_unmodelled_resources``).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from annex_sandbox.lambda_host import LambdaHost, assume_function_role
from annex_sandbox.moto_contract import MotoMismatch, check_moto
from annex_sandbox.patches import (
    LAMBDA_CONCURRENCY_ENV,
    install_call_log,
    install_change_set_outputs,
    install_dict_policy_documents,
    install_dynamodb_table_resource,
    install_kms_key_from_template,
    install_fast_tag_lookup,
    install_forget_removed_resources,
    install_instance_profile_path_prefix,
    install_fleet_spill_over,
    install_invoke_action_name,
    install_json_lambda_refusals,
    install_lambda_account_settings,
    install_lambda_execution,
    install_launch_template_source_version,
    install_per_key_delete_authorization,
    install_removal_of_unmodelled_resources,
    install_s3_iam_action_names,
    install_ssm_parameter_resource,
    install_security_group_update_in_place,
)
from annex_sandbox.price_list import (
    PRICE_LIST_ENV,
    install_price_list,
    price_catalogue_from_environment,
)

LOG = logging.getLogger("annex_sandbox")


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
    args = sys.argv[1:] if argv is None else argv
    _configure_logging()
    try:
        version = check_moto()
    except MotoMismatch as exc:
        raise SystemExit(f"The local emulator cannot start: {exc}") from exc
    LOG.info("moto %s: every internal the emulator patches is as expected", version)
    from moto.server import main as moto_main

    install_fast_tag_lookup()
    install_fleet_spill_over()
    install_launch_template_source_version()
    install_change_set_outputs()
    install_forget_removed_resources()
    install_removal_of_unmodelled_resources()
    install_security_group_update_in_place()
    install_invoke_action_name()
    install_dict_policy_documents()
    install_instance_profile_path_prefix()
    install_dynamodb_table_resource()
    install_ssm_parameter_resource()
    install_kms_key_from_template()
    install_s3_iam_action_names()
    install_per_key_delete_authorization()
    install_json_lambda_refusals()
    install_lambda_execution(LambdaHost(own_endpoint(args), _private_directory(), assume_function_role))
    install_lambda_account_settings(int(os.environ.get(LAMBDA_CONCURRENCY_ENV) or 1000))
    catalogue = price_catalogue_from_environment(os.environ)
    if catalogue is not None:
        install_price_list(catalogue)
        LOG.info("price list: %d products from %s", len(catalogue.products), os.environ[PRICE_LIST_ENV])
    install_call_log()  # outermost: it sees every request, the Price List's too
    moto_main(args)


if __name__ == "__main__":
    main()
