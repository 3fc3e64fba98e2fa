"""annex-admin: thin typer commands; each parses, calls one core function, renders with rich."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from templates.contract import DEFAULT_STACK_NAME

from annex_common.cli_support import (
    HELP_OPTIONS,
    LazyConsole,
    OutputFormat,
    print_json,
    err_console,
    print_version,
    run_app,
    seconds,
    require_confirmation,
    run_guarded,
    waiting,
)

if TYPE_CHECKING:  # imported when a command runs, so that --help stays fast
    from annex_admin.changes import ChangePlan
    from templates.settings import SetupChoices, StackSettings

app = typer.Typer(
    name="annex-admin",
    help="Set up a region for condor-annex, issue scientists' credentials, enforce leases, tear down.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
    pretty_exceptions_enable=False,
    # Plain help and usage errors: rendering them with rich costs more than the whole start-up.
    rich_markup_mode=None,
)
out = LazyConsole(highlight=False, soft_wrap=True, words_on_terminal=True)

Region = Annotated[Optional[str], typer.Option("--region", help="AWS region (default: from your AWS config).")]
Profile = Annotated[Optional[str], typer.Option("--profile", help="AWS profile of the administrator.")]
StackName = Annotated[str, typer.Option("--stack-name", help="Name of the region stack.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
Output = Annotated[OutputFormat, typer.Option("--output", help="table for people, json for scripts (JSON alone on stdout).")]
ImageId = Annotated[Optional[str], typer.Option("--image-id", help="AMI for the instances (default: the stack's current one; for a new stack the latest Amazon Linux 2023).")]
InstanceTypes = Annotated[Optional[str], typer.Option("--instance-types", help="Comma-separated instance types annexes may use (default: the stack's current ones; for a new stack m7i.large,m6i.large,m5.large).")]
NotifyEmail = Annotated[Optional[str], typer.Option(
    "--notify-email", help="Send the enforcer's alarms to this address (SNS asks it to confirm); 'none' removes the subscription (default: as the stack is now).")]
SshCidr = Annotated[Optional[str], typer.Option("--ssh-cidr", help="Allow SSH to the instances from this CIDR; 'none' removes the rule (default: as the stack is now; for a new stack no SSH).")]



def _show_version(value: bool) -> None:
    if value:
        print_version("annex-admin")
        raise typer.Exit()


@app.callback()
def program_options(
    version: Annotated[bool, typer.Option("--version", "-v", callback=_show_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Options of annex-admin itself."""


DEFAULT_STACK = DEFAULT_STACK_NAME


def _clients(region: str | None, profile: str | None):
    """The administrator's AWS clients, for a region known to AWS (checked before any request)."""
    from annex_common.aws import make_clients
    from annex_common.regions import validate_region

    if region:
        validate_region(region)
    clients = make_clients(region=region, profile=profile)
    if not region:
        validate_region(clients.region, source="your AWS configuration")
    return clients


def _setup_request(region: str, stack_name: str, choices: SetupChoices, notify_email: str | None = None) -> StackSettings:
    from templates import contract
    from templates.settings import StackSettings, validate_notify_email

    return StackSettings(
        region=region,
        stack_name=stack_name,
        image_id=choices.image_id or "",
        image_chosen_by_setup=choices.image_chosen_by_setup if choices.image_id else None,
        instance_types=choices.instance_types or contract.DEFAULT_INSTANCE_TYPES,
        ssh_cidr=choices.ssh_cidr or None,
        notify_email=validate_notify_email(notify_email),
    )


def _given_choices(image_id: str | None, instance_types: str | None, ssh_cidr: str | None) -> SetupChoices:
    """The setup options given on this run, validated before any AWS call; None: not given."""
    from templates import settings as s

    return s.SetupChoices(
        image_id=s.validate_image_id(image_id) or None,
        image_chosen_by_setup=False if image_id else None,
        instance_types=s.parse_instance_types(instance_types) if instance_types is not None else None,
        ssh_cidr=s.parse_ssh_choice(ssh_cidr),
    )


