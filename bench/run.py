"""`make bench`: condor-annex, through the stack's broker, against the `aws` CLI on the same local emulator.

Every figure is the median of several runs (the table says how many), and every ratio compares two
commands measured in the same run against the same emulator, alternating run by run so that drift
in the emulator hits both sides alike. API calls are counted on the emulator's side from its call
log (see bench/emulator.py), retries and failed requests included, and split by who made them: the
command itself (the scientist's key, or the administrator's for `annex-admin`) and the stack
function it invoked (the broker or the enforcer, with its role's keys), which the emulator runs in a
child Python process per Invoke, as Lambda runs it.

    python -m bench.run [--runs 5] [--big-runs 3] [--scale 20000] [--quick]

Then one run each at scale (issue 17): a launch of 10,000 through the broker, status of `--scale`
instances (the default answer, and every instance through the broker's pages, with each answer's
size against Lambda's 6 MB response limit) and a sweep over them, with the functions' own times
from the emulator's log against their timeouts.

`--quick` is a smoke run (a tenth of the sizes): it prints its table and leaves bench/results.md alone.
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
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from annex_admin.stack import StackInfo
from annex_common.bundle import load_bundle
from bench import fleet
from bench.emulator import (FAKE_KEY_ID, Activity, BenchEmulator, Call, PinnedClients, admin_clients, child_environment,
                            operations, start, user_clients)
from annex_cloud.status_view import PAGE_ROWS
from templates import contract

RESULTS = Path(__file__).resolve().parent / "results.md"
POOL_PASSWORD = b"benchmark pool password"
# AWS Lambda's limit on a synchronous invocation's response; AWS's error message names it
# "maximum allowed payload size (6291456 bytes)".
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
ISSUE_SCALE = 50000  # issue 17's size for status and the sweep


@dataclass
class Sizes:
    runs: int = 5
    big_runs: int = 3
    launch: int = 500
    probe: int = 2500  # one launch, counted only: how the broker's calls grow with the count
    status: int = 5000
    sweep: int = 10000
    expired: int = 1000
    big_launch: int = 10000  # one run each from here: issue 17's scale
    # Status and the sweep. Issue 17 asks for 50,000. Every status answer lists the whole project, at
    # about 2 ms an instance in the emulator, and listing 50,000 takes 11 answers: on this shared
    # 2-core machine that alone is some 20 minutes. Worse, making them failed: one attempt at 50,000
    # had moto answer a CreateFleet of the benchmark's own with HTTP 500 after some 40,000 instances
    # (the cause is moto's and was not pinned down). The default is the size measured; the notes
    # extrapolate to ISSUE_SCALE by the growth they state.
    scale: int = 20000
    scale_expired: int = 2000

    @property
    def quick(self) -> bool:
        return self.launch < Sizes().launch


@dataclass
class Sample:
    """One run of one command: wall time, and what the emulator saw it (and its function) do."""

    wall: float
    client: int  # calls the command made itself
    function: int  # calls of the stack function(s) it invoked (0 for a baseline)
    function_ops: Counter
    invoked: Counter  # function name -> invocations
    function_seconds: float  # the functions' runs in their child processes, summed
    invoke_seconds: float  # from the server receiving each Invoke to its answer, summed
    startups: list[float]  # per Invoke: until the function's first AWS call
    lead: float  # from the command's start to its first AWS call (its start-up and its own work)
    slowest: list[tuple[str, float]]  # the function's steps, by time until its next call
    function_runs: list[float] = field(default_factory=list)  # per Invoke, the function's own run
    function_calls: list[Call] = field(default_factory=list)


@dataclass
class Result:
    case: str
    runs: int
    function_role: str  # "broker", "enforcer"
    client_role: str  # "client", "admin"
    ours: list[Sample] = field(default_factory=list)
    base: list[Sample] = field(default_factory=list)

    def median(self, values: Callable[[Sample], float], base: bool = False) -> float:
        return statistics.median(values(s) for s in (self.base if base else self.ours))

    def row(self) -> str:
        ours = self.median(lambda s: s.wall)
        cells = [self.case, str(self.runs), f"{ours:.2f} s"]
        if self.base:
            base = self.median(lambda s: s.wall, base=True)
            cells += [f"{base:.2f} s", f"{ours / base:.2f}"]
        else:
            cells += ["—", "—"]
        calls = f"{self.client_role} {_calls([s.client for s in self.ours])}"
        if any(s.function for s in self.ours):
            calls += f" + {self.function_role} {_calls([s.function for s in self.ours])}"
        calls += f" / {_calls([s.client for s in self.base])}" if self.base else " / —"
        cells.append(calls)
        return "| " + " | ".join(cells) + " |"


def _calls(values: list[int]) -> str:
    low, high = min(values), max(values)
    median = statistics.median(values)
    return f"{median:g}" if low == high else f"{median:g} ({low}–{high})"


def _ops(ops: Counter) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(ops.items(), key=lambda item: (-item[1], item[0])))


# --- measuring --------------------------------------------------------------------------------


def timed(emu: BenchEmulator, argv: list[str], env: dict[str, str], *, key: str = FAKE_KEY_ID,
          proofs: bool = False) -> tuple[Sample, subprocess.CompletedProcess]:
    """Wall time and emulator activity of one command, which must succeed. ``key`` signs the
    command's own calls; with ``proofs`` its identity proofs count as the broker's."""
    offset = emu.log_offset()
    began = time.time()  # the emulator's log stamps read the same clock
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} … exited {done.returncode}:\n{done.stdout[-1000:]}\n{done.stderr[-2000:]}")
    return sample(emu.activity_since(offset), elapsed, began, key, proofs), done


def sample(activity: Activity, wall: float, began: float, key: str, proofs: bool) -> Sample:
    split = activity.split(key, proofs=proofs)
    _expect(not split.other, f"calls by nobody expected: {_ops(operations(split.other))}")
    invokes = [c.at for c in split.client if c.operation == "Invoke"]
    spans = [inv.ended - at for at, inv in zip(invokes, activity.invocations)]
    return Sample(
        wall=wall,
        client=len(split.client),
        function=len(split.function),
        function_ops=operations(split.function),
        invoked=activity.functions_invoked(),
        function_seconds=sum(i.seconds for i in activity.invocations),
        invoke_seconds=sum(spans),
        startups=activity.startups(split.function),
        lead=(activity.calls[0].at - began) if activity.calls else wall,
        slowest=_slowest_steps(activity, split.function),
        function_runs=[i.seconds for i in activity.invocations],
        function_calls=split.function,
    )


def _slowest_steps(activity: Activity, calls: list) -> list[tuple[str, float]]:
    """Per operation of the function, the time from each call to its next call (or to the end of
    its invocation): the call itself plus whatever the function did with its answer."""
    ends = sorted(i.ended for i in activity.invocations)
    spent: Counter = Counter()
    for call, following in zip(calls, calls[1:] + [None]):
        end = next((e for e in ends if e >= call.at), call.at)
        until = min(following.at, end) if following is not None and following.at <= end else end
        spent[call.operation] += max(until - call.at, 0.0)
    return spent.most_common(3)


def bench_cli_start(emu: BenchEmulator, env: dict[str, str], runs: int) -> Result:
    ours, base = [fleet.script("condor_annex"), "--help"], [fleet.script("aws"), "--version"]
    timed(emu, ours, env), timed(emu, base, env)  # warm the file cache; not counted
    result = Result("CLI start: `condor_annex --help` vs `aws --version`", runs, "broker", "client")
    for _ in range(runs):
        result.ours.append(timed(emu, ours, env)[0])
        result.base.append(timed(emu, base, env)[0])
    return result


def launch_argv(count: int, name: str, project: str) -> list[str]:
    return [fleet.script("condor_annex"), "--project-id", project, "--duration", "72",
            "--instances", str(count), "--yes", "--annex-name", name]


def launch_through_broker(emu: BenchEmulator, clients: PinnedClients, scientist: dict[str, str], bundle: Path,
                          project: str, count: int, name: str) -> Sample:
    """One `condor_annex` launch, checked (count, tags) and then terminated (not measured)."""
    env = dict(scientist, CONDOR_ANNEX_CREDENTIALS=str(bundle))
    measured, _done = timed(emu, launch_argv(count, name, project), env,
                            key=load_bundle(bundle).aws_access_key_id, proofs=True)
    launched = fleet.live_ids(clients, [{"Name": f"tag:{contract.TAG_ANNEX_NAME}", "Values": [name]},
                                        {"Name": f"tag:{contract.TAG_PROJECT}", "Values": [project]}])
    _expect(len(launched) == count, f"condor_annex launched {len(launched)} of {count}")
    _expect(set(measured.invoked) == {contract.broker_function_name(contract.DEFAULT_STACK_NAME)},
            f"the launch invoked {dict(measured.invoked)}")
    fleet.terminate(clients, launched)
    return measured


def bench_launch(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                 scientist: dict[str, str], workdir: Path, runs: int, count: int) -> Result:
    """Each run's scientist is of a project of her own, so that every launch meets the same state: no
    live instance and no recent launch in the project (see ``bench_launch_probe`` for the other case)."""
    stack = region.stack
    result = Result(f"Launch {count}: `condor_annex … --instances {count} --yes` (broker) vs "
                    f"`aws ec2 run-instances --count {count}`", runs, "broker", "client")
    for run in range(runs):
        project, user = f"{fleet.PROJECT}-L{run}", f"{fleet.USER}-l{run}"
        bundle = fleet.issue_bundle(env, workdir, project, user)
        result.ours.append(launch_through_broker(emu, clients, scientist, bundle, project, count, f"bench-launch-{run}"))

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
        measured, done = timed(emu, base, env)
        launched = [i["InstanceId"] for i in json.loads(done.stdout)["Instances"]]
        _expect(len(launched) == count, f"aws run-instances launched {len(launched)} of {count}")
        fleet.terminate(clients, launched)
        result.base.append(measured)
    return result


@dataclass
class Probe:
    count: int
    big: Sample  # a launch of `count` in a fresh project
    again: Sample  # then a launch of `small` in the same project, right after `count` ended
    small: int


def bench_launch_probe(emu: BenchEmulator, clients: PinnedClients, env: dict[str, str], scientist: dict[str, str],
                       workdir: Path, count: int, small: int) -> Probe:
    """Calls only, one run each: a launch of several fleet rounds, then a launch in the same project
    within the broker's 15 minutes of "recent launches" after those instances ended."""
    project, user = f"{fleet.PROJECT}-P", f"{fleet.USER}-p"
    bundle = fleet.issue_bundle(env, workdir, project, user)
    big = launch_through_broker(emu, clients, scientist, bundle, project, count, "bench-probe-big")
    again = launch_through_broker(emu, clients, scientist, bundle, project, small, "bench-probe-again")
    return Probe(count, big, again, small)


