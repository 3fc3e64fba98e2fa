"""Tables on terminals of any width: whole words or one record per block; whole rows in a pipe.

Rich renders into a string here; `force_terminal` stands for a terminal (the e2e tests run the
console scripts on a real pseudo-terminal of a given width).
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.table import Table

from annex_common.tables import print_fields, print_table

IDS = ["i-0123456789abcdef0", "i-0fedcba9876543210"]


def render(width: int, draw, *, terminal: bool = True) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None, highlight=False,
                      soft_wrap=True)
    draw(console)
    return buffer.getvalue()


def instances() -> Table:
    table = Table("Instance", "Annex", "Lease ends", "Cost so far")
    for instance_id in IDS:
        table.add_row(instance_id, "deadline", "2026-12-18 23:59 CET (469h53m left)", "$757.83")
    return table


def words(text: str) -> set[str]:
    return set(re.sub(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇┴┬┼]", " ", text).split())


@pytest.mark.parametrize("width", [40, 60])
def test_a_table_too_narrow_for_its_words_becomes_one_block_per_record(width):
    shown = render(width, lambda c: print_table(c, instances(), prose={"Lease ends"}))
    lines = [line.rstrip() for line in shown.splitlines()]
    assert [line for line in lines if line in IDS] == IDS  # each record's title, whole
    whole = words(render(200, lambda c: print_table(c, instances()), terminal=False))
    assert whole - {"Instance"} <= words(shown)  # every word whole; the first header names the titles
    assert sum(1 for line in lines if line.split()[:1] == ["Annex"]) == 2
    assert all(len(line) <= width for line in lines)


def test_a_table_whose_words_fit_stays_a_table_and_wraps_prose_between_words():
    shown = render(80, lambda c: print_table(c, instances(), prose={"Lease ends"}))
    header = next(line for line in shown.splitlines() if "Instance" in line)
    assert "Annex" in header and "Cost so far" in header  # a table: the headers share a line
    assert "(469h53m" in words(shown) and "$757.83" in words(shown) and set(IDS) <= words(shown)
    assert all(len(line) <= 80 for line in shown.splitlines())


def test_without_prose_columns_every_cell_must_fit_whole_or_it_is_blocks():
    # 80 columns fit the words of "Lease ends", not the whole cell: not prose, so blocks.
    shown = render(80, lambda c: print_table(c, instances()))
    assert [line.rstrip() for line in shown.splitlines() if line.rstrip() in IDS] == IDS
    assert "2026-12-18 23:59 CET (469h53m left)" in shown


def test_in_a_pipe_rows_stay_whole_at_any_width():
    shown = render(40, lambda c: print_table(c, instances()), terminal=False)
    rows = [line for line in shown.splitlines() if IDS[0] in line]
    assert len(rows) == 1 and "deadline" in rows[0] and "(469h53m left)" in rows[0] and "$757.83" in rows[0]


def test_a_column_without_header_joins_the_title_and_a_lone_field_has_no_label():
    table = Table("Check", "", "Detail", box=None)
    table.add_row("registry", "ok", "HTCondorAnnex-Registry-6D3OC1WZLKKW (prices from the table shipped with condor-annex)")
    shown = render(40, lambda c: print_table(c, table, prose={"Detail"}))
    lines = [line.rstrip() for line in shown.splitlines()]
    assert lines[0] == "registry  ok"
    assert lines[1] == "  HTCondorAnnex-Registry-6D3OC1WZLKKW"
    assert "Detail" not in shown


def test_fields_wrap_under_their_value_on_a_terminal_and_stay_one_line_in_a_pipe():
    rows = [("most it costs", "$6.05 (prices: the table shipped with condor-annex)"), ("price", "$0.30/hour")]
    narrow = render(40, lambda c: print_fields(c, "Annex deadline", rows))
    lines = narrow.splitlines()
    assert lines[1].startswith("  most it costs  $6.05")
    assert lines[2].startswith(" " * len("  most it costs  ")) and lines[2].strip()
    assert all(len(line) <= 40 for line in lines)
    piped = render(40, lambda c: print_fields(c, "Annex deadline", rows), terminal=False)
    assert "  most it costs  $6.05 (prices: the table shipped with condor-annex)" in piped.splitlines()


def test_a_one_column_table_too_narrow_is_its_titles():
    table = Table("Annex")
    table.add_row("a-rather-long-annex-name-for-the-thesis-deadline")
    shown = render(30, lambda c: print_table(c, table))
    assert shown.splitlines() == ["a-rather-long-annex-name-for-the-thesis-deadline"]