@app.command()
def template(
    region: Region = None,
    stack_name: StackName = DEFAULT_STACK,
    image_id: ImageId = None,
    instance_types: InstanceTypes = None,
    ssh_cidr: SshCidr = None,
    notify_email: NotifyEmail = None,
    zones: Annotated[Optional[str], typer.Option("--zones", help="Comma-separated zones (default: <region>a,<region>b).")] = None,
    debug: Debug = False,
) -> None:
    """Print the region stack's CloudFormation template as JSON (no AWS calls)."""

    def action() -> None:
        from annex_admin.offline import offline_template
        from annex_common.regions import validate_region
        from templates.settings import validate_stack_name

        choices = _given_choices(image_id, instance_types, ssh_cidr)
        request = _setup_request(validate_region(region) if region else "us-east-1", validate_stack_name(stack_name),
                                 choices, notify_email)
        print(offline_template(request, zones))

    run_guarded(action, debug=debug)


@app.command()
def setup(
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    image_id: ImageId = None,
    instance_types: InstanceTypes = None,
    ssh_cidr: SshCidr = None,
    notify_email: NotifyEmail = None,
    yes: Yes = False,
    debug: Debug = False,
) -> None:
    """Create or update the region stack: show what will change, ask, apply and wait.

    Options not given keep the stack's current settings.
    """

    def action() -> None:
        from annex_admin import deploy
        from annex_admin.remembered import current_choices
        from templates.settings import merge_choices, ssh_exposure, validate_stack_name

        from templates.settings import validate_notify_email

        validate_stack_name(stack_name)
        given = _given_choices(image_id, instance_types, ssh_cidr)
        validate_notify_email(notify_email)
        clients = _clients(region, profile)
        with waiting("Checking the region"):
            merged = merge_choices(given, current_choices(clients, stack_name))
            request = _setup_request(clients.region, stack_name, merged.choices, notify_email)
            settings, concurrency = deploy.resolve_settings(clients, request)
        _print_settings(settings, merged.kept, concurrency.note)
        exposure = ssh_exposure(settings.ssh_cidr)
        if exposure:
            out.print(f"[yellow]Warning:[/] {exposure}: every annex node accepts SSH connections from there. "
                      "Give --ssh-cidr your own network (e.g. 203.0.113.0/24), or 'none'.", markup=True)
        with waiting("Deploying") as wait:

            def show_and_ask(plan: ChangePlan) -> None:
                with wait.paused():
                    _print_changes(plan, settings.stack_name)
                    verb = "Create" if plan.creating else "Apply these changes to"
                    risk = f", with {exposure}" if exposure else ""
                    require_confirmation(f"{verb} stack {settings.stack_name} in {settings.region}{risk}?", assume_yes=yes)

            result = deploy.deploy(clients, settings, wait, approve=show_and_ask)
        if result.action == "unchanged":
            out.print(f"[green]No changes:[/] stack {settings.stack_name} is already up to date ({result.status}).")
        else:
            out.print(f"[green]Stack {settings.stack_name} {result.action}[/] ({result.status}) in {seconds(wait.elapsed())}.")
        _print_outputs(result.outputs)
        if request.notify_email and result.action != "unchanged":
            out.print(f"SNS sends {request.notify_email} a confirmation request: alarms arrive once it is confirmed.")

    run_guarded(action, debug=debug)


def _print_settings(settings: StackSettings, kept: frozenset[str], concurrency_note: str) -> None:
    def mark(field: str) -> str:
        return "  (kept from the stack)" if field in kept else ""

    from rich.markup import escape

    from annex_common.tables import print_fields

    reserved = [f"{what} {n}" for what, n in (("enforcer", settings.enforcer_concurrency),
                                                 ("broker at most", settings.broker_concurrency)) if n is not None]
    rows = [
        ("zones", ", ".join(settings.availability_zones)),
        ("image", f"{settings.image_id}{mark('image_id')}"),
        ("instance types", f"{', '.join(settings.instance_types)}{mark('instance_types')}"),
        ("SSH from", f"{settings.ssh_cidr or 'nowhere (no inbound access)'}{mark('ssh_cidr')}"),
        ("alarms to", settings.notify_email or "nobody (--notify-email ADDRESS subscribes one)"),
        ("concurrency", escape(", ".join(reserved) or "none reserved")),
    ]
    if concurrency_note:
        rows.append(("[yellow]note[/]", concurrency_note))
    print_fields(out, f"[bold]Stack[/] {settings.stack_name} in {settings.region}", rows)


