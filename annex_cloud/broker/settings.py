"""What the stack fixes for the broker, read from the function's environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


class Misconfigured(Exception):
    """The function was not deployed by the region stack (an environment variable is missing)."""


@dataclass(frozen=True)
class BrokerSettings:
    function_name: str  # its name; a proof names its ARN, which Lambda hands the handler
    region: str
    stack_name: str
    bucket: str
    table: str
    launch_templates: dict[str, str]  # instance type -> launch template id
    subnets: tuple[str, ...]

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(self.launch_templates)

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> "BrokerSettings":
        def need(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise Misconfigured(f"{name} is not set: the function was not deployed by the region stack")
            return value

        pairs = [item.split("=", 1) for item in need("ANNEX_LAUNCH_TEMPLATES").split(",") if "=" in item]
        return cls(
            function_name=need("AWS_LAMBDA_FUNCTION_NAME"),
            region=env.get("AWS_REGION") or need("AWS_DEFAULT_REGION"),
            stack_name=need("ANNEX_STACK_NAME"),
            bucket=need("ANNEX_BUCKET"),
            table=need("ANNEX_REGISTRY_TABLE"),
            launch_templates={itype: template for itype, template in pairs},
            subnets=tuple(s for s in need("ANNEX_SUBNETS").split(",") if s),
        )