@dataclass
class Payload:
    rows: int
    invokes: int  # the broker's answers the client asked for: the default one, then the instance pages
    stdout_bytes: int  # what `condor_annex status --output json` printed


def bench_status(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                 runs: int, count: int) -> tuple[Result, Payload]:
    expiry = fleet.lease_end(72)
    for start_at in range(0, count, fleet.FLEET_CHUNK):
        size = min(fleet.FLEET_CHUNK, count - start_at)
        fleet.create_instances(clients, region.stack, size, fleet.annex_tags(f"bench-status-{start_at // 1000}", expiry))
    result = Result(f"Status of {count:,}: `condor_annex status --output json` (broker) vs "
                    "`aws ec2 describe-instances --filters tag:…project`", runs, "broker", "client")
    ours = [fleet.script("condor_annex"), "status", "--output", "json"]
    base = [fleet.script("aws"), "ec2", "describe-instances", "--output", "json",
            "--filters", f"Name=tag:{contract.TAG_PROJECT},Values={fleet.PROJECT}"]
    key = region.scientist.aws_access_key_id
    stdout_bytes = 0
    for _ in range(runs):
        measured, done = timed(emu, ours, env, key=key, proofs=True)
        _expect(len(json.loads(done.stdout)) == count, "condor_annex status missed instances")
        stdout_bytes = len(done.stdout.encode())
        result.ours.append(measured)
        measured, done = timed(emu, base, env)
        found = sum(len(r["Instances"]) for r in json.loads(done.stdout)["Reservations"])
        _expect(found == count, f"aws describe-instances found {found} of {count}")
        result.base.append(measured)
    return result, Payload(count, sum(result.ours[0].invoked.values()), stdout_bytes)