def _print_changes(plan: ChangePlan, stack_name: str) -> None:
    from rich.table import Table

    from annex_common.tables import print_table

    if plan.creating:
        out.print(f"Stack {stack_name} does not exist yet; it will be created with {len(plan.changes)} resources:")
        table = Table("Action", "Resource", "Type", box=None)
        for change in plan.changes:
            table.add_row(change.action, change.logical_id, change.resource_type)
    else:
        out.print(f"Changes to stack {stack_name} ({len(plan.changes)}):")
        table = Table("Action", "Resource", "Type", "Replaced", box=None)
        for change in plan.changes:
            replaced = {"True": "yes", "Conditional": "maybe"}.get(change.replacement, "")
            table.add_row(change.action, change.logical_id, change.resource_type, replaced)
    print_table(out, table)


def _print_outputs(outputs: dict[str, str]) -> None:
    from rich.table import Table

    from annex_common.tables import print_table

    table = Table("Output", "Value", box=None)
    for key in sorted(outputs):
        table.add_row(key, outputs[key])
    print_table(out, table)


@app.command("check-setup")
def check_setup(
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    output: Output = OutputFormat.table,
    debug: Debug = False,
) -> None:
    """Report whether the stack and everything the tools need is in place (exit 1 if not)."""

    def action() -> None:
        from annex_admin.check import check_setup as run_check
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        clients = _clients(region, profile)
        report = run_check(clients, stack_name)
        if output is OutputFormat.json:
            print_json(report.to_dict(clients.region))
            if not report.ok:
                raise SystemExit(1)
            return
        from rich.table import Table

        from annex_common.tables import print_table

        table = Table("Check", "", "Detail", box=None)
        for item in report.items:
            verdict = "[red]FAIL[/]" if not item.ok else "[yellow]WARN[/]" if item.warning else "[green]ok[/]"
            table.add_row(item.name, verdict, item.detail)
        print_table(out, table, prose={"Detail"})
        if not report.ok:
            out.print(f"[red]Setup of {stack_name} in {clients.region} is not complete.[/]")
            raise SystemExit(1)
        out.print(f"[green]Setup of {stack_name} in {clients.region} is complete.[/]")

    run_guarded(action, debug=debug)


@app.command("build-image")
def build_image(
    htcondor_series: Annotated[Optional[str], typer.Option(
        "--htcondor-series", metavar="S", help="HTCondor series to install: 24.0 (long-term support, the default) or e.g. 24.x (feature releases).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and the most it can cost; change nothing.")] = False,
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    yes: Yes = False,
    debug: Debug = False,
) -> None:
    """Build an image with HTCondor and the node files installed, and make it the stack's default."""

    def action() -> None:
        from annex_admin import image
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        series = image.validate_series(htcondor_series)
        clients = _clients(region, profile)
        with waiting("Reading the stack"):
            plan = image.plan_build(clients, stack_name, series)
        _print_build_plan(plan)
        if dry_run:
            out.print("Dry run: nothing was launched or changed.")
            return
        require_confirmation(
            f"Build an image for stack {stack_name} in {clients.region} (at most ${plan.most_cost_usd:.2f})?",
            assume_yes=yes)
        with waiting("Building the image") as wait:
            result = image.execute_build(clients, plan, wait)
        out.print(f"[green]Image {result.image_id}[/] (HTCondor {result.htcondor_version}) is the default of "
                  f"stack {stack_name} in {clients.region}, built in {seconds(wait.elapsed())}; "
                  "the builder is terminated.")
        if result.projects_followed:
            out.print(f"  launch template versions brought up to date for project(s) {', '.join(result.projects_followed)}")
        out.print("  New annex nodes boot from it without installing anything; "
                  "`annex-admin check-setup` shows its age.")

    run_guarded(action, debug=debug)


