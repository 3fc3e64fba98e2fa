"""Teardown's removal of node roles deletes only what lies at the stack's own node path."""

from __future__ import annotations

from annex_admin.nodes import remove_node_roles

PATH = "/condor-annex/nodes/A/us-east-1/"


class LooseIam:
    """An IAM that answers every profile and role whatever PathPrefix asks (as moto 5.2.6 did for
    profiles), and records what it is asked to delete."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        self.deleted: list[str] = []

    def get_paginator(self, operation: str):
        iam = self

        class Pages:
            def paginate(self, PathPrefix: str):  # noqa: N803 - boto3's spelling
                if operation == "list_instance_profiles":
                    return [{"InstanceProfiles": [{"InstanceProfileName": n, "Path": p, "Roles": []}
                                                  for n, p in iam.paths.items()]}]
                return [{"Roles": [{"RoleName": n, "Path": p} for n, p in iam.paths.items()]}]

        return Pages()

    def list_role_policies(self, RoleName: str):  # noqa: N803
        return {"PolicyNames": []}

    def delete_instance_profile(self, InstanceProfileName: str) -> None:  # noqa: N803
        self.deleted.append(f"profile {InstanceProfileName}")

    def delete_role(self, RoleName: str) -> None:  # noqa: N803
        self.deleted.append(f"role {RoleName}")


def test_only_profiles_and_roles_at_the_stacks_node_path_are_removed_whatever_the_listing_answers():
    iam = LooseIam({"mine": PATH, "other-region": "/condor-annex/nodes/A/us-west-2/",
                    "deeper": PATH + "someone/", "root": "/"})
    removed, not_removed = remove_node_roles(iam, PATH)
    assert iam.deleted == ["profile mine", "role mine"]
    assert removed == ["node instance profile mine", "node role mine"] and not_removed == []
