"""Golden test: the whole template for fixed settings, so every change to the stack is reviewed.

When a change is intended, regenerate with `UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/unit/test_template_golden.py` and review the diff of the golden file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from templates.settings import StackSettings
from templates.stack import build_template

GOLDEN = Path(__file__).parent / "golden" / "region-stack.json"
SETTINGS = StackSettings(
    region="us-east-1",
    image_id="ami-0123456789abcdef0",
    instance_types=("m7i.large", "m6i.large"),
    ssh_cidr="203.0.113.0/24",
    availability_zones=("us-east-1a", "us-east-1b"),
    code_key="functions/annex_cloud-0123456789abcdef0123.zip",
)


def rendered() -> str:
    return json.dumps(json.loads(build_template(SETTINGS).to_json()), indent=1, sort_keys=True) + "\n"


def test_template_matches_the_reviewed_golden_file():
    text = rendered()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, f"the stack changed; if intended, regenerate {GOLDEN.name} (see the docstring)"
