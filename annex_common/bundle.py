"""The credentials bundle: a TOML file, mode 0600, with the scientist's keys, project and caps."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from annex_cloud.caps import Caps, caps_from_mapping
from annex_common.errors import BadInput

DEFAULT_BUNDLE_PATH = Path("~/.condor/annex-credentials.toml")
REQUIRED_STRINGS = ("region", "stack_name", "project_id", "user", "aws_access_key_id", "aws_secret_access_key")


@dataclass(frozen=True)
class Bundle:
    region: str
    stack_name: str
    project_id: str
    user: str
    aws_access_key_id: str
    aws_secret_access_key: str
    # Shown to the scientist, never trusted: the broker reads the administrator's record.
    caps: Caps | None = None
    # The broker's ARN (account and region), which her identity proofs name; "" in a bundle
    # issued by an earlier version (condor_annex then asks STS for the account).
    broker_arn: str = ""

    def __repr__(self) -> str:  # never show the secret
        return (
            f"Bundle(region={self.region!r}, stack_name={self.stack_name!r}, project_id={self.project_id!r}, "
            f"user={self.user!r}, aws_access_key_id={self.aws_access_key_id!r}, caps={self.caps!r}, "
            f"broker_arn={self.broker_arn!r})"
        )

    __str__ = __repr__

    def to_toml_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in REQUIRED_STRINGS}
        if self.broker_arn:
            data["broker_arn"] = self.broker_arn
        if self.caps is not None:
            data.update(asdict(self.caps))
        return data


def locate_bundle(cli_path: str | None, env_value: str | None, home: Path) -> Path:
    """--credentials wins, then $CONDOR_ANNEX_CREDENTIALS, then the default place."""
    if cli_path is not None and not cli_path.strip():
        # Typically an unset shell variable (--credentials "$BUNDLE"): never silently the installed bundle.
        raise BadInput(
            "--credentials is empty",
            "it names no file",
            "Give --credentials the path of your bundle, or leave it out to use the installed one.",
        )
    if cli_path:
        return Path(cli_path).expanduser()
    if env_value:
        return Path(env_value).expanduser()
    return home / ".condor" / "annex-credentials.toml"


def check_named_bundle(path: Path, named_by: str) -> Path:
    """A bundle named by --credentials or $CONDOR_ANNEX_CREDENTIALS must exist: the error names
    what named it (she may not remember setting the variable)."""
    if path.exists():
        return path
    raise BadInput(
        f"cannot use the credentials bundle {path}",
        f"{named_by} names it, and there is no such file",
        "Unset CONDOR_ANNEX_CREDENTIALS (the installed bundle, ~/.condor/annex-credentials.toml, is then used) "
        "or set it to your bundle's path." if named_by.startswith("$") else
        "Give --credentials the path of your bundle, or leave it out to use the installed one.",
    )


def _fail(path: Path, why: str, next_step: str = "") -> BadInput:
    return BadInput(
        f"cannot use the credentials bundle {path}",
        why,
        next_step
        or "Ask your pool administrator for a bundle (`annex-admin issue-credentials`), then run "
        "`condor_annex import-credentials FILE`.",
    )


def check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _fail(
            path,
            f"it is readable by others (mode {mode:04o}); it holds an AWS secret key",
            f"Run `chmod 600 {path}` (and consider asking for new keys if others could read it).",
        )


def load_bundle(path: Path) -> Bundle:
    if not path.exists():
        raise _fail(path, "the file does not exist")
    if not path.is_file():
        raise _fail(path, "it is not a regular file")
    check_private(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # an editor's byte-order mark (Notepad) is no content
    except PermissionError as exc:
        raise _fail(path, "it cannot be read (permission denied)", f"Check the owner of {path}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"it cannot be read ({exc.__class__.__name__})") from exc
    if not text.strip():
        raise _fail(path, "the file is empty")
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise _fail(path, f"it is not valid TOML ({str(exc)[:200] or 'nested too deeply'})") from exc
    return parse_bundle(data, path)


def parse_bundle(data: Mapping[str, Any], path: Path) -> Bundle:
    values: dict[str, str] = {}
    for key in REQUIRED_STRINGS:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, f"the key {key!r} is missing or not a non-empty string")
        values[key] = value.strip()
    _check_region(values["region"], path)
    return Bundle(caps=informational_caps(data), broker_arn=_broker_arn(data, path), **values)


def _broker_arn(data: Mapping[str, Any], path: Path) -> str:
    """The broker's ARN when the bundle names one (the broker itself refuses a proof for another)."""
    from annex_cloud.identity import FUNCTION_ARN_RE

    value = data.get("broker_arn")
    if value is None:
        return ""
    if not isinstance(value, str) or not FUNCTION_ARN_RE.fullmatch(value.strip()):
        raise _fail(path, f"its broker_arn {str(value)[:120]!r} is not a Lambda function ARN")
    return value.strip()


