"""`annex-admin template`: the stack's JSON without calling AWS.

Zones default to the region's first two; the image is resolved by CloudFormation itself from the
public Amazon Linux 2023 parameter unless an AMI is given.
"""

from __future__ import annotations

import dataclasses

from annex_common.errors import BadInput
from templates import contract
from annex_admin.artifact import build_function_zip
from templates.settings import StackSettings
from templates.stack import template_json


def offline_template(request: StackSettings, zones: str | None) -> str:
    zone_list = tuple(z.strip() for z in (zones or "").split(",") if z.strip()) or (
        f"{request.region}a",
        f"{request.region}b",
    )
    for zone in zone_list:
        if not zone.startswith(request.region):
            raise BadInput(
                f"zone {zone!r} is not in region {request.region}",
                "every subnet must be in the stack's region",
                "Fix --zones or --region.",
            )
    settings = dataclasses.replace(
        request,
        image_id=request.image_id or "{{resolve:ssm:" + contract.DEFAULT_IMAGE_PARAMETER + "}}",
        availability_zones=zone_list,
        code_key=build_function_zip().key,
    )
    return template_json(settings)
