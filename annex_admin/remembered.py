"""The settings an existing region stack was built with, read back from its template."""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions

from annex_common.aws import AwsClients, aws_errors, error_code
from templates.settings import SetupChoices, choices_from_template


def current_choices(clients: AwsClients, stack_name: str) -> SetupChoices | None:
    """None when there is no such stack, or its template records no settings."""
    try:
        body: Any = clients.cloudformation.get_template(StackName=stack_name, TemplateStage="Original")["TemplateBody"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return None
        with aws_errors(f"could not read the template of stack {stack_name}"):
            raise
    if isinstance(body, str):  # boto3 decodes JSON bodies; a YAML one stays text
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            return None
    return choices_from_template(dict(body))
