"""`make bench`: condor-annex against the `aws` CLI on the same local emulator, in one run.

Every figure is the median of several runs (the table says how many), and every ratio compares two
commands measured in the same run against the same emulator, alternating run by run so that drift
in the emulator hits both sides alike. API calls are counted on the emulator's side from its
access log (see bench/emulator.py), so retries and failed requests count too.

    python -m bench.run [--runs 5] [--big-runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from bench import fleet
from bench.emulator import BenchEmulator, PinnedClients, admin_clients, child_environment, start
from templates import contract

RESULTS = Path(__file__).resolve().parent / "results.md"
POOL_PASSWORD = b"benchmark pool password"


@dataclass
class Sizes:
    runs: int = 5
    big_runs: int = 3
    launch: int = 500
    status: int = 5000
    sweep: int = 10000
    expired: int = 1000


@dataclass
class Result:
    case: str
    runs: int
    ours_wall: list[float] = field(default_factory=list)
    ours_calls: list[int] = field(default_factory=list)
    base_wall: list[float] = field(default_factory=list)
    base_calls: list[int] = field(default_factory=list)

    def row(self) -> str:
        ours = statistics.median(self.ours_wall)
        cells = [self.case, str(self.runs), f"{ours:.2f} s"]
        if self.base_wall:
            base = statistics.median(self.base_wall)
            cells += [f"{base:.2f} s", f"{ours / base:.2f}"]
        else:
            cells += ["—", "—"]
        calls = _calls(self.ours_calls)
        calls += f" / {_calls(self.base_calls)}" if self.base_calls else " / —"
        cells.append(calls)
        return "| " + " | ".join(cells) + " |"


def _calls(values: list[int]) -> str:
    low, high = min(values), max(values)
    median = statistics.median(values)
    return f"{median:g}" if low == high else f"{median:g} ({low}–{high})"


# --- measuring --------------------------------------------------------------------------------


def timed(emu: BenchEmulator | None, argv: list[str], env: dict[str, str]) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall time and emulator requests of one command; it must succeed."""
    before = emu.requests_served() if emu else 0
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    calls = emu.requests_served() - before if emu else 0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} … exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed, calls, done


def bench_cli_start(emu: BenchEmulator, env: dict[str, str], runs: int) -> Result:
    ours, base = [fleet.script("condor_annex"), "--help"], [fleet.script("aws"), "--version"]
    timed(emu, ours, env), timed(emu, base, env)  # warm the file cache; not counted
    result = Result("CLI start: `condor_annex --help` vs `aws --version`", runs)
    for _ in range(runs):
        wall, calls, _done = timed(emu, ours, env)
        result.ours_wall.append(wall), result.ours_calls.append(calls)
        wall, calls, _done = timed(emu, base, env)
        result.base_wall.append(wall), result.base_calls.append(calls)
    return result