def _check_region(region: str, path: Path) -> None:
    from annex_common.regions import closest_region, known_regions, unknown_region_reason

    if region in known_regions():
        return
    nearest = closest_region(region)
    raise _fail(
        path,
        f"its region {region!r} is unknown: {unknown_region_reason()}",
        (f"Did you mean {nearest}? " if nearest else "")
        + "Fix the region line of the bundle, or ask your pool administrator for a new one.",
    )


def informational_caps(data: Mapping[str, Any]) -> Caps | None:
    """The caps the bundle shows, when all three are there and sensible; otherwise none."""
    try:
        return caps_from_mapping(data)
    except (ValueError, OverflowError):
        return None


def folder_problem(path: Path) -> str | None:
    """Why no bundle can be written at ``path`` (its folder takes no new file), or None.

    Tried as ``write_bundle`` writes (a new file beside its place), and removed at once: asking
    the file system is the one sure answer (as root, os.access says yes to /proc)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=path.expanduser().parent, prefix=f".{path.name}.")
    except OSError as exc:
        return f"no new file can be made in {path.expanduser().parent} ({exc.strerror})"
    os.close(fd)
    os.unlink(probe)
    return None


def write_bundle(path: Path, bundle: Bundle) -> None:
    """Write atomically with mode 0600 from the first byte (never briefly world-readable)."""
    import tomli_w

    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        # The error is about the temporary file, which the reader never named: say what it means
        # for theirs (in /proc, say, the path exists and ENOENT alone reads as a contradiction).
        raise OSError(exc.errno, f"no new file can be made in {path.parent} ({exc.strerror}), and the bundle is "
                                 "written beside its place first, then moved there") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"# condor-annex credentials bundle: keep private (mode 0600).\n")
            handle.write(tomli_w.dumps(bundle.to_toml_dict()).encode())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ImportPlan:
    """A bundle to install, and what is installed in its place now."""

    source: Path
    bundle: Bundle
    destination: Path
    occupied: bool  # a file is there already
    current: Bundle | None  # that file as a bundle, when it is a usable one

    @property
    def unchanged(self) -> bool:
        return self.current == self.bundle

    def question(self) -> str:
        """What replacing asks: the installed credentials and the new ones, both named."""
        current = (f"the file {self.destination} (not a usable bundle)" if self.current is None
                   else f"the credentials in {self.destination} ({_identity(self.current)})")
        return f"Replace {current} with those in {self.source} ({_identity(self.bundle)})?"


def _identity(bundle: Bundle) -> str:
    return f"project {bundle.project_id}, user {bundle.user}, region {bundle.region}"


def plan_import(source: Path, destination: Path) -> ImportPlan:
    """Check a bundle exactly as --credentials would (private mode included) before installing it."""
    bundle = load_bundle(source)
    occupied = destination.exists() or destination.is_symlink()
    current = None
    if occupied:
        try:
            current = load_bundle(destination)
        except BadInput:
            current = None
    return ImportPlan(source, bundle, destination, occupied, current)


def install_bundle(plan: ImportPlan) -> Bundle:
    """Install the bundle in its place with mode 0600 (replacing what was there)."""
    write_bundle(plan.destination, plan.bundle)
    return plan.bundle