@dataclass
class Answers:
    """One `status` asked through the broker as condor_annex asks it, and each answer's size."""

    sample: Sample
    bytes: list[int]  # each Invoke's response body, in order: the default answer, then any instance pages
    annexes: int
    rows: int


def broker_status(emu: BenchEmulator, region: fleet.Region, workdir: Path, *, instances: bool) -> Answers:
    """annex_user.manage.annex_status with the scientist's bundle (annex_user.broker_client.Broker
    signs each request as condor_annex does), keeping the size of every Invoke response body exactly
    as the emulator sent it."""
    import io

    from botocore.response import StreamingBody

    from annex_common.aws import INVOKE_CONFIG
    from annex_user.broker_client import Broker
    from annex_user.context import AnnexContext
    from annex_user.manage import annex_status

    bundle = region.scientist
    clients = user_clients(emu.url, bundle.aws_access_key_id, bundle.aws_secret_access_key, workdir)
    sizes: list[int] = []

    def keep(parsed: dict, **_: object) -> None:
        body = parsed["Payload"].read()
        sizes.append(len(body))
        parsed["Payload"] = StreamingBody(io.BytesIO(body), len(body))

    clients.client("lambda", config=INVOKE_CONFIG).meta.events.register("after-call.lambda.Invoke", keep)
    broker = Broker(clients, contract.broker_function_name(bundle.stack_name), bundle.region, bundle.broker_arn)
    context = AnnexContext(bundle, broker, datetime.now(timezone.utc).replace(microsecond=0))
    offset, began, started = emu.log_offset(), time.time(), time.perf_counter()
    report = annex_status(context, annex_name=None, condor_config=None, instances=instances)
    measured = sample(emu.activity_since(offset), time.perf_counter() - started, began,
                      bundle.aws_access_key_id, proofs=True)
    return Answers(measured, sizes, len(report.summaries), len(report.rows))


