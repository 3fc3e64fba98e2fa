"""condor_annex: thin typer commands; each parses, calls one core function, renders with rich.

Heavy modules (boto3, the htcondor bindings) are imported inside the commands so that `--help`
answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from typing_extensions import Annotated

from annex_common.cli_support import (
    HELP_OPTIONS,
    LazyConsole,
    OutputFormat,
    PlainUsage,
    err_console,
    print_json,
    print_version,
    run_app,
    require_confirmation,
    run_guarded,
    waiting,
)

app = typer.Typer(
    name="condor_annex",
    help="Expand your HTCondor pool into AWS for a while, within your project's caps.\n\n"
    # \b: click then keeps the paragraph's lines as written, so the command is never cut.
    "\b\nLaunch is the default command:\n  condor_annex --project-id P --expiry 'YYYY-MM-DD HH:MM' --instances N",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
    pretty_exceptions_enable=False,
    # Plain help and usage errors: rendering them with rich costs more than the whole start-up.
    rich_markup_mode=None,
)
out = LazyConsole(highlight=False, soft_wrap=True, words_on_terminal=True)


Credentials = Annotated[Optional[str], typer.Option("--credentials", help="Credentials bundle (default: $CONDOR_ANNEX_CREDENTIALS, then ~/.condor/annex-credentials.toml).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
AnnexName = Annotated[Optional[str], typer.Option("--annex-name", help="Name of the annex.")]
Expiry = Annotated[Optional[str], typer.Option("--expiry", help="Lease end, 'YYYY-MM-DD HH:MM' local time (or with UTC, Z, an offset or the local zone as shown).")]
Duration = Annotated[Optional[float], typer.Option("--duration", help="Lease length in hours from now.")]
Output = Annotated[OutputFormat, typer.Option("--output", help="table for people, json for scripts (JSON alone on stdout).")]


def _show_version(value: bool) -> None:
    if value:
        print_version("condor_annex")
        raise typer.Exit()


@app.callback()
def program_options(
    version: Annotated[bool, typer.Option("--version", "-v", callback=_show_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Options of condor_annex itself."""


def _bundle_path(credentials: str | None) -> Path:
    from annex_common.bundle import check_named_bundle, locate_bundle

    variable = os.environ.get("CONDOR_ANNEX_CREDENTIALS")
    path = locate_bundle(credentials, variable, Path.home())
    if credentials or variable:
        return check_named_bundle(path, "--credentials" if credentials else "$CONDOR_ANNEX_CREDENTIALS")
    return path


def _lease_end(expiry: str | None, duration: float | None, now, running_annex: str | None = None):
    from annex_common.errors import BadInput
    from annex_user import expiry as lease

    if (expiry is None) == (duration is None):
        raise BadInput(
            "give exactly one of --expiry and --duration",
            "both were given" if expiry is not None else "neither was given",
            "Pass --expiry 'YYYY-MM-DD HH:MM' or --duration HOURS.",
        )
    if expiry is not None:
        return lease.parse_expiry(expiry, now=now, running_annex=running_annex)
    return lease.parse_duration(duration, now=now, running_annex=running_annex)