def _print_build_plan(plan) -> None:
    out.print(f"[bold]Build an image[/] for stack {plan.stack_name} in {plan.region} (build {plan.build_id}):")
    for number, step in enumerate(plan.steps(), 1):
        out.print(f"  {number}. {step}")
    hours = _image_lease_hours()
    out.print(f"The most it can cost: 1 x {plan.instance_type} at ${plan.hourly_usd:.4f}/h x {hours:g} h lease "
              f"= ${plan.most_cost_usd:.2f} (prices: {plan.price_source}), plus the image's snapshot storage "
              "(EBS snapshot pricing, per GB-month) until it is deregistered.")


def _image_lease_hours() -> float:
    from annex_admin.image import BUILD_LEASE

    return BUILD_LEASE.total_seconds() / 3600


@app.command("issue-credentials")
def issue_credentials(
    project_id: Annotated[str, typer.Option("--project-id", help="The scientist's project.")],
    user: Annotated[str, typer.Option("--user", help="IAM user name for the scientist.")],
    output: Annotated[Optional[Path], typer.Option("--output", help="Where to write her bundle (mode 0600), with a new key that replaces hers. Leave it out to change only an issued scientist's caps or pool: she keeps her key and bundle.")] = None,
    max_instances: Annotated[Optional[int], typer.Option("--max-instances", help="Instances alive at once (new projects: 32; else unchanged).")] = None,
    max_lease_hours: Annotated[Optional[float], typer.Option("--max-lease-hours", help="Longest lease, hours (new projects: 168; else unchanged).")] = None,
    max_spend: Annotated[Optional[float], typer.Option("--max-spend", help="Most the project's live annexes may still cost, USD (new projects: 500; else unchanged).")] = None,
    pool_collector: Annotated[Optional[str], typer.Option("--pool-collector", help="The project joins this pool instead of the stack's: its collector (with --pool-trust-domain and a key or password file).")] = None,
    pool_trust_domain: Annotated[Optional[str], typer.Option("--pool-trust-domain", help="That pool's TRUST_DOMAIN.")] = None,
    pool_signing_key_file: Annotated[Optional[Path], typer.Option("--pool-signing-key-file", help="That pool's signing key file (mode 0600).")] = None,
    pool_password_file: Annotated[Optional[Path], typer.Option("--pool-password-file", help="Or that pool's password file.")] = None,
    pool_key_name: Annotated[str, typer.Option("--pool-key-name", help="The signing key's name on that pool's central manager.")] = "ANNEX",
    stack_pool: Annotated[bool, typer.Option("--stack-pool", help="The project joins the stack's pool again (its own is removed).")] = False,
    allow_own_pool_key: Annotated[bool, typer.Option("--allow-own-pool-key", help="The project's scientists may launch into a personal pool with their own key (condor_annex --own-pool). Default: unchanged; new projects: not allowed.")] = False,
    no_own_pool_key: Annotated[bool, typer.Option("--no-own-pool-key", help="Withdraw that permission.")] = False,
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    yes: Yes = False,
    debug: Debug = False,
) -> None:
    """Create or update a scientist's IAM user for one project and write her credentials bundle."""

    def action() -> None:
        from annex_admin.credentials import CapsChange, IssueRequest, ProjectPoolChange, apply_issue, plan_issue, validate_issue

        change = CapsChange(max_instances, max_lease_hours, max_spend)
        validate_issue(project_id, user, change, output)
        pool_change = ProjectPoolChange(_project_pool(pool_collector, pool_trust_domain, pool_signing_key_file,
                                                      pool_password_file, pool_key_name, stack_pool),
                                        stack_pool, _own_pool_key(allow_own_pool_key, no_own_pool_key))
        clients = _clients(region, profile)
        plan = plan_issue(clients, IssueRequest(stack_name, project_id, user, output, change, pool_change))
        out.print(f"[bold]Credentials of {user}[/] for project {project_id}, stack {stack_name} in {clients.region}")
        for line in plan.lines:
            out.print(f"  {line}", markup=False)
        if plan.question is not None:
            require_confirmation(plan.question, assume_yes=yes)
        result = apply_issue(clients, plan)
        verb = "Created" if result.user_created else "Updated"
        out.print(f"[green]{verb} IAM user {user}[/] for project {project_id} in {clients.region}.")
        if result.keys_removed:
            out.print("  her earlier access key is deleted: the bundle she has no longer works until she installs "
                      "this one")
        out.print(f"  the project's nodes run as IAM role {result.node.role_arn.rsplit('/', 1)[1]}, which reads only "
                  f"project {project_id}'s annex material")
        pool_of = "its own pool" if result.pool.own_pool else "the stack's pool (annex-admin pool set)"
        key_rule = "may bring their own pool key (condor_annex --own-pool)" if result.pool.own_key else "need no pool key"
        out.print(f"  the project's annexes join {pool_of}; its scientists {key_rule}")
        if result.output is None:
            out.print("  her access key and bundle are unchanged.")
            return
        out.print(f"  bundle written to {result.output} (mode 0600); give it to the scientist privately.")
        from annex_common.tables import print_command

        print_command(out, "  She installs it with:", f"condor_annex import-credentials {result.output.name}")

    run_guarded(action, debug=debug)