@dataclass
class Scale:
    """One run each, at issue 17's sizes: a launch through the broker, status, a sweep."""

    launch: Sample
    launched: int
    status: Answers  # the default answer alone (`condor_annex status`)
    listing: Answers  # every instance, page after page (`condor_annex status --output json`)
    sweep: Sample
    swept: int
    expired: int
    timeouts: dict[str, float]  # function role -> its timeout, as deployed
    emulator_mb: int  # the emulator's resident memory after the scale cases

    def results(self) -> list[Result]:
        cases = [
            (f"Launch {self.launched:,} (one run): `condor_annex … --instances {self.launched} --yes` (broker)",
             self.launch, "broker", "client"),
            (f"Status of {self.status.rows or self.listing.rows:,}, default answer (one run): `condor_annex status` "
             "(broker, one summary per annex)", self.status.sample, "broker", "client"),
            (f"Status of {self.listing.rows:,}, every instance (one run): `condor_annex status --output json` "
             "(broker, pages)", self.listing.sample, "broker", "client"),
            (f"Enforcer sweep over {self.swept:,} ({self.expired:,} expired, one run): `annex-admin enforce`",
             self.sweep, "enforcer", "admin"),
        ]
        made = []
        for case, measured, function, client in cases:
            made.append(Result(case, 1, function, client, ours=[measured]))
        return made


def function_timeouts(clients: PinnedClients, stack: StackInfo) -> dict[str, float]:
    names = {"broker": contract.broker_function_name(contract.DEFAULT_STACK_NAME),
             "enforcer": stack.output(contract.OUT_ENFORCER_FUNCTION)}
    return {role: float(clients.client("lambda").get_function_configuration(FunctionName=name)["Timeout"])
            for role, name in names.items()}


def resident_mb(pid: int) -> int:
    """A process's resident memory (Linux; 0 elsewhere)."""
    try:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) // 1024