@app.command()
def launch(
    project_id: Annotated[str, typer.Option("--project-id", help="Your project (must match your credentials).")],
    instances: Annotated[int, typer.Option("--instances", "--count", help="How many instances.")],
    expiry: Expiry = None,
    duration: Duration = None,
    annex_name: AnnexName = None,
    instance_type: Annotated[Optional[str], typer.Option("--instance-type", help="One of the stack's instance types (default: the fleet picks).")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="Use spot capacity (price-capacity-optimized).")] = False,
    idle: Annotated[int, typer.Option("--idle", help="Minutes unclaimed before an instance shuts down.")] = 15,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Ask the broker for the plan; launch, mint and upload nothing.")] = False,
    own_pool: Annotated[bool, typer.Option("--own-pool", help="Join your own pool (the one CONDOR_CONFIG describes) with a token minted here with its key; only where your administrator allows it.")] = False,
    yes: Yes = False,
    output: Output = OutputFormat.table,
    credentials: Credentials = None,
    debug: Debug = False,
) -> None:
    """Launch an annex (the default command)."""

    def action() -> None:
        from datetime import datetime, timezone

        from annex_user import launch as core
        from annex_user.context import open_context

        now = datetime.now(timezone.utc).replace(microsecond=0)
        lease_end = _lease_end(expiry, duration, now)
        ctx = open_context(_bundle_path(credentials), now=now)
        # Her own pool's configuration is read only with --own-pool (her project must allow it).
        condor_config = (os.environ.get("CONDOR_CONFIG") or "") if own_pool else None
        as_json = output is OutputFormat.json
        command = core.command_key(ctx, {
            "project_id": project_id, "instances": instances, "expiry": expiry, "duration": duration,
            "annex_name": annex_name, "instance_type": instance_type, "spot": spot, "idle": idle,
            "own_pool": condor_config,
        })
        earlier = None if dry_run else core.unanswered_launch(command)
        if earlier is not None:
            # She said yes to that request; the broker answers it from its record, never twice.
            plan = core.resume_plan(ctx, earlier, condor_config)
            _print_plan(_launch_plan_rows(plan), err_console if as_json else out)
            err_console.print(
                f"This command's earlier launch of annex {plan.annex_name} (request {plan.request_id}) got no "
                "answer: asking the broker for it again. It never launches a request twice.", markup=False,
            )
        else:
            with waiting("Planning: the broker checks caps, prices and the pool"):
                plan = core.plan_launch(
                    ctx,
                    core.LaunchRequest(
                        project_id=project_id,
                        expiry=lease_end,
                        count=instances,
                        annex_name=annex_name,
                        instance_type=instance_type,
                        spot=spot,
                        idle_minutes=idle,
                        own_pool=condor_config,
                    ),
                    show_broken=True,
                )
            if not _plan_then_ask(
                _launch_plan_rows(plan), as_json=as_json, dry_run=dry_run, summary=lambda: core.plan_summary(plan),
                dry_note="Dry run: the broker would launch this annex. Nothing was launched, minted or uploaded.",
                question=f"Launch {plan.count} instance(s)?", yes=yes, refusal=core.refusal_of(plan),
            ):
                return
        try:
            with waiting(f"Launching {plan.count} instance(s) through the broker"):
                result = core.execute_launch(ctx, plan, command)
        except KeyboardInterrupt:
            raise _launch_interrupted(plan) from None
        if as_json:
            print_json(core.launch_summary(result))
        else:
            _print_launch(result)
        if result.shortfall:
            raise SystemExit(1)

    run_guarded(action, debug=debug)


def _launch_interrupted(plan):
    from annex_user.broker_client import sent_then_interrupted

    return sent_then_interrupted(
        "launching", plan.annex_name,
        f"Run the same command again for the broker's answer: it sends the same request ({plan.request_id}), "
        "which is never launched twice.",
    )


def _plan_then_ask(
    plan: "PlanRows", *, as_json: bool, dry_run: bool, summary: Callable[[], dict], dry_note: str, question: str,
    yes: bool, refusal: Exception | None,
) -> bool:
    """The one rule of every command that commits money (launch, extend): show the plan; refuse
    one that breaks a cap (exit 2, the cap named), dry run or not; then end a dry run (its JSON,
    with --output json) or ask (unless --yes). True when it may go ahead."""
    _print_plan(plan, err_console if as_json else out)  # the plan is a message when stdout carries JSON
    if refusal is not None:
        if dry_run and as_json:
            print_json({"dry_run": True, **summary()})
        raise refusal
    if dry_run:
        if as_json:
            print_json({"dry_run": True, **summary()})
        else:
            out.print(dry_note)
        return False
    require_confirmation(question, assume_yes=yes)
    return True


PlanRows = tuple[str, list[tuple[str, str]]]  # a title and (label, value) rows


def _print_plan(plan: PlanRows, console) -> None:
    from annex_common.tables import print_fields

    title, rows = plan
    print_fields(console, title, rows)


def _launch_plan_rows(plan) -> PlanRows:
    from annex_user.expiry import format_local

    return (
        f"[bold]Annex {plan.annex_name}[/] for project {plan.project_id} (owner {plan.owner})",
        [
            ("instances", f"{_instances_of(plan.count, plan.instance_types)} ({'spot' if plan.spot else 'on-demand'})"),
            ("lease ends", f"{format_local(plan.expiry)}  ({plan.lease_hours:.1f} h from launch)"),
            ("idle shutdown", f"after {plan.params['idle_minutes']} min unclaimed"),
            _price_row(plan.hourly_low, plan.hourly_high),
            _most_cost_row(plan.most_cost, plan.price_source, "; spot capped at the on-demand price" if plan.spot else ""),
            _caps_row(plan.live_instances + plan.count, plan.committed_after, plan.caps),
            # A recorded pool's description names its collector; her own pool's does not.
            ("pool", f"{plan.collector_host}; {plan.security_description}" if plan.source else plan.security_description),
        ],
    )


