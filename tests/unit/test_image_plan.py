"""build-image's rules without I/O: the series it accepts, what check-setup says about an image."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from annex_admin import image
from annex_common.errors import BadInput
from templates import contract

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("series", [None, "24.0", "24.x", "25.0", "25.x"])
def test_series_of_the_nodes_or_newer_are_accepted(series):
    assert image.validate_series(series) == (series or "24.0")


@pytest.mark.parametrize("series", ["23.0", "23.x", "24", "24.1", "24.0.3", "x.0", "", "24.0 ", "24.0;id", "99.x", "100.0"])
def test_other_series_are_bad_input(series):
    if series == "":
        assert image.validate_series(series) == "24.0"  # empty: the default, as if not given
        return
    with pytest.raises(BadInput):
        image.validate_series(series)


def test_a_series_htcondor_does_not_publish_is_named_with_those_it_does():
    with pytest.raises(BadInput) as refused:
        image.validate_series("99.x")
    assert refused.value.what == "HTCondor has no series 99.x"
    assert "24.0, 24.x, 25.0, 25.x" in refused.value.why


def facts(created: datetime, **tags: str) -> image.ImageFacts:
    return image.ImageFacts("ami-0123456789abcdef0", "name", created, "available", dict(tags), ("snap-1",))


def test_an_image_build_image_made_is_named_with_its_htcondor_and_age():
    made = facts(NOW - timedelta(days=3), **{contract.TAG_IMAGE_BUILD: "b", contract.TAG_HTCONDOR_VERSION: "24.0.3",
                                             contract.TAG_BUILT_AT: "2026-11-28T12:00:00Z"})
    usable, stale, words = image.image_summary(made, made.image_id, NOW)
    assert usable and not stale
    assert "built by build-image on 2026-11-28T12:00:00Z (3 day(s) old), HTCondor 24.0.3" in words


@pytest.mark.parametrize("chosen, whose", [
    (True, "chosen by setup (the region's latest Amazon Linux 2023 then)"),
    (False, "given with --image-id"),
    (None, "chosen by setup or given with --image-id"),  # recorded by an earlier version
])
def test_an_image_not_built_here_says_whose_choice_it_was_and_that_htcondor_is_installed_at_boot(chosen, whose):
    usable, stale, words = image.image_summary(facts(NOW - timedelta(days=1)), "ami-0123456789abcdef0", NOW, chosen)
    assert usable and not stale and f"(name), {whose}, 1 day(s) old" in words and "installs HTCondor at boot" in words


@pytest.mark.parametrize("days, stale", [(90, False), (91, True)])
def test_an_image_older_than_the_set_age_is_a_warning(days, stale):
    usable, warned, words = image.image_summary(facts(NOW - timedelta(days=days)), "ami-0123456789abcdef0", NOW)
    assert usable and warned is stale and ("run `annex-admin build-image`" in words) is stale


def test_a_missing_or_failed_image_is_a_failure():
    assert image.image_summary(None, "ami-0123456789abcdef0", NOW)[:2] == (False, False)
    failed = image.ImageFacts("ami-0123456789abcdef0", "n", NOW, "failed", {}, ())
    assert image.image_summary(failed, failed.image_id, NOW)[0] is False