def bench_scale_status_and_sweep(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                                 workdir: Path, count: int, expired: int) -> tuple[Answers, Answers, Sample]:
    """`count` instances made directly in the emulator (instant fleets of 1,000, one annex each, in
    extra subnets of the stack's VPC where its own are full): status's default answer, every
    instance through the pages, then a sweep after `expired` of them were re-tagged with an ended lease."""
    subnets = fleet.add_subnets(clients, region.stack, count)
    expiry = fleet.lease_end(72)
    ids: list[str] = []
    for start_at in range(0, count, fleet.FLEET_CHUNK):
        size = min(fleet.FLEET_CHUNK, count - start_at)
        ids += fleet.create_instances(clients, region.stack, size,
                                      fleet.annex_tags(f"bench-scale-{start_at // 1000:02d}", expiry), subnets)
    default = broker_status(emu, region, workdir, instances=False)
    _expect(default.rows == 0 and default.annexes == -(-count // fleet.FLEET_CHUNK),
            f"status's default answer: {default.annexes} annexes, {default.rows} rows")
    listing = broker_status(emu, region, workdir, instances=True)
    _expect(listing.rows == count, f"status through the pages found {listing.rows} of {count}")
    doomed = ids[:expired]
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime(contract.EXPIRY_FORMAT)
    for start_at in range(0, expired, 1000):
        clients.ec2.create_tags(Resources=doomed[start_at:start_at + 1000],
                                Tags=[{"Key": contract.TAG_EXPIRY, "Value": past}])
    swept, _done = timed(emu, [fleet.script("annex-admin"), "enforce"], env)
    left = set(fleet.live_ids(clients))
    _expect(not (left & set(doomed)) and len(left) == count - expired,
            f"the sweep left {len(left & set(doomed))} expired and {len(left)} live instances")
    return default, listing, swept


def bench_sweep(emu: BenchEmulator, clients: PinnedClients, region: fleet.Region, env: dict[str, str],
                runs: int, total: int, expired: int) -> Result:
    """A sweep over `total` annex instances, `expired` of which have an ended lease, by
    `annex-admin enforce`, which invokes the stack's enforcer function."""
    present = len(fleet.live_ids(clients))
    live_more = total - expired - present
    _expect(live_more >= 0, f"{present} instances already exist, more than the sweep case wants")
    if live_more:
        fleet.create_instances(clients, region.stack, live_more, fleet.annex_tags("bench-sweep-live", fleet.lease_end(72)))
    enforcer = region.stack.output(contract.OUT_ENFORCER_FUNCTION)
    result = Result(f"Enforcer sweep over {total:,} ({expired:,} expired): `annex-admin enforce`", runs, "enforcer", "admin")
    for _ in range(runs):
        past = datetime.now(timezone.utc) - timedelta(hours=1)
        doomed = set(fleet.create_instances(clients, region.stack, expired, fleet.annex_tags("bench-sweep-expired", past)))
        measured, _done = timed(emu, [fleet.script("annex-admin"), "enforce"], env)
        _expect(set(measured.invoked) == {enforcer}, f"the sweep invoked {dict(measured.invoked)}")
        left = set(fleet.live_ids(clients))
        _expect(not (left & doomed) and len(left) == total - expired,
                f"the sweep left {len(left & doomed)} expired and {len(left)} live instances")
        result.ours.append(measured)
    return result


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


@dataclass
class Run:
    sizes: Sizes
    results: list[Result]
    probe: Probe
    payload: Payload
    scale: Scale
    seconds: float = 0.0


def render(run: Run) -> str:
    lines = [
        "| Case | Runs | condor-annex (median) | Baseline (median) | Wall ratio | API calls (ours / baseline) |",
        "|---|---|---|---|---|---|",
        *(r.row() for r in run.results + run.scale.results()),
        "",
        *(f"- {note}" for note in notes(run)),
    ]
    return "\n".join(lines) + "\n"


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def where_time_goes(result: Result) -> str:
    """The median run's wall time, split: the command's own share (start-up, its own work, printing),
    and per Invoke the function's start-up and its work."""
    wall = result.median(lambda s: s.wall)
    invoke = result.median(lambda s: s.invoke_seconds)
    invokes = result.median(lambda s: sum(s.invoked.values()))
    startup = _med([x for s in result.ours for x in s.startups])
    work = result.median(lambda s: s.invoke_seconds - sum(s.startups))
    steps: Counter = Counter()
    for s in result.ours:
        for op, seconds in s.slowest:
            steps[op] += seconds / len(result.ours)
    slowest = ", ".join(f"{op} {seconds:.2f} s" for op, seconds in steps.most_common(2))
    lead = result.median(lambda s: s.lead)
    return (f"{wall:.2f} s = {wall - invoke:.2f} s in the command itself ({lead:.2f} s of it before its first AWS "
            f"call) + {invoke:.2f} s in {invokes:g} Invoke(s) "
            f"({startup:.2f} s per Invoke before the {result.function_role}'s first AWS call; its work {work:.2f} s, "
            f"mostly {slowest} until its next step)")


def notes(run: Run) -> list[str]:
    from importlib.metadata import version

    sizes, results, probe, payload = run.sizes, run.results, run.probe, run.payload
    _cli, launch, status, sweep = results
    first = launch.ours[0]
    added = probe.big.function_ops - first.function_ops
    again = probe.again.function_ops - first.function_ops
    rounds = probe.big.function_ops["CreateFleet"]
    constants = {first.function - 2 * first.function_ops["CreateFleet"], probe.big.function - 2 * rounds}
    constant = (f"So the broker makes a constant {constants.pop()} calls plus 2 per fleet round of up to 1,000 instances"
                if len(constants) == 1 else
                f"The broker's calls less 2 per CreateFleet differ between the two launches ({sorted(constants)})")
    return [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPU(s) shared with other "
        f"work, Python {platform.python_version()}, moto {version('moto')}, awscli {version('awscli')}, boto3 "
        f"{version('boto3')}; the whole run took {run.seconds:.0f} s.",
        f"Medians of {sizes.runs} runs for CLI start and launch, {sizes.big_runs} for status and the sweep, after one "
        "unmeasured warm-up of each CLI-start command; ours and the baseline alternate run by run. Wall ratio: "
        "condor-annex's median over the baseline's, measured in the same run.",
        "Everything runs against the project's emulator (annex_sandbox/server.py, moto's server on "
        "127.0.0.1, IAM enforcement off); its Invoke runs the deployed function's zip in a child Python process with "
        "the function's role's credentials. API calls are counted from the emulator's call log and split by key: "
        "*client* = the scientist's IAM user (for the sweep, *admin* = the administrator running `annex-admin`), "
        "*broker* / *enforcer* = the function's role (the scientist's identity proof, which the broker sends to STS, "
        "counts as the broker's). The baseline's calls are all its own. The emulator has no Price List API: setup "
        "falls back to the price table shipped for us-east-1 (a region with no price at all would have every launch "
        "refused). Caps are issued with room to spare (10,000 instances, $1,000,000, 168 h leases).",
        "The emulator keeps one speed fix: moto looks up an instance's tags by scanning every tag of every resource "
        "(O(N²) to describe N instances); both sides use the fixed server.",
        f"Launch: each run is a new project's first launch (a new scientist, unmeasured `issue-credentials`). "
        f"The client asks the broker twice (plan, then launch; she signs a GetCallerIdentity proof for each): "
        f"{_ops(first.function_ops)} on the broker's side (each Invoke reads the user, the project's caps and the "
        "prices from the registry, lists the project's live instances and queries its recent launches; the launch "
        "also writes its request record, takes and frees the project's lock, uploads the annex's two objects (its settings, and its token or the pool password), "
        "records the fleet's instances and finishes the request). The baseline is one RunInstances from the same launch "
        "template with the same five tags, by the administrator (the scientist's keys may no longer launch); it does "
        "no planning, no caps, no prices and no configuration upload. Instances are terminated after every run. "
        f"Where the time goes (median): {where_time_goes(launch)}.",
        f"Launch scaling (one run, calls only): {probe.count:,} instances in a new project took client "
        f"{probe.big.client} + broker {probe.big.function} calls, {rounds} of them CreateFleet; against the "
        f"500-instance launch it added {_ops(added)} (one CreateFleet and one PutItem launch record per 1,000). "
        f"{constant}. "
        f"A launch of {probe.small} in the same project right after those {probe.count:,} were terminated took "
        f"broker {probe.again.function} calls: {_ops(again) or 'nothing more'} more than a first launch, "
        "because the broker counts the project's launches of the last 15 minutes (its registry records) and "
        "asks EC2 about each one it no longer sees live, in both plan and launch.",
        f"Status: `condor_annex status --output json` asks the broker {payload.invokes} times (its default "
        f"answer, then the instance pages of up to {PAGE_ROWS:,} rows) and prints {payload.stdout_bytes:,} bytes "
        f"for {payload.rows:,} instances. Each Invoke lists the project's instances anew: one DescribeInstances "
        "here, because moto counts MaxResults in reservations (here one per fleet of 1,000), where AWS counts "
        f"instances (pages of 1,000: {-(-payload.rows // 1000)} calls an Invoke for {payload.rows:,} instances). "
        "condor_annex also reads CONDOR_CONFIG and asks the collector, which is down "
        "here. Both sides mostly wait for the emulator to serialise instances (milliseconds each in moto), so "
        f"the ratio says little about AWS; the call counts do. Where the time goes (median): "
        f"{where_time_goes(status)}.",
        f"Sweep: `annex-admin enforce` reads the stack (DescribeStacks) and invokes the enforcer function; the "
        f"enforcer's calls: {_ops(sweep.ours[0].function_ops)} (it lists the live instances twice, by the annex "
        "name tag and by the stack's launch-template tag, each listing unpaged). The expired instances are re-created before every "
        f"run. Where the time goes (median): {where_time_goes(sweep)}.",
        *scale_notes(run.scale, probe),
    ]


def _pace(calls: list[Call], operation: str) -> float:
    """Median seconds between one call of ``operation`` and the next (0 with fewer than two)."""
    at = [c.at for c in calls if c.operation == operation]
    return _med([b - a for a, b in zip(at, at[1:])])


def _pages(instances: int) -> int:
    """DescribeInstances pages on AWS, which counts MaxResults (the callers ask 1,000) in instances."""
    return -(-instances // 1000)


def scale_notes(scale: Scale, probe: Probe) -> list[str]:
    launch, default, listing, sweep = scale.launch, scale.status, scale.listing, scale.sweep
    rounds = launch.function_ops["CreateFleet"]
    added = launch.function_ops - probe.big.function_ops
    per_round = max(rounds - probe.big.function_ops["CreateFleet"], 1)
    plan_run, launch_run = (launch.function_runs + [0.0, 0.0])[:2]
    pace = _pace(launch.function_calls, "CreateFleet")
    rounds_note = (f"Against the launch of {probe.count:,} it added {_ops(added)}: per fleet round "
                   f"{_ops(Counter({op: k // per_round for op, k in added.items()}))}. "
                   if rounds > probe.big.function_ops["CreateFleet"] else "")
    pace_note = (f"Rounds follow one another {pace:.1f} s apart here (median; CreateFleet of 1,000 in moto and the "
                 "launch record). " if rounds > 1 else "")
    broker_limit, enforcer_limit = scale.timeouts["broker"], scale.timeouts["enforcer"]
    pages = listing.bytes[1:]
    largest = max(pages, default=0)
    per_row = largest / min(listing.rows, PAGE_ROWS) if listing.rows else 0.0
    slowest_answer = max(listing.sample.function_runs, default=0.0)
    n = listing.rows
    sweep_run = max(sweep.function_runs, default=0.0)
    return [
        f"Scale (issue 17; one run each, so single figures on a shared machine: read the counts, and the times as "
        f"rough): a launch of {scale.launched:,} through the broker, a new project's first, in a fresh region; "
        f"then, in another fresh region, {n:,} instances of one project made directly in the "
        f"emulator (instant fleets of 1,000, each its own annex, in extra /20 subnets of the stack's VPC where its "
        f"own are full, under caps raised to hold them; the emulator's process held {scale.emulator_mb:,} MB at the "
        "end), asked for by status as condor_annex asks (its "
        "annex_status and broker client, in the benchmark's process), then swept. The functions' own times are "
        "the emulator's (its log times each Invoke's child process); the emulator enforces each function's "
        f"timeout ({broker_limit:g} s for the broker, {enforcer_limit:g} s for the enforcer), so every case here "
        "finished within it.",
        f"Launch of {scale.launched:,}: {launch.wall:.1f} s at the command; the broker's own runs {plan_run:.1f} s "
        f"(plan) and {launch_run:.1f} s (launch) of its {broker_limit:g} s; client {launch.client} + broker "
        f"{launch.function} calls ({_ops(launch.function_ops)}), {rounds} of them CreateFleet, one per round of up "
        f"to 1,000. {rounds_note}{pace_note}On AWS the calls "
        "are the same (a new project has no live instance to list); a launch into a project that already runs "
        "instances lists them first, one DescribeInstances per 1,000 in plan and in launch.",
        f"Status of {n:,}, default answer: {default.bytes[0]:,} bytes for {default.annexes} annexes (one summary "
        f"each, and the project's totals), {default.sample.wall:.1f} s at the client, "
        f"{max(default.sample.function_runs, default=0.0):.1f} s in the broker; client {default.sample.client} + "
        f"broker {default.sample.function} calls ({_ops(default.sample.function_ops)}). Its size grows with the "
        f"number of annexes, not of instances (about {default.bytes[0] / max(default.annexes, 1):,.0f} bytes an "
        f"annex), far under Lambda's {LAMBDA_RESPONSE_LIMIT:,}-byte response limit.",
        f"Status of {n:,}, every instance: {sum(listing.sample.invoked.values())} Invokes (the default answer, then "
        f"{len(pages)} page(s) of up to {PAGE_ROWS:,} rows); the largest page {largest:,} bytes (about "
        f"{per_row:.0f} bytes a row, {largest / LAMBDA_RESPONSE_LIMIT:.0%} of the limit), {sum(listing.bytes):,} "
        f"bytes in all; {listing.sample.wall:.1f} s at the client; the broker's slowest answer took "
        f"{slowest_answer:.1f} s of its {broker_limit:g} s. Every answer lists the project's instances anew (moto: "
        f"one DescribeInstances each, paging by reservation; AWS: {_pages(n)} pages of 1,000 each, so "
        f"{_pages(n) * sum(listing.sample.invoked.values())} DescribeInstances for the whole listing: "
        "(1 + N / 5,000) × N / 1,000, growing with the square of N). A page's size is fixed by its row count; what bounds status now is the time one answer "
        f"takes to list the whole project: in the emulator {slowest_answer / max(n, 1) * 1000:.2f} ms an instance, "
        f"so about {int(broker_limit / max(slowest_answer, 1e-9) * n):,} instances would fill the broker's "
        f"{broker_limit:g} s (extrapolated linearly; AWS answers a page of 1,000 in a round trip, not in moto's "
        "seconds).",
        f"Sweep over {scale.swept:,} ({scale.expired:,} of them re-tagged with an ended lease): {sweep.wall:.1f} s at "
        f"`annex-admin enforce`, {sweep_run:.1f} s in the enforcer of its {enforcer_limit:g} s; admin "
        f"{sweep.client} + enforcer {sweep.function} calls ({_ops(sweep.function_ops)}). It lists the live instances "
        f"twice (by the annex name tag and by the stack's launch-template tag): on AWS {2 * _pages(scale.swept)} "
        f"DescribeInstances for {scale.swept:,} instances, and one TerminateInstances per 500 ended. In the emulator "
        f"that is {sweep_run / max(scale.swept, 1) * 1000:.2f} ms an instance, so about "
        f"{int(enforcer_limit / max(sweep_run, 1e-9) * scale.swept):,} instances would fill its {enforcer_limit:g} s "
        "(extrapolated linearly).",
        *([] if n >= ISSUE_SCALE else [_extrapolated(n, slowest_answer, sweep_run, largest, broker_limit, enforcer_limit)]),
    ]


def _extrapolated(n: int, answer: float, sweep: float, largest: int, broker_limit: float, enforcer_limit: float) -> str:
    """Issue 17's 50,000, from the largest size measured here, by the growth stated above."""
    grow = ISSUE_SCALE / max(n, 1)
    invokes = 1 + -(-ISSUE_SCALE // PAGE_ROWS)
    full_page = (f"the largest measured, {largest:,} bytes, is a full page whenever N ≥ {PAGE_ROWS:,}" if n >= PAGE_ROWS
                 else f"a full page would be about {largest / max(n, 1) * PAGE_ROWS:,.0f} bytes at the size a row measured")
    return (
        f"At {ISSUE_SCALE:,} (issue 17's size; not measured in this run, extrapolated from {n:,}): status's "
        "default answer stays one summary per annex; the listing takes "
        f"{invokes} Invokes, each page at most {PAGE_ROWS:,} rows ({full_page}), and {invokes * _pages(ISSUE_SCALE)} DescribeInstances on AWS "
        f"({_pages(ISSUE_SCALE)} an Invoke); in this emulator each answer would take about {answer * grow:.0f} s of "
        f"the broker's {broker_limit:g} s and the sweep about {sweep * grow:.0f} s of the enforcer's "
        f"{enforcer_limit:g} s, with {2 * _pages(ISSUE_SCALE)} DescribeInstances on AWS."
    )


def parse_args(argv: list[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the small cases (default 5)")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of status and the sweep (default 3)")
    parser.add_argument("--scale", type=int, default=Sizes().scale,
                        help=f"instances for the one-run status and sweep (default {Sizes().scale:,}; a tenth with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the sizes, 3/2 runs: a smoke test that leaves bench/results.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        return Sizes(runs=3, big_runs=2, launch=50, probe=1500, status=500, sweep=1000, expired=100,
                     big_launch=1000, scale=max(args.scale // 10, 10), scale_expired=max(args.scale // 100, 1))
    return Sizes(runs=max(args.runs, 1), big_runs=max(args.big_runs, 1), scale=max(args.scale, 10),
                 scale_expired=max(args.scale // 10, 1))


def main(argv: list[str] | None = None) -> int:
    sizes = parse_args(argv)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="annex-bench-") as tmp:
        workdir = Path(tmp)
        emu = start(workdir)
        try:
            run = all_cases(emu, workdir, sizes, print_progress)
        finally:
            emu.stop()
    run.seconds = time.perf_counter() - began
    table = render(run)
    print(table)
    if sizes.quick:
        print("(a smoke run: bench/results.md left as it was)", file=sys.stderr)
        return 0
    RESULTS.write_text("# condor-annex benchmark\n\nWritten by `make bench` (`python -m bench.run`).\n\n" + table)
    print(f"(also written to {RESULTS})", file=sys.stderr)
    return 0


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def all_cases(emu: BenchEmulator, workdir: Path, sizes: Sizes, progress: Callable[[str], None]) -> Run:
    home = workdir / "home"
    home.mkdir()
    env = child_environment(emu.url, home)
    clients = admin_clients(emu.url)
    results: list[Result] = []
    progress(f"CLI start ({sizes.runs} runs)…")
    results.append(bench_cli_start(emu, env, sizes.runs))

    region = fleet.fresh_region(emu, clients, env, workdir)
    scientist = dict(env, CONDOR_CONFIG=str(write_pool(workdir)))
    progress(f"Launch of {sizes.launch} through the broker ({sizes.runs} runs)…")
    results.append(bench_launch(emu, clients, region, env, scientist, workdir, sizes.runs, sizes.launch))
    # A fresh region again: moto keeps a terminated instance's address taken, and answers a full
    # subnet (4,091 addresses) with an HTTP 500, not a capacity error.
    fleet.fresh_region(emu, clients, env, workdir)
    progress(f"Launch of {sizes.probe} and relaunch of {sizes.launch} (calls only)…")
    probe = bench_launch_probe(emu, clients, env, scientist, workdir, sizes.probe, sizes.launch)

    region = fleet.fresh_region(emu, clients, env, workdir)
    scientist["CONDOR_ANNEX_CREDENTIALS"] = str(region.bundle)
    progress(f"Status of {sizes.status} through the broker ({sizes.big_runs} runs)…")
    status, payload = bench_status(emu, clients, region, scientist, sizes.big_runs, sizes.status)
    results.append(status)

    progress(f"Enforcer sweep over {sizes.sweep} ({sizes.big_runs} runs)…")
    results.append(bench_sweep(emu, clients, region, env, sizes.big_runs, sizes.sweep, sizes.expired))

    progress(f"Launch of {sizes.big_launch} through the broker (one run)…")
    region = fleet.fresh_region(emu, clients, env, workdir)
    timeouts = function_timeouts(clients, region.stack)
    bundle = fleet.issue_bundle(env, workdir, f"{fleet.PROJECT}-S", f"{fleet.USER}-s")
    launch = launch_through_broker(emu, clients, scientist, bundle, f"{fleet.PROJECT}-S", sizes.big_launch,
                                   "bench-scale-launch")
    region = fleet.fresh_region(emu, clients, env, workdir, max_instances=str(2 * sizes.scale))
    progress(f"Status of {sizes.scale} and a sweep over them (one run each)…")
    default, listing, swept = bench_scale_status_and_sweep(emu, clients, region, env, workdir, sizes.scale,
                                                           sizes.scale_expired)
    scale = Scale(launch, sizes.big_launch, default, listing, swept, sizes.scale, sizes.scale_expired, timeouts,
                  resident_mb(emu.process.pid))
    return Run(sizes, results, probe, payload, scale)


if __name__ == "__main__":
    raise SystemExit(main())