def bench_launch(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                 runs: int, count: int) -> Result:
    stack = region.stack
    result = Result(f"Launch {count}: `condor_annex … --instances {count} --yes` vs `aws ec2 run-instances --count {count}`", runs)
    for run in range(runs):
        name = f"bench-launch-{run}"
        ours = [fleet.script("condor_annex"), "--project-id", fleet.PROJECT, "--duration", "72",
                "--instances", str(count), "--yes", "--annex-name", name]
        wall, calls, _done = timed(emu, ours, env)
        launched = fleet.live_ids(clients, [{"Name": f"tag:{contract.TAG_ANNEX_NAME}", "Values": [name]}])
        _expect(len(launched) == count, f"condor_annex launched {len(launched)} of {count}")
        fleet.terminate(clients, launched)
        result.ours_wall.append(wall), result.ours_calls.append(calls)

        tags = fleet.annex_tags(f"bench-cli-{run}", fleet.lease_end(72))
        base = [
            fleet.script("aws"), "ec2", "run-instances", "--count", str(count),
            "--launch-template",
            f"LaunchTemplateId={stack.launch_templates[stack.instance_types[0]]},Version=$Default",
            "--subnet-id", stack.subnets[1 % len(stack.subnets)],
            "--tag-specifications",
            json.dumps([{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]),
            "--output", "json",
        ]
        wall, calls, done = timed(emu, base, env)
        launched = [i["InstanceId"] for i in json.loads(done.stdout)["Instances"]]
        _expect(len(launched) == count, f"aws run-instances launched {len(launched)} of {count}")
        fleet.terminate(clients, launched)
        result.base_wall.append(wall), result.base_calls.append(calls)
    return result


def bench_status(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                 runs: int, count: int) -> Result:
    expiry = fleet.lease_end(72)
    for start_at in range(0, count, fleet.FLEET_CHUNK):
        size = min(fleet.FLEET_CHUNK, count - start_at)
        fleet.create_instances(clients, region.stack, size, fleet.annex_tags(f"bench-status-{start_at // 1000}", expiry))
    result = Result(f"Status of {count:,}: `condor_annex status --output json` vs `aws ec2 describe-instances --filters tag:…project`", runs)
    ours = [fleet.script("condor_annex"), "status", "--output", "json"]
    base = [fleet.script("aws"), "ec2", "describe-instances", "--output", "json",
            "--filters", f"Name=tag:{contract.TAG_PROJECT},Values={fleet.PROJECT}"]
    for _ in range(runs):
        wall, calls, done = timed(emu, ours, env)
        _expect(len(json.loads(done.stdout)) == count, "condor_annex status missed instances")
        result.ours_wall.append(wall), result.ours_calls.append(calls)
        wall, calls, done = timed(emu, base, env)
        found = sum(len(r["Instances"]) for r in json.loads(done.stdout)["Reservations"])
        _expect(found == count, f"aws describe-instances found {found} of {count}")
        result.base_wall.append(wall), result.base_calls.append(calls)
    return result


def enforce_command_exists(env: dict[str, str]) -> bool:
    done = subprocess.run([fleet.script("annex-admin"), "enforce", "--help"], env=env, capture_output=True, timeout=60)
    return done.returncode == 0


def bench_sweep(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                runs: int, total: int, expired: int) -> tuple[Result, str]:
    """A sweep over `total` annex instances, `expired` of which have an ended lease."""
    present = len(fleet.live_ids(clients))
    live_more = total - expired - present
    _expect(live_more >= 0, f"{present} instances already exist, more than the sweep case wants")
    if live_more:
        fleet.create_instances(clients, region.stack, live_more, fleet.annex_tags("bench-sweep-live", fleet.lease_end(72)))
    as_cli = enforce_command_exists(env)
    how = "`annex-admin enforce` (a child process)" if as_cli else \
        "`annex_admin.enforce.run_enforcer` in the benchmark's process (no `annex-admin enforce` yet)"
    result = Result(f"Enforcer sweep over {total:,} ({expired:,} expired)", runs)
    for _ in range(runs):
        past = datetime.now(timezone.utc) - timedelta(hours=1)
        doomed = set(fleet.create_instances(clients, region.stack, expired, fleet.annex_tags("bench-sweep-expired", past)))
        if as_cli:
            wall, calls, _done = timed(emu, [fleet.script("annex-admin"), "enforce"], env)
        else:
            wall, calls = _sweep_in_process(emu, clients, region)
        left = set(fleet.live_ids(clients))
        _expect(not (left & doomed) and len(left) == total - expired,
                f"the sweep left {len(left & doomed)} expired and {len(left)} live instances")
        result.ours_wall.append(wall), result.ours_calls.append(calls)
    return result, how


def _sweep_in_process(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region) -> tuple[float, int]:
    from annex_cloud.prices import shipped_prices as regional_prices
    from annex_admin.enforce import run_enforcer

    prices = regional_prices(fleet.REGION)
    clients._cache.clear()  # new clients each run, as a fresh process would have
    before = emu.requests_served()
    started = time.perf_counter()
    run_enforcer(clients, bucket=region.stack.bucket, prices=prices, dry_run=False, log=lambda _line: None)
    return time.perf_counter() - started, emu.requests_served() - before


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark check failed: {message}")


# --- the run ----------------------------------------------------------------------------------


def write_pool(workdir: Path) -> Path:
    """A pool configuration with a password file (scrambled as condor_store_cred writes it)."""
    mask = (0xDE, 0xAD, 0xBE, 0xEF)
    password = workdir / "pool_password"
    password.write_bytes(bytes(b ^ mask[i % 4] for i, b in enumerate(POOL_PASSWORD)))
    password.chmod(0o600)
    config = workdir / "condor_config"
    # Nothing listens on port 9 of loopback: status learns at once that the collector is down.
    config.write_text(f"COLLECTOR_HOST = 127.0.0.1:9\nTRUST_DOMAIN = bench.example.org\nSEC_PASSWORD_FILE = {password}\n")
    return config


def render(results: list[Result], notes: list[str]) -> str:
    lines = [
        "| Case | Runs | condor-annex (median) | Baseline (median) | Wall ratio | API calls (condor-annex / baseline) |",
        "|---|---|---|---|---|---|",
        *(r.row() for r in results),
        "",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join(lines) + "\n"


def environment_notes(sizes: Sizes, sweep_how: str, seconds: float) -> list[str]:
    from importlib.metadata import version

    return [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}, moto {version('moto')}, awscli {version('awscli')}, boto3 {version('boto3')}; "
        f"the whole run took {seconds:.0f} s.",
        f"Medians of {sizes.runs} runs for CLI start and launch, {sizes.big_runs} for status and the sweep, after one "
        "unmeasured warm-up of each CLI-start command; ours and the baseline alternate run by run.",
        "Everything runs against moto's server on 127.0.0.1 (no real AWS). API calls are HTTP requests counted from "
        "the emulator's access log (one werkzeug line per request, retries included). condor_annex's calls include "
        "its Price List attempts, which the emulator cannot answer (it falls back to the shipped price table).",
        "The emulator gets one speed fix (annex_admin/emulator_server.py): moto looks up an instance's tags by scanning every "
        "tag of every resource, which makes describing N tagged instances O(N²); both sides use the fixed server.",
        "Launch: condor_annex plans (stack, live instances, prices, pool configuration), uploads the annex "
        "configuration and launches by one instant CreateFleet; the baseline is one RunInstances from the same launch "
        "template with the same five tags. Instances are terminated after every run.",
        "Status: condor_annex also reads CONDOR_CONFIG (in a child process) and asks the collector, which is down here. "
        "Both sides mostly wait for the emulator to serialise the instances (milliseconds each in moto), so this ratio "
        "says little about AWS; the call counts do.",
        f"Sweep: {sweep_how}; the expired instances are re-created before every run.",
    ]


def parse_args(argv: list[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the small cases (default 5)")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of status and the sweep (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, 3/2 runs (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        return Sizes(runs=3, big_runs=2, launch=50, status=500, sweep=1000, expired=100)
    return Sizes(runs=max(args.runs, 1), big_runs=max(args.big_runs, 1))


def main(argv: list[str] | None = None) -> int:
    sizes = parse_args(argv)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="annex-bench-") as tmp:
        workdir = Path(tmp)
        emu = start(workdir)
        try:
            results, sweep_how = _all_cases(emu, workdir, sizes, print_progress)
        finally:
            emu.stop()
    table = render(results, environment_notes(sizes, sweep_how, time.perf_counter() - began))
    print(table)
    if sizes.launch < Sizes().launch:
        return 0  # a smoke run's figures do not replace the recorded ones
    RESULTS.write_text("# condor-annex benchmark\n\nWritten by `make bench` (`python -m bench.run`).\n\n" + table)
    print(f"(also written to {RESULTS})", file=sys.stderr)
    return 0


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _all_cases(emu: BenchEmulator, workdir: Path, sizes: Sizes,
               progress: Callable[[str], None]) -> tuple[list[Result], str]:
    home = workdir / "home"
    home.mkdir()
    env = child_environment(emu.url, home)
    clients = admin_clients(emu.url)
    results: list[Result] = []
    progress(f"CLI start ({sizes.runs} runs)…")
    results.append(bench_cli_start(emu, env, sizes.runs))

    region = fleet.fresh_region(emu, clients, env, workdir)
    scientist = dict(env, CONDOR_ANNEX_CREDENTIALS=str(region.bundle), CONDOR_CONFIG=str(write_pool(workdir)))
    progress(f"Launch of {sizes.launch} ({sizes.runs} runs)…")
    results.append(bench_launch(emu, clients, region, scientist, sizes.runs, sizes.launch))

    region = fleet.fresh_region(emu, clients, env, workdir)
    scientist["CONDOR_ANNEX_CREDENTIALS"] = str(region.bundle)
    progress(f"Status of {sizes.status} ({sizes.big_runs} runs)…")
    results.append(bench_status(emu, clients, region, scientist, sizes.big_runs, sizes.status))

    progress(f"Enforcer sweep over {sizes.sweep} ({sizes.big_runs} runs)…")
    sweep, how = bench_sweep(emu, clients, region, env, sizes.big_runs, sizes.sweep, sizes.expired)
    results.append(sweep)
    return results, how


if __name__ == "__main__":
    raise SystemExit(main())
