"""What both programs do around every command: print one readable error, pick the exit status.

Kept free of boto3 so `--help` stays fast; botocore is imported only when an error needs it.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from enum import Enum
from typing import Any, Callable, Iterator, TypeVar

from annex_common.errors import AnnexError

T = TypeVar("T")


class LazyConsole:
    """A rich Console made on first use: `--help` then never imports rich's console machinery."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


err_console = LazyConsole(stderr=True, highlight=False, soft_wrap=True)


def run_guarded(action: Callable[[], T], *, debug: bool) -> T:
    """Run one command's core; turn any failure into one message and an exit status."""
    try:
        return action()
    except AnnexError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(exc.render(), markup=False)
        raise SystemExit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        err_console.print("Interrupted: nothing further was started.", markup=False)
        raise SystemExit(130) from None
    except Exception as exc:  # the one place an unexpected error is caught
        if type(exc).__module__.startswith("botocore"):
            # An AWS failure outside a more specific wrapper: still one readable message.
            translated = _translate_aws_error(exc)
            if translated is not None:
                if debug:
                    traceback.print_exc()
                err_console.print(translated.render(), markup=False)
                raise SystemExit(translated.exit_code) from None
        if debug:
            traceback.print_exc()
        err_console.print(
            f"Error: unexpected failure ({exc.__class__.__name__}: {exc})\n"
            "  Next: run again with --debug and report the output.",
            markup=False,
        )
        raise SystemExit(1) from None


def _translate_aws_error(exc: Exception) -> AnnexError | None:
    from annex_common.aws import aws_errors

    try:
        with aws_errors("an AWS request failed"):
            raise exc
    except AnnexError as translated:
        return translated
    except Exception:
        return None


def require_confirmation(question: str, *, assume_yes: bool) -> None:
    """Ask once; a missing or negative answer is a usage error that changed nothing (exit 2)."""
    if not confirm(question, assume_yes=assume_yes):
        from annex_common.errors import Declined

        raise Declined(question, asked=sys.stdin.isatty())


def confirmer(*, assume_yes: bool) -> Callable[[str], bool]:
    """A core function's question callback: True, or ``Declined`` as require_confirmation says it."""

    def ask(question: str) -> bool:
        require_confirmation(question, assume_yes=assume_yes)
        return True

    return ask


def status_printer(status: Any, indent: str = "") -> Callable[[str], None]:
    """A progress callback: show the line on the spinner and keep it in the scroll-back."""

    def progress(line: str) -> None:
        status.update(line.strip())
        err_console.print(f"{indent}{line}", markup=False)

    return progress


def confirm(question: str, *, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        return False
    # The question is a message, not a result: stderr, so that stdout stays parseable.
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


# Options of the program itself (not of a command): they must reach the top level untouched.
PROGRAM_OPTIONS = ("--help", "-h", "--version", "--install-completion", "--show-completion")
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def command_names(app: Any) -> tuple[str, ...]:
    """The command names of a typer app, as its users type them."""
    return tuple(
        command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands
    ) + tuple(group.name for group in getattr(app, "registered_groups", []) if group.name)


def reject_unknown_command(program: str, argv: list[str], commands: tuple[str, ...]) -> None:
    """A first word that is no command is a mistyped command: say so, with the closest match."""
    if not argv or argv[0].startswith("-") or argv[0] in commands:
        return

    def refuse() -> None:
        import difflib

        from annex_common.errors import BadInput

        close = difflib.get_close_matches(argv[0], commands, n=1, cutoff=0.6)
        raise BadInput(
            f"{program} has no command {argv[0]!r}",
            f"its commands are {', '.join(commands)}",
            (f"Did you mean `{program} {close[0]}`? " if close else "") + f"See `{program} --help`.",
        )

    run_guarded(refuse, debug=False)


def print_version(program: str) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("condor-annex")
    except PackageNotFoundError:  # running from a source tree that was never installed
        number = "unknown"
    print(f"{program} (condor-annex) {number}")


def print_table(console: Any, table: Any) -> None:
    """Print a rich table without ever cutting a cell.

    Written to a file or a pipe, the table is as wide as its longest rows need (a script reads
    whole ids, not ``i-00983b…``); on a terminal, cells that do not fit fold onto a second line.
    """
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    # A console prints no wider than itself: a second one, as wide as the table, on the same file.
    Console(file=console.file, width=max(natural, console.width), highlight=False).print(table)


class OutputFormat(str, Enum):
    """--output: a table (or lines) for a person, or JSON alone on stdout for a script."""

    table = "table"
    json = "json"


def print_json(document: Any) -> None:
    """The command's result as JSON, alone on stdout (messages go to stderr)."""
    import json

    print(json.dumps(document, indent=2))


class Waiting:
    """Progress of a wait on stderr: a spinner with the elapsed time, and each step with its time.

    Call it with a line to report a step (it is the core's ``progress`` callback). On a terminal
    the spinner keeps counting between steps; in a file or a pipe the timed lines remain.
    """

    def __init__(self, label: str, indent: str) -> None:
        self.label = label
        self.indent = indent
        self.started = time.monotonic()
        self._status: Any = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, line: str) -> None:
        self.label = line.strip()
        err_console.print(f"{self.indent}{seconds(self.elapsed()):>7}  {line}", markup=False)

    def __rich__(self) -> str:  # the spinner's text, re-rendered at every refresh
        return f"{self.label} ({seconds(self.elapsed())})"

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the spinner while something else talks to the person (a table, a question).

        The time spent there (a person reading and answering) is not part of the wait."""
        self._status.stop()
        paused_at = time.monotonic()
        try:
            yield
        finally:
            self.started += time.monotonic() - paused_at
            self._status.start()


def seconds(elapsed: float) -> str:
    """An elapsed time as a person reads it: tenths under ten seconds, then whole seconds, minutes."""
    if elapsed < 10:
        return f"{elapsed:.1f} s"
    if elapsed < 120:
        return f"{elapsed:.0f} s"
    return f"{int(elapsed // 60)} min {int(elapsed % 60):02d} s"


@contextlib.contextmanager
def waiting(label: str, indent: str = "  ") -> Iterator[Waiting]:
    wait = Waiting(label, indent)
    with err_console.status(wait) as status:
        wait._status = status
        yield wait