def _extension_plan_rows(plan: dict) -> PlanRows:
    from annex_user.expiry import format_local, from_tag
    from annex_user.manage import committed_after_extension

    old = [from_tag(tag) for tag in plan["old_expiries"]]
    old_text = " / ".join(format_local(end) for end in old if end) or "none"
    verb = "Shorten" if plan.get("shortens") else "Extend"
    rows = [
        ("instances", _instances_of(len(plan["instance_ids"]), plan["instance_types"])),
        ("lease ends", f"{old_text} -> {format_local(from_tag(plan['expiry']))}  ({plan['hours_from_now']:.1f} h from "
                       f"now; {plan['lease_hours']:.1f} h from launch, as the lease cap counts it)"),
        _price_row(plan["hourly"], plan["hourly"]),
        _most_cost_row(plan["most_cost"], plan["price_source"], span=" from now to the new end"),
        ("adds", f"[bold]{_signed_usd(plan['adds'])}[/] to what it could still cost (${plan['cost_before']:,.2f} "
                 "on today's lease)"),
        _caps_row(plan["live_instances"], committed_after_extension(plan), plan["caps"]),
    ]
    if plan.get("token_id"):
        rows.append(("pool token", f"a new one to the new end, with the same id (jti) {plan['token_id']}"))
    return f"[bold]{verb} annex {plan['annex_name']}[/]", rows


def _price_row(low: float, high: float) -> tuple[str, str]:
    if abs(high - low) < 1e-9:
        return "price", f"${high:,.4f}/hour for the annex"
    return "price", f"${low:,.4f}-${high:,.4f}/hour for the annex"


def _most_cost_row(most: float, price_source: str, note: str = "", *, span: str = "") -> tuple[str, str]:
    return "most it costs", f"[bold]${most:,.2f}[/]{span} (prices: {price_source}{note})"


def _caps_row(instances: int, committed: float, caps: dict) -> tuple[str, str]:
    """The project's figures once this is done, against its caps."""
    return "project caps", (f"{instances}/{caps['max_instances']:g} instances, "
                            f"${committed:,.2f}/${caps['max_spend_usd']:,.2f} committed, "
                            f"lease ≤ {caps['max_lease_hours']:g} h from launch")


def _signed_usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < -0.005 else f"+${max(value, 0.0):,.2f}"


def _instances_of(count: int, instance_types: list[str] | tuple[str, ...]) -> str:
    """'16 instances, from m7i.large / m6i.large': the count is of the annex, not of each type."""
    noun = "instance" if count == 1 else "instances"
    if len(instance_types) == 1:
        return f"{count} {noun} of {instance_types[0]}"
    return f"{count} {noun}, from {' / '.join(instance_types)}"


def _print_launch(result) -> None:
    if result.answer.get("replayed"):
        out.print(f"The broker's answer to the launch of annex {result.plan.annex_name} sent earlier "
                  f"(request {result.plan.request_id}); nothing new was launched.")
    parts = ", ".join(f"{n} × {t}" for t, n in sorted(result.by_type.items()))
    out.print(f"[green]Launched {len(result.instance_ids)} of {result.plan.count} instance(s)[/] ({parts or 'none'}).")
    if result.capacity_errors:
        out.print(f"  {len(result.capacity_errors)} fleet error(s) were met and worked around where possible.")
    if result.shortfall:
        why = result.answer.get("stopped_by") or "every pool ran out of capacity"
        out.print(f"[red]{result.shortfall} instance(s) could not be launched:[/] {why}. "
                  f"Launch the rest later with another --annex-name.")
    if result.answer.get("token_id"):
        out.print(f"Its pool token's id (jti) is {result.answer['token_id']}: your pool administrator can revoke the "
                  "token early by it (annex-admin pool-config --revoke).")
    from annex_common.tables import print_command

    print_command(out, "Watch it with:", f"condor_annex status --annex-name {result.plan.annex_name}")


