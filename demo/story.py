"""`make demo`: the whole condor-annex story against a local AWS emulator, no AWS account needed.

Every step runs the real console scripts, as the pool administrator and the scientist would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

BIN = Path(sys.executable).parent
PROJECT = "TheNeeds-MooreLab"
STEP = 0


def styled(text: str, code: str) -> str:
    """Bold or coloured on a terminal; plain in a file, a pipe, or when NO_COLOR is set."""
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return f"\033[{code}m{text}\033[0m"


def banner(title: str, text: str) -> None:
    global STEP
    STEP += 1
    print("\n" + styled(f"── {STEP}. {title} ──", "1"))
    for line in text.strip().splitlines():
        print(f"   {line.strip()}")


def run(env: dict[str, str], *args: str, check: bool = True, head: int | None = None) -> subprocess.CompletedProcess:
    """Run one step as she would type it; ``head`` shows only the first lines of its output."""
    shown = " ".join(a if " " not in a else f"'{a}'" for a in args)
    print("\n" + styled(f"$ {shown}" + (f" | head -{head}" if head else ""), "36"), flush=True)
    command = [str(BIN / args[0]), *args[1:]]
    if head is None:
        result = subprocess.run(command, env=env, text=True, stdin=subprocess.DEVNULL)
    else:
        result = subprocess.run(command, env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        print("\n".join(result.stdout.splitlines()[:head]) + "\n   …", flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo step failed: {shown} (exit {result.returncode})")
    return result


def write_annex_key(folder: Path) -> Path:
    """The pool's signing key for annexes, as its central manager keeps it (passwords.d/ANNEX)."""
    folder.mkdir(parents=True)
    key = folder / "ANNEX"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(64))
    os.close(fd)
    return key


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_line(starting: str) -> list[str]:
    """The README's own command line that starts so, split as the shell splits it."""
    import shlex

    (line,) = [line for line in README.read_text().splitlines() if line.startswith(starting)]
    return shlex.split(line)


def headline(now: datetime) -> list[str]:
    """The README's headline command; once its end date has passed, the same lease length from now."""
    args = readme_line("condor_annex --project-id 'TheNeeds-MooreLab' --expiry")
    at = args.index("--expiry") + 1
    if datetime.strptime(args[at], "%Y-%m-%d %H:%M") <= now + timedelta(hours=1):
        args[at] = (now + timedelta(days=12)).strftime("%Y-%m-%d %H:%M")
        print(f"   (the README's end date has passed: the demo asks for {args[at]} instead)")
    return args


def expire_annex(env: dict[str, str], annex: str) -> None:
    """Stand-in for the passage of time: rewrite one annex's lease end to a minute ago."""
    import boto3

    ec2 = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"])
    ids = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [annex]}])["Reservations"]
        for i in r["Instances"]
    ]
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ec2.create_tags(Resources=ids, Tags=[{"Key": "htcondor:annex:expiry", "Value": past}])
    print(f"   (expiry tag of {len(ids)} instance(s) of {annex} set to {past})")


def main() -> None:
    from annex_sandbox.sandbox import start_sandbox, stop_sandbox

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="annex-demo-"))
    state = work / "sandbox"
    banner("A local AWS", "No AWS account is used: a local emulator (moto) stands in for AWS on 127.0.0.1.")
    box = start_sandbox(state)
    print(f"   emulator at {box.url}")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONDOR_"))}
        env.update(box.environment())
        env.update(HOME=str(work), COLUMNS="110")
        bundle = work / "needs-moore.toml"

        banner("The pool administrator sets up the region (once)",
               "One CloudFormation stack: VPC, subnets in several zones, launch templates, an encrypted bucket,\n"
               "the registry, the broker the scientists ask, and a lease enforcer that runs every 5 minutes.")
        run(env, "annex-admin", "setup", "--yes")

        banner("The administrator records the pool annexes join (once per region)",
               "Its collector, trust domain and a signing key of its own name (ANNEX), kept encrypted in the stack:\n"
               "the broker mints each annex's token with it; no scientist ever reads it.")
        run(env, "annex-admin", "pool", "set", "--collector", "cm.needs-moore-lab.example:9618",
            "--trust-domain", "needs-moore-lab.example", "--signing-key-file", str(write_annex_key(work / "cm")),
            "--key-name", "ANNEX", "--yes")
        run(env, "annex-admin", "check-setup")  # complete once the pool is recorded

        banner("The administrator issues Dr. Needs-Moore's credentials (once per scientist)",
               "An IAM user whose keys may only ask the broker; her project and caps are the administrator's record.")
        # The README's own line: caps that hold the headline example's lease of about 17 days.
        issue = readme_line("annex-admin issue-credentials --project-id 'TheNeeds-MooreLab'")
        run(env, *[str(bundle) if arg == "needs-moore.toml" else arg for arg in issue])
        run(env, "condor_annex", "import-credentials", str(bundle))

        banner("The administrator lets annex nodes into the pool (once per pool)",
               "What the central manager needs: CCB, and the annex tokens' identity may advertise a startd.\n"
               "Her project's nodes run as their own IAM role, which reads only her project's material.")
        run(env, "annex-admin", "pool-config")  # names the key the recorded pool signs with

        banner("Dr. Needs-Moore expands her pool for her deadline",
               "The README's headline command, with nothing but her bundle: no pool configuration, no key.\n"
               "She sees the price and the most it can cost before anything starts (here --yes answers).")
        command = headline(datetime.now())
        lease_end = datetime.strptime(command[command.index("--expiry") + 1], "%Y-%m-%d %H:%M")
        run(env, *command, "--yes", "--annex-name", "deadline")

        banner("She watches it", "One line per annex: what it has cost so far and the most it can still cost;\n"
               "EC2's view, merged with the pool's when its collector answers. Scripts ask for JSON.")
        run(env, "condor_annex", "status")
        run(env, "condor_annex", "status", "--annex-name", "deadline", "--output", "json", head=14)

        banner("The deadline moves: she extends the lease",
               "The plan shows the old and new end and what it adds against the caps; only the expiry tag\n"
               "changes; instances re-read it, and a fresh pool token is uploaded.")
        later = (lease_end + timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
        run(env, "condor_annex", "extend", "--annex-name", "deadline", "--expiry", later, "--yes")

        banner("She tries to spend too much", "The broker checks the caps before anything is launched (exit 2, nothing created).")
        run(env, "condor_annex", "--project-id", PROJECT, "--duration", "24", "--instances", "20", "--yes", check=False)

        banner("A lease runs out while her laptop is closed",
               "A small second annex; then its lease end passes (simulated by rewriting its expiry tag).")
        run(env, "condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", "2", "--yes",
            "--annex-name", "overnight")
        expire_annex(env, "overnight")
        run(env, "annex-admin", "enforce", "--dry-run")
        run(env, "annex-admin", "enforce")

        banner("She is done early and ends her annex", "")
        run(env, "condor_annex", "terminate", "--annex-name", "deadline", "--yes")
        run(env, "condor_annex", "status")

        banner("The administrator tears the region down", "Everything setup and issue-credentials made is removed.")
        run(env, "annex-admin", "teardown", "--yes", "--force")
        banner("The end", f"The whole story took {time.monotonic() - started:.0f} s.")
    finally:
        stop_sandbox(state)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
