"""The README shows `annex-admin pool-config` exactly as it prints."""

from __future__ import annotations

from pathlib import Path

from annex_admin.pool_config import pool_config_text, revocation_text

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_shows_the_snippet_and_a_revocation_as_printed():
    text = README.read_text()
    assert f"```\n{pool_config_text()}```" in text
    assert f"```\n{revocation_text(['0123456789abcdef0123456789abcdef'])}```" in text