@app.command()
def status(
    annex_name: AnnexName = None,
    instances: Annotated[bool, typer.Option("--instances", help="List every instance, not one line per annex.")] = False,
    output: Output = OutputFormat.table,
    credentials: Credentials = None,
    debug: Debug = False,
) -> None:
    """Your project's annexes: one line each (instances, lease left, cost so far, most still to come)."""

    def action() -> None:
        from datetime import datetime, timezone

        from annex_user.context import open_context
        from annex_user.manage import annex_status

        ctx = open_context(_bundle_path(credentials))
        with waiting("Asking the broker and the pool"):
            report = annex_status(ctx, annex_name=annex_name, condor_config=os.environ.get("CONDOR_CONFIG"),
                                  instances=instances or output is OutputFormat.json)
        now = datetime.now(timezone.utc)
        err_console.print(report.collector_note, markup=False)
        if output is OutputFormat.json:
            print_json([row.to_json(now) for row in report.rows])
            return
        if not report.summaries:
            scope = f"annex {annex_name}" if annex_name else f"project {report.project_id}"
            out.print(f"No live instances in {scope}.")
        elif instances:
            _print_instances(report, now)
        else:
            _print_annexes(report, now)
        _print_totals(report)
        # Each annex's token id: what the pool administrator revokes it by, before its lease ends.
        for annex in report.summaries:
            if annex.get("token_id"):
                out.print(f"Annex {annex['annex_name']}: pool token id (jti) {annex['token_id']}")

    run_guarded(action, debug=debug)


def _left(seconds: int | None) -> str:
    return "none (ending)" if not seconds else f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _lease_cell(tag: str | None, seconds: int | None) -> str:
    """'2026-12-18 23:59 CET (469h53m left)': when the lease ends, local, and how long that is."""
    from annex_user.expiry import format_local_short, from_tag

    end = from_tag(tag)
    return f"{format_local_short(end)} ({_left(seconds)} left)" if end else "no valid lease"


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.2f}"


def _print_annexes(report, now) -> None:
    from rich.table import Table

    from annex_common.tables import print_table

    table = Table("Annex", "Instances", "In pool", "Lease ends", "Cost so far", "Can still cost")
    for annex in report.annexes():
        data = annex.to_json(now)
        states = ", ".join(f"{n} {state}" for state, n in data["states"].items())
        joined = "?" if data["joined_pool"] is None else f"{data['joined_pool']}/{data['instances']}"
        table.add_row(annex.annex_name, states, joined, _lease_cell(data["expiry"], data["lease_remaining_seconds"]),
                      _usd(data["cost_so_far_usd"]), _usd(data["can_still_cost_usd"]))
    print_table(out, table, prose={"Instances", "Lease ends"})


def _print_instances(report, now) -> None:
    from rich.table import Table

    from annex_common.tables import print_table

    table = Table("Instance", "Annex", "State", "Type", "Zone", "Lease ends", "In pool", "Cost so far")
    for row in report.rows:
        data = row.to_json(now)
        pool = {True: "yes", False: "no", None: "?"}[row.in_pool]
        table.add_row(data["instance_id"], data["annex_name"], data["state"], data["instance_type"],
                      data["availability_zone"], _lease_cell(data.get("expiry"), data["lease_remaining_seconds"]), pool,
                      _usd(data.get("cost_so_far")))
    print_table(out, table, prose={"Lease ends"})


def _print_totals(report) -> None:
    """The whole project against its caps, on every status. Cost so far is of the instances EC2
    still lists (live or shutting down): an ended instance is no longer counted, and it says so."""
    totals = report.totals()
    cap_instances, cap_spend = totals.get("cap_max_instances"), totals.get("cap_max_spend_usd")
    out.print(
        f"Project {report.project_id}: {totals['live_instances']} live instance(s)"
        + (f" of {cap_instances:g} allowed" if cap_instances is not None else "")
        + f"; they can still cost {_usd(totals['can_still_cost_usd'])}"
        + (f" of the ${cap_spend:,.2f} spend cap" if cap_spend is not None else "")
        + f". Instances not yet ended have cost {_usd(totals['cost_so_far_usd'])} so far (ended ones are not "
        + "counted; prices: " + (report.price_source or "unknown") + ")."
    )