def _own_pool_key(allow: bool, withdraw: bool) -> bool | None:
    """--allow-own-pool-key, --no-own-pool-key, or None: neither, unchanged."""
    from annex_common.errors import BadInput

    if allow and withdraw:
        raise BadInput("--allow-own-pool-key and --no-own-pool-key contradict each other",
                       "the project's scientists either may bring their own pool key or may not",
                       "Pass one of them, or neither to keep what is recorded.")
    return True if allow else (False if withdraw else None)


def _project_pool(collector, trust_domain, signing_key_file, password_file, key_name, stack_pool):
    """The project's own pool from issue-credentials' options, read and checked before any AWS call."""
    from annex_admin.pool import PoolChoice, pool_from_choice
    from annex_common.errors import BadInput

    given = [collector, trust_domain, signing_key_file, password_file]
    if not any(v is not None for v in given):
        return None
    if stack_pool:
        raise BadInput("--stack-pool and --pool-* contradict each other", "a project joins one pool",
                       "Pass either --stack-pool or the --pool-* options.")
    missing = [option for option, value in (("--pool-collector", collector), ("--pool-trust-domain", trust_domain))
               if value is None]
    if signing_key_file is None and password_file is None:
        missing.append("one of --pool-signing-key-file and --pool-password-file")
    if missing:
        raise BadInput(
            f"a project's own pool needs {' and '.join(missing)} as well",
            "annex nodes join a pool by its collector and trust domain, with a token signed by its key or with "
            "its pool password",
            f"Pass {' and '.join(missing)}, or no --pool-* option to keep the project's pool.",
        )
    return pool_from_choice(PoolChoice(collector, trust_domain, signing_key_file, password_file, key_name, "--pool-"))


@app.command("revoke-credentials")
def revoke_credentials(
    user: Annotated[str, typer.Option("--user", help="The scientist's IAM user name.")],
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    yes: Yes = False,
    debug: Debug = False,
) -> None:
    """Stop a scientist asking: mark her record revoked, detach the policy, delete her keys (running annexes keep their leases)."""

    def action() -> None:
        from annex_admin.credentials import apply_revoke, plan_revoke
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        clients = _clients(region, profile)
        plan = plan_revoke(clients, user, stack_name)
        if plan.already_revoked:
            out.print(f"[green]{user} is already revoked[/] (since {plan.revoked_on}): she has no key and no policy; "
                      "nothing to do.")
            return
        out.print(f"[bold]Revoke {user}[/] in stack {stack_name}, {clients.region}")
        for line in plan.lines():
            out.print(f"  {line}", markup=False)
        require_confirmation(f"Revoke {user}'s credentials?", assume_yes=yes)
        result = apply_revoke(clients, plan)
        done = [f"{len(result.keys_removed)} access key(s) deleted"]
        if result.policy_detached:
            done.append("the scientists' policy detached")
        if result.record_revoked:
            done.append("her record marked revoked: the broker refuses her whatever she signs with")
        out.print(f"[green]Revoked {user}:[/] " + "; ".join(done) + ".")
        out.print("  `annex-admin issue-credentials` for her again gives her a new bundle; "
                  "`annex-admin teardown` removes the users and node roles.")

    run_guarded(action, debug=debug)


