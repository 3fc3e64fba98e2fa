"""Setup input validation: bad input is refused before any AWS call."""

import pytest

from annex_common.errors import BadInput
from templates import settings


@pytest.mark.parametrize("name", ["HTCondorAnnex", "a", "Annex-2"])
def test_good_stack_names(name):
    assert settings.validate_stack_name(name) == name


@pytest.mark.parametrize("name", ["", "1annex", "with space", "under_score", "x" * 101])
def test_bad_stack_names(name):
    with pytest.raises(BadInput) as caught:
        settings.validate_stack_name(name)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "300.1.1.1/32", "nonsense", "2001:db8::/32"])
def test_bad_cidrs(cidr):
    with pytest.raises(BadInput):
        settings.validate_ssh_cidr(cidr)


def test_good_cidr_is_normalised():
    assert settings.validate_ssh_cidr("203.0.113.0/24") == "203.0.113.0/24"
    assert settings.validate_ssh_cidr(None) is None


def test_instance_types_are_split_deduplicated_and_checked():
    assert settings.parse_instance_types(" m7i.large,m5.large,m7i.large ") == ("m7i.large", "m5.large")
    for bad in ("", ",", "M7I.LARGE", "m7i"):
        with pytest.raises(BadInput):
            settings.parse_instance_types(bad)


def test_image_ids():
    assert settings.validate_image_id("ami-0123456789abcdef0") == "ami-0123456789abcdef0"
    assert settings.validate_image_id(None) == ""
    with pytest.raises(BadInput):
        settings.validate_image_id("ami-xyz")


def test_more_types_than_the_policy_can_hold_are_refused():
    six = ",".join(f"m{i}.large" for i in range(5, 11))
    assert len(settings.parse_instance_types(six)) == 6
    with pytest.raises(BadInput) as caught:
        settings.parse_instance_types(six + ",c7i.large")
    assert "10,240" in caught.value.why
