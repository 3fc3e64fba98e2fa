"""What a person sees on a narrow terminal (a real pseudo-terminal of that width): no id, name,
price or word cut in two; a table that cannot fit its words becomes one record per block. And the
prices' source is named briefly beside each figure, the administrator told once why it is the
shipped table."""

from __future__ import annotations

import json
import re

from tests.e2e.test_scientist_flow import setup_region_and_bundle
from tests.flows import PROJECT

MONEY = re.compile(r"\$[\d,]+\.\d{2}")
TIME_LEFT = re.compile(r"\(?\d+h\d\dm")  # the lease left, which may tick between two runs
BOX = re.compile(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇┴┬┼]")


def words(text: str) -> set[str]:
    return set(BOX.sub(" ", text).split())


def assert_no_word_cut(terminal: str, pipe: str, width: int, *, block_titles: set[str] = frozenset()) -> None:
    """Every word the pipe shows whole is whole on the terminal (bar the lease's minutes, which
    may tick between the runs, words longer than the terminal, and the headers of columns that
    title the blocks); every sum of money is whole."""
    lines = terminal.splitlines()
    assert all(len(line.rstrip()) <= width for line in lines), terminal
    expected = {w for w in words(pipe) - block_titles
                if not TIME_LEFT.match(w) and not MONEY.search(w) and len(w) < width - 2}
    missing = expected - words(terminal)
    assert not missing, f"cut or lost on a {width}-column terminal: {sorted(missing)}\n{terminal}"
    for word in words(terminal):
        if "$" in word:
            assert MONEY.search(word), f"a sum of money cut in two: {word!r}\n{terminal}"


def launch_three(shell) -> dict[str, str]:
    env = {"CONDOR_ANNEX_CREDENTIALS": setup_region_and_bundle(shell)}
    launched = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "20", "--instances", "3",
                         "--annex-name", "deadline", "--yes", env=env)
    assert launched.returncode == 0, launched.output
    return env


def test_status_on_a_narrow_terminal_cuts_no_id_name_or_price(shell):
    env = launch_three(shell)
    listed = shell.run("condor_annex", "status", "--output", "json", env=env)
    ids = [row["instance_id"] for row in json.loads(listed.stdout)]
    assert len(ids) == 3
    for width in (60, 40):
        for args in (["status"], ["status", "--instances"]):
            pipe = shell.run("condor_annex", *args, env={**env, "COLUMNS": ""})
            shown = shell.run("condor_annex", *args, env=env, columns=width)
            assert shown.returncode == 0, shown.output
            assert_no_word_cut(shown.stdout, pipe.stdout, width, block_titles={"Instance", "Annex"})
        # One record per block, each titled by its instance id on a line of its own.
        assert sorted(line.strip() for line in shown.stdout.splitlines() if line.strip() in ids) == sorted(ids)
    wide = shell.run("condor_annex", "status", "--instances", env=env, columns=160)
    header = next(line for line in wide.stdout.splitlines() if "Instance" in line)
    assert "Annex" in header and "Lease ends" in header  # wide enough: still a table
    assert sum(1 for line in wide.stdout.splitlines() if set(line.split()) & set(ids)) == 3


def test_the_plan_and_check_setup_on_a_narrow_terminal_cut_no_word(shell):
    env = launch_three(shell)
    plan = ("condor_annex", "--project-id", PROJECT, "--duration", "20", "--instances", "2",
            "--annex-name", "second", "--dry-run")
    for width in (60, 40):
        pipe = shell.run(*plan, env={**env, "COLUMNS": ""})
        shown = shell.run(*plan, env=env, columns=width)
        assert shown.returncode == 0, shown.output
        assert_no_word_cut(shown.stdout, pipe.stdout, width)
        checked = shell.run("annex-admin", "check-setup", columns=width)
        assert checked.returncode == 0, checked.output
        assert_no_word_cut(checked.stdout, shell.run("annex-admin", "check-setup", env={"COLUMNS": ""}).stdout, width,
                           block_titles={"Check", "Detail"})
        titles = [line.rstrip() for line in checked.stdout.splitlines()]
        assert "registry  ok" in titles and "broker function  ok" in titles, checked.stdout
    # A command to copy is never broken between its words: on a line of its own when it must.
    launched = shell.run(*plan[:-1], "--yes", env=env, columns=40)
    assert launched.returncode == 0, launched.output
    assert "condor_annex status --annex-name second" in [line.strip() for line in launched.stdout.splitlines()]


def test_the_price_source_is_brief_for_the_scientist_and_explained_once_to_the_administrator(shell):
    # The sandbox has no Price List API, so setup stores the shipped table and says why, once.
    setup = shell.setup_region()
    assert setup.returncode == 0, setup.output
    why = "(the Price List API"
    assert setup.output.count(why) == 1, setup.output
    checked = shell.run("annex-admin", "check-setup")
    assert checked.output.count(why) == 1, checked.output
    bundle = shell.home / "b.toml"
    assert shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", "needs-moore",
                     "--output", str(bundle)).returncode == 0
    env = {"CONDOR_ANNEX_CREDENTIALS": str(bundle)}
    launched = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "20", "--instances", "2",
                         "--annex-name", "deadline", "--yes", env=env)
    extended = shell.run("condor_annex", "extend", "--annex-name", "deadline", "--duration", "30", "--dry-run", env=env)
    status = shell.run("condor_annex", "status", env=env)
    for seen in (launched, extended, status):
        assert seen.returncode == 0, seen.output
        assert seen.output.count("prices: the table shipped with condor-annex") == 1, seen.output
        assert "Price List API" not in seen.output, seen.output