@app.command()
def extend(
    annex_name: Annotated[str, typer.Option("--annex-name", help="Name of the annex.")],
    expiry: Expiry = None,
    duration: Duration = None,
    shorten: Annotated[bool, typer.Option("--shorten", help="Allow an earlier end than today's (asks first).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Ask the broker for the plan; move no lease.")] = False,
    yes: Yes = False,
    output: Output = OutputFormat.table,
    credentials: Credentials = None,
    debug: Debug = False,
) -> None:
    """Move the lease end of every live instance of an annex (never earlier unless --shorten):
    shows the plan (old and new end, what it adds, the caps) and asks, as launch does."""

    def action() -> None:
        from annex_user.context import open_context
        from annex_user.expiry import format_local
        from annex_user.manage import extend_lease, extend_params, extension_refusal, extension_summary, plan_extension

        ctx = open_context(_bundle_path(credentials))
        new_end = _lease_end(expiry, duration, ctx.now, running_annex=annex_name)
        params = extend_params(ctx, annex_name, new_end, shorten)
        with waiting(f"Asking the broker about extending {annex_name}"):
            plan = plan_extension(ctx, params, show_broken=True)
        verb = "Shorten" if plan.get("shortens") else "Extend"
        if not _plan_then_ask(
            _extension_plan_rows(plan), as_json=output is OutputFormat.json, dry_run=dry_run,
            summary=lambda: extension_summary(plan),
            dry_note="Dry run: the broker would move this lease. No lease was moved, nothing minted or uploaded.",
            question=f"{verb} the lease of {annex_name} ({len(plan['instance_ids'])} instance(s)) to end "
                     f"{format_local(new_end)}?",
            yes=yes, refusal=extension_refusal(plan),
        ):
            return
        with waiting(f"Moving the lease of {annex_name}"):
            result = extend_lease(ctx, params, condor_config=os.environ.get("CONDOR_CONFIG"), plan=plan)
        if output is OutputFormat.json:
            print_json(result.summary())
            return
        out.print(f"[green]Lease of {result.annex_name} now ends {format_local(result.new_expiry)}[/] "
                  f"on {len(result.instance_ids)} instance(s); it can still cost ${result.answer['most_cost']:,.2f}.")
        if result.token_reminted:
            out.print("  A new pool token lasting to the new lease end was uploaded; instances pick it up within minutes.")

    run_guarded(action, debug=debug)


@app.command()
def terminate(
    annex_name: Annotated[str, typer.Option("--annex-name", help="Name of the annex.")],
    yes: Yes = False,
    output: Output = OutputFormat.table,
    credentials: Credentials = None,
    debug: Debug = False,
) -> None:
    """Terminate every instance of an annex and remove its configuration (already gone: says so)."""

    def action() -> None:
        from annex_user.context import open_context
        from annex_user.manage import annex_status, terminate_annex

        ctx = open_context(_bundle_path(credentials))
        if not yes:
            report = annex_status(ctx, annex_name=annex_name, condor_config=None)
            live = sum(annex.live for annex in report.annexes())
            if live:
                require_confirmation(f"Terminate {live} instance(s) of {annex_name}?", assume_yes=False)
        with waiting(f"Terminating annex {annex_name}"):
            result = terminate_annex(ctx, annex_name)
        if output is OutputFormat.json:
            print_json(result.summary())
            return
        if result.already_gone:
            out.print(f"Annex {annex_name} is already gone (no live instance); "
                      f"removed {result.objects_removed} configuration object(s).")
            return
        out.print(f"[green]Terminated {len(result.instance_ids)} instance(s) of {annex_name}[/]; "
                  f"removed {result.objects_removed} configuration object(s).")

    run_guarded(action, debug=debug)


@app.command("import-credentials", cls=PlainUsage)
def import_credentials(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The bundle your pool administrator gave you.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", "--force", help="Replace an installed bundle without asking.")] = False,
    debug: Debug = False,
) -> None:
    """Install a credentials bundle in the default place (mode 0600)."""

    def action() -> None:
        from annex_common.bundle import install_bundle, plan_import

        plan = plan_import(Path(file).expanduser(), Path.home() / ".condor" / "annex-credentials.toml")
        if plan.unchanged:
            out.print(f"These credentials are already installed in {plan.destination}; nothing to do.")
            return
        if plan.occupied:
            require_confirmation(plan.question(), assume_yes=yes)
        bundle = install_bundle(plan)
        out.print(f"Installed credentials for project {bundle.project_id} (user {bundle.user}, region "
                  f"{bundle.region}) in {plan.destination} (mode 0600).")

    run_guarded(action, debug=debug)


def main() -> None:
    """Launch is the default command: without one, the words are launch's options."""
    run_app("condor_annex", app, sys.argv[1:], default_command="launch")


if __name__ == "__main__":
    main()