@app.command("list-credentials")
def list_credentials(
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    output: Output = OutputFormat.table,
    debug: Debug = False,
) -> None:
    """List the scientists the stack issued: project, caps, pool, revoked or not, key age (changes nothing)."""

    def action() -> None:
        from annex_admin.credentials import list_scientists
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        clients = _clients(region, profile)
        scientists = list_scientists(clients, stack_name)
        if output is OutputFormat.json:
            print_json({"stack_name": stack_name, "region": clients.region,
                        "scientists": [s.to_dict() for s in scientists]})
            return
        if not scientists:
            out.print(f"No scientist is recorded in stack {stack_name} in {clients.region}: "
                      "`annex-admin issue-credentials` issues one.")
            return
        _print_scientists(scientists)

    run_guarded(action, debug=debug)


def _print_scientists(scientists) -> None:
    from datetime import datetime, timezone

    from rich.table import Table

    from annex_common.tables import print_table
    from annex_common.times import format_local_short, parse_utc_stamp

    now = datetime.now(timezone.utc)
    table = Table("User", "Project", "Caps", "Pool", "Revoked", "Key age", box=None)
    for s in scientists:
        caps = (f"{s.caps.max_instances} instances, {s.caps.max_lease_hours:g} h, ${s.caps.max_spend_usd:,.2f}"
                if s.caps else "none recorded")
        pool = f"own ({s.own_pool})" if s.own_pool else "the stack's"
        if s.own_key:
            pool += "; own key allowed"
        revoked_at = parse_utc_stamp(s.revoked)
        revoked = format_local_short(revoked_at) if revoked_at else (s.revoked or "no")
        if not s.iam_user:
            age = "no IAM user"
        elif not s.key_created:
            age = "no key"
        else:
            age = _age(now - s.key_created[-1])
        table.add_row(s.user, s.project_id, caps, pool, revoked, age)
    print_table(out, table, prose={"Caps", "Pool"})


