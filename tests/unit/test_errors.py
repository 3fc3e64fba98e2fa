"""One readable message per failure: how botocore errors and our own become exit statuses."""

from __future__ import annotations

import botocore.exceptions
import pytest

from annex_common.aws import aws_errors
from annex_common.cli_support import run_guarded
from annex_common.errors import AnnexError, AwsFailure, BadInput


def client_error(code: str, message: str = "nope") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "DescribeStacks")


@pytest.mark.parametrize(
    "raised, phrase",
    [
        (client_error("InvalidClientTokenId"), "does not accept these credentials"),
        (client_error("AccessDenied", "not authorized to perform ec2:RunInstances"), "refused the request"),
        (client_error("ValidationError", "bad thing"), "ValidationError: bad thing"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "could not reach AWS"),
    ],
)
def test_botocore_errors_become_aws_failures(raised, phrase):
    with pytest.raises(AwsFailure) as caught:
        with aws_errors("listing things"):
            raise raised
    assert caught.value.what == "listing things"
    assert phrase in caught.value.why
    assert caught.value.exit_code == 1


def test_no_credentials_is_bad_input_found_before_any_request():
    with pytest.raises(BadInput) as caught:
        with aws_errors("listing things"):
            raise botocore.exceptions.NoCredentialsError()
    assert "no AWS credentials" in caught.value.why and caught.value.exit_code == 2


def test_secrets_echoed_in_aws_messages_are_redacted():
    with pytest.raises(AwsFailure) as caught:
        with aws_errors("x"):
            raise client_error("ValidationError", "SecretAccessKey=abc123def is wrong")
    assert "abc123def" not in caught.value.render()


def test_render_has_what_why_and_next():
    text = BadInput("the thing failed", "because", "do this").render()
    assert text.splitlines() == ["Error: the thing failed", "  Why: because", "  Next: do this"]


@pytest.mark.parametrize(
    "error, status",
    [(BadInput("bad"), 2), (AwsFailure("aws"), 1), (AnnexError("plain"), 1), (RuntimeError("boom"), 1)],
)
def test_run_guarded_turns_errors_into_exit_statuses_without_tracebacks(capsys, error, status):
    def action():
        raise error

    with pytest.raises(SystemExit) as caught:
        run_guarded(action, debug=False)
    assert caught.value.code == status
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "Traceback" not in err


def test_run_guarded_translates_a_stray_botocore_error(capsys):
    def action():
        raise botocore.exceptions.NoCredentialsError()

    with pytest.raises(SystemExit) as caught:
        run_guarded(action, debug=False)
    assert caught.value.code == 2
    assert "no AWS credentials" in capsys.readouterr().err


def test_debug_adds_the_traceback(capsys):
    def action():
        raise BadInput("bad")

    with pytest.raises(SystemExit):
        run_guarded(action, debug=True)
    assert "Traceback" in capsys.readouterr().err


def test_success_returns_the_value():
    assert run_guarded(lambda: 42, debug=False) == 42
