"""A launch right after issue-credentials: EC2 refuses a new instance profile until IAM has
propagated it. The fleet asks again after short pauses, each time with a new client token, then
refuses saying why. (A fake CreateFleet stands in for EC2: the emulator never refuses a profile.)"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from annex_cloud.errors import Refused
from annex_cloud.fleet import PROFILE_WAITS, FleetSpec, run_fleet

NOT_READY = {"ErrorCode": "InvalidParameterValue",
             "ErrorMessage": "Value (arn:aws:iam::123456789012:instance-profile/annex-node-x) for parameter "
                             "iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"}
SPEC = FleetSpec(2, {"m7i.large": "lt-0123"}, [("m7i.large", "subnet-1")], {"k": "v"}, False, {"m7i.large": 0.1})


class FakeEc2:
    """Answers each CreateFleet from a script: an answer dict, or an exception to raise."""

    def __init__(self, *script):
        self.script = list(script)
        self.tokens: list[str] = []

    def create_fleet(self, **request):
        self.tokens.append(request["ClientToken"])
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def launched(*ids):
    return {"Instances": [{"InstanceIds": list(ids), "LaunchTemplateAndOverrides": {
        "Overrides": {"InstanceType": "m7i.large", "SubnetId": "subnet-1"}}}]}


def test_a_profile_not_yet_usable_is_asked_again_with_new_tokens_until_it_is():
    ec2 = FakeEc2({"Errors": [NOT_READY]}, ClientError({"Error": {
        "Code": "InvalidParameterValue", "Message": "Invalid IAM Instance Profile name"}}, "CreateFleet"),
        launched("i-1", "i-2"))
    pauses: list[float] = []
    result = run_fleet(ec2.create_fleet, SPEC, token_prefix="r" * 32, sleep=pauses.append)
    assert sorted(result.instances) == ["i-1", "i-2"] and result.rounds == 1
    assert pauses == list(PROFILE_WAITS[:2])
    assert len(set(ec2.tokens)) == 3  # EC2 would answer a repeated token with its first answer


def test_still_refused_after_the_last_pause_is_a_refusal_that_says_why():
    ec2 = FakeEc2(*[{"Errors": [NOT_READY]}] * (len(PROFILE_WAITS) + 1))
    pauses: list[float] = []
    with pytest.raises(Refused) as refused:
        run_fleet(ec2.create_fleet, SPEC, token_prefix="r" * 32, sleep=pauses.append)
    assert "node profile" in refused.value.what and "Try again in a minute" in refused.value.next_step
    assert pauses == list(PROFILE_WAITS)


def test_other_errors_are_not_waited_for():
    ec2 = FakeEc2({"Errors": [{"ErrorCode": "InvalidParameterValue", "ErrorMessage": "bad subnet"}]})
    result = run_fleet(ec2.create_fleet, SPEC, token_prefix="r" * 32, sleep=lambda _: pytest.fail("waited"))
    assert result.instances == {} and "bad subnet" in result.stopped_by
    with pytest.raises(ClientError):
        run_fleet(FakeEc2(ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "CreateFleet")).create_fleet,
                  SPEC, token_prefix="r" * 32, sleep=lambda _: pytest.fail("waited"))