def _age(elapsed) -> str:
    """How old, in the largest whole unit: '12 days', '3 hours', '5 minutes'."""
    seconds = max(0, int(elapsed.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "under a minute"


pool_app = typer.Typer(
    name="pool",
    help="Record the pool annexes join (collector, trust domain, its signing key or password), kept "
    "encrypted in the stack and read by the broker alone.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(pool_app, name="pool")

Collector = Annotated[str, typer.Option("--collector", help="The pool's collector, HOST[:PORT].")]
TrustDomain = Annotated[str, typer.Option("--trust-domain", help="The pool's TRUST_DOMAIN (the tokens' issuer).")]
SigningKeyFile = Annotated[Optional[Path], typer.Option(
    "--signing-key-file", help="A signing key file as the central manager keeps it (mode 0600), e.g. a copy of "
    "passwords.d/ANNEX: the broker mints each annex's IDTOKEN with it.")]
PasswordFile = Annotated[Optional[Path], typer.Option(
    "--password-file", help="For a pool without tokens: its pool password file (every annex node then holds it).")]
KeyName = Annotated[str, typer.Option("--key-name", help="The signing key's name on the central manager (the tokens' kid).")]


@pool_app.command("set")
def pool_set(
    collector: Collector,
    trust_domain: TrustDomain,
    signing_key_file: SigningKeyFile = None,
    password_file: PasswordFile = None,
    key_name: KeyName = "ANNEX",
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    yes: Yes = False,
    debug: Debug = False,
) -> None:
    """Record the stack's pool: shows what is recorded now and what will be, asks, then stores it."""

    def action() -> None:
        from annex_admin.pool import PoolChoice, apply_pool, plan_pool, pool_from_choice
        from annex_admin.stack import read_stack
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        pool = pool_from_choice(PoolChoice(collector, trust_domain, signing_key_file, password_file, key_name))
        clients = _clients(region, profile)
        plan = plan_pool(clients, read_stack(clients, stack_name), pool)
        out.print(f"[bold]The pool of stack {stack_name}[/] in {clients.region}")
        for line in plan.lines():
            out.print(f"  {line}", markup=False)
        if plan.unchanged:
            out.print("[green]No changes:[/] this pool is already recorded.")
            return
        require_confirmation(f"Record this pool for stack {stack_name}?", assume_yes=yes)
        apply_pool(clients, plan)
        out.print(f"[green]Recorded.[/] Annexes launched from now on join {pool.collector_host}; "
                  "`annex-admin pool-config` prints what its central manager needs.")

    run_guarded(action, debug=debug)


@pool_app.command("show")
def pool_show(
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    debug: Debug = False,
) -> None:
    """Show the pools recorded for the stack and its projects (never their secrets)."""

    def action() -> None:
        from annex_admin.pool import recorded_parameters, recorded_pool
        from annex_admin.stack import read_stack
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        clients = _clients(region, profile)
        read_stack(clients, stack_name)
        names = recorded_parameters(clients, stack_name)
        if not names:
            out.print(f"No pool is recorded for stack {stack_name}: run `annex-admin pool set`.")
        for name in names:
            pool = recorded_pool(clients, name)
            out.print(f"{name}: {pool.describe() if pool else 'unreadable: record it again'}", markup=False)

    run_guarded(action, debug=debug)


@app.command("pool-config")
def pool_config(
    revoke: Annotated[Optional[list[str]], typer.Option(
        "--revoke", metavar="JTI", help="Print instead the line that revokes this annex token id early; repeatable.")] = None,
    key_name: Annotated[Optional[str], typer.Option(
        "--key-name", help="The signing key's name on the central manager (default: the recorded pool's, else ANNEX).")] = None,
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    debug: Debug = False,
) -> None:
    """Print what the pool's central manager needs to accept annex nodes (it reads only the recorded pool's key name)."""

    def action() -> None:
        from annex_admin.pool import ConfigKey, config_key_name
        from annex_admin.pool_config import pool_config_text, revocation_text, validate_key_name
        from templates.settings import validate_stack_name

        if revoke:
            sys.stdout.write(revocation_text(revoke))
            return
        validate_stack_name(stack_name)
        key = (ConfigKey(validate_key_name(key_name)) if key_name is not None
               else config_key_name(lambda: _clients(region, profile), stack_name))
        if key.note:
            err_console.print(key.note, markup=False)
        sys.stdout.write(pool_config_text(key.name))

    run_guarded(action, debug=debug)


@app.command()
def enforce(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    output: Output = OutputFormat.table,
    debug: Debug = False,
) -> None:
    """Run, now, the sweep the scheduled enforcer runs: end expired, unleased and over-cap instances,
    remove leftover volumes, fleets and spot requests."""

    def action() -> None:
        from annex_admin.enforce import report_lines, run_enforcer
        from annex_admin.stack import read_stack
        from templates import contract
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        clients = _clients(region, profile)
        stack = read_stack(clients, stack_name)
        # With JSON on stdout, the sweep's lines are messages: stderr.
        lines = err_console if output is OutputFormat.json else out
        report = run_enforcer(clients, stack.output(contract.OUT_ENFORCER_FUNCTION), dry_run=dry_run)
        for line in report_lines(report):
            lines.print(line, markup=False)
        if output is OutputFormat.json:
            print_json({"stack_name": stack_name, "region": clients.region, **report})
        if report.get("errors") or report.get("could_not_end"):
            raise SystemExit(1)

    run_guarded(action, debug=debug)


@app.command()
def teardown(
    yes: Yes = False,
    force: Annotated[bool, typer.Option("--force", help="Terminate live annex instances first.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed (the stack, live annexes, the images build-image made); change nothing.")] = False,
    region: Region = None,
    profile: Profile = None,
    stack_name: StackName = DEFAULT_STACK,
    output: Output = OutputFormat.table,
    debug: Debug = False,
) -> None:
    """Delete everything setup created (and the scientists' users); refuses while annexes live unless --force."""

    def action() -> None:
        from annex_admin.teardown import TeardownReport, instances_alive, live_annex_instances, nothing_to_remove
        from annex_admin.teardown import removal_names, teardown as run_teardown, teardown_preview
        from templates.settings import validate_stack_name

        validate_stack_name(stack_name)
        clients = _clients(region, profile)
        names = removal_names(clients, stack_name)  # found once: for the preview and the question
        lines = teardown_preview(clients, stack_name, names)
        if dry_run:
            if output is OutputFormat.json:
                print_json({"stack_name": stack_name, "region": clients.region, "dry_run": True, "would_remove": lines})
                return
            for line in lines:
                out.print(f"would remove {line}", markup=False)
            out.print("Dry run: nothing was removed." if lines else f"Nothing to remove: no stack {stack_name} in {clients.region}.")
            return
        if nothing_to_remove(clients, stack_name, lines):
            if output is OutputFormat.json:
                print_json(TeardownReport().to_dict(stack_name, clients.region))
            else:
                _print_teardown(TeardownReport(), stack_name, clients.region)
            return
        live = live_annex_instances(clients, stack_name)
        if live and not force:
            raise instances_alive(len(live), stack_name)
        # With JSON on stdout, what it will remove is a message: stderr.
        said = err_console if output is OutputFormat.json else out
        for line in names.lines():
            said.print(f"will remove {line}", markup=False)
        beyond = f", {names.summary()}" if names.summary() else ""
        removal = (f"delete stack {stack_name} in {clients.region}, its bucket{beyond}" if names.stack_exists else
                   f"remove what stack {stack_name} left in {clients.region} (the stack itself is gone){beyond}")
        question = (f"Terminate {len(live)} annex instance(s), then {removal}?" if live
                    else f"{removal[0].upper()}{removal[1:]}?")
        require_confirmation(question, assume_yes=yes)
        with waiting("Tearing down") as wait:
            report = run_teardown(clients, stack_name, force=force, progress=wait)
        if output is OutputFormat.json:
            print_json(report.to_dict(stack_name, clients.region))
        else:
            _print_teardown(report, stack_name, clients.region)
        if not report.complete:
            raise SystemExit(1)

    run_guarded(action, debug=debug)


def _print_teardown(report, stack_name: str, region: str) -> None:
    for item in report.removed:
        out.print(f"[green]removed[/] {item}")
    for what, why in report.not_removed:
        out.print(f"[red]not removed[/] {what}: {why}")
    if not report.removed and not report.not_removed:
        out.print(f"Nothing to remove: no stack {stack_name} in {region}.")


@app.command()
def sandbox(
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running sandbox.")] = False,
    port: Annotated[Optional[int], typer.Option("--port", help="Port on 127.0.0.1 (default: a free one).")] = None,
    debug: Debug = False,
) -> None:
    """Start a local AWS emulator in the background and print the environment to use it."""

    def action() -> None:
        # Only here: the emulator is not part of the administrator's tool.
        from annex_sandbox.sandbox import start_sandbox, stop_sandbox

        state = Path.home() / ".condor" / "annex-sandbox"
        if stop:
            stopped = stop_sandbox(state)
            out.print("Sandbox stopped." if stopped else "No sandbox was running.")
            return
        box = start_sandbox(state, port)
        err_console.print(f"Local AWS emulator running at {box.url} (pid {box.pid}, log {box.log}).", markup=False)
        err_console.print("Set these in your shell (fake keys: nothing reaches AWS), then run annex-admin setup --yes:", markup=False)
        for key, value in box.environment().items():
            print(f"export {key}={value}")
        err_console.print("Stop it with: annex-admin sandbox --stop", markup=False)

    run_guarded(action, debug=debug)


def main() -> None:
    run_app("annex-admin", app, sys.argv[1:])


if __name__ == "__main__":
    main()
