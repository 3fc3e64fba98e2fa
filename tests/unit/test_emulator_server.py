"""The emulator server's pure parts: the ARN an Invoke names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from annex_admin.emulator_server import invoked_function_arn

ARN = "arn:aws:lambda:us-east-1:123456789012:function:probe"


@pytest.mark.parametrize("named, qualifier, arn", [
    ("probe", None, ARN),
    ("probe", "live", ARN + ":live"),
    ("probe:3", None, ARN + ":3"),
    ("123456789012:function:probe", None, ARN),
    ("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aprobe", None, ARN),
])
def test_invoke_is_judged_against_the_function_arn_it_names(named, qualifier, arn):
    request = SimpleNamespace(
        path=f"/2015-03-31/functions/{named}/invocations",
        querystring={"Qualifier": [qualifier]} if qualifier else {},
        current_account="123456789012",
        region="us-east-1",
    )
    assert invoked_function_arn(request) == arn
