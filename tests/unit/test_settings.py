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


def test_given_options_win_and_the_rest_are_kept_from_the_stack():
    current = settings.SetupChoices(image_id="ami-0123456789abcdef0", instance_types=("m5.large",),
                                    ssh_cidr="198.51.100.0/24")
    merged = settings.merge_choices(settings.SetupChoices(instance_types=("c6i.large",)), current)
    assert merged.choices == settings.SetupChoices("ami-0123456789abcdef0", ("c6i.large",), "198.51.100.0/24")
    assert merged.kept == {"image_id", "ssh_cidr"}
    closed = settings.merge_choices(settings.SetupChoices(ssh_cidr=settings.NO_SSH), current)
    assert closed.choices.ssh_cidr == settings.NO_SSH and "ssh_cidr" not in closed.kept
    assert settings.merge_choices(settings.SetupChoices(), None).kept == frozenset()


def test_the_recorded_settings_round_trip_through_the_template():
    import json

    from templates.stack import template_json

    built = settings.StackSettings(region="us-east-1", image_id="ami-0123456789abcdef0",
                                   instance_types=("m7i.large", "m5.large"), ssh_cidr="203.0.113.0/24",
                                   availability_zones=("us-east-1a", "us-east-1b"), code_key="functions/x.zip")
    read = settings.choices_from_template(json.loads(template_json(built)))
    assert read == settings.SetupChoices("ami-0123456789abcdef0", ("m7i.large", "m5.large"), "203.0.113.0/24")
    assert settings.choices_from_template({"Resources": {}}) is None
    assert settings.choices_from_template({"Metadata": {"CondorAnnex": {"Settings": "junk"}}}) is None


@pytest.mark.parametrize("text, choice", [(None, None), ("none", ""), ("NONE", ""), ("", ""),
                                          ("203.0.113.0/24", "203.0.113.0/24")])
def test_ssh_choice(text, choice):
    assert settings.parse_ssh_choice(text) == choice
