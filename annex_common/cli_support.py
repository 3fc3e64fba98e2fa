"""What both programs do around every command: print one readable error, pick the exit status.

Kept free of boto3 so `--help` stays fast; botocore is imported only when an error needs it.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import traceback
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterator, NoReturn, TypeVar

from typer.core import TyperCommand

from annex_common.errors import AnnexError

T = TypeVar("T")


class LazyConsole:
    """A rich Console made on first use: `--help` then never imports rich's console machinery.

    With ``words_on_terminal``, long lines wrap between words when it writes to a terminal
    (the terminal itself would cut them anywhere), and stay whole lines in a pipe, for scripts.
    """

    def __init__(self, *, words_on_terminal: bool = False, **options: Any) -> None:
        self._options = options
        self._words_on_terminal = words_on_terminal
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
            if self._words_on_terminal and self._console.is_terminal:
                self._console.soft_wrap = False
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


class ReaderGuard:
    """The program's stdout: when its reader goes away (`| head`, `| true`), the program stops
    quietly with exit 0, as Unix tools do.

    The one rule for every writer (rich, click's help, print, completion scripts): it acts at
    the write itself, before rich (which exits 1) or click (which exits 1) handle the error.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _reader_gone()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _reader_gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _reader_gone() -> NoReturn:
    import os

    # What is still buffered (and the flush at exit) then goes nowhere instead of failing again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


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
    line = sys.stdin.readline()
    if not line.endswith("\n"):  # Ctrl-D: the terminal echoed no newline; what follows starts on its own line
        sys.stderr.write("\n")
    return line.strip().lower() in ("y", "yes")


# Options of the program itself (not of a command): they must reach the top level untouched.
VERSION_OPTIONS = ("--version", "-v")
PROGRAM_OPTIONS = ("--help", "-h", *VERSION_OPTIONS, "--install-completion", "--show-completion")
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
    _refuse(_unknown_command(program, argv[0], commands))


def _unknown_command(program: str, word: str, commands: tuple[str, ...]) -> Exception:
    import difflib

    from annex_common.errors import BadInput

    close = difflib.get_close_matches(word, commands, n=1, cutoff=0.6)
    return BadInput(
        f"{program} has no command {word!r}",
        f"its commands are {', '.join(commands)}",
        (f"Did you mean `{program} {close[0]}`? " if close else "") + f"See `{program} --help`.",
    )


def _refuse(error: Exception) -> None:
    """Print a usage error as every error is printed, and exit 2."""

    def refuse() -> None:
        raise error

    run_guarded(refuse, debug=False)


class PlainUsage(TyperCommand):
    """A command whose usage line names a required argument as people write it (``FILE``, not
    typer's ``{FILE}``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
                for piece in super().collect_usage_pieces(ctx)]


COMPLETION_OPTIONS = ("--install-completion", "--show-completion")
# One dash and a word: an HTCondor habit (condor_status -annex), or a cluster of short flags (-hy).
_SINGLE_DASH_WORD = re.compile(r"-[A-Za-z][A-Za-z0-9-]+")
# A time of day as a word of its own: the second half of an unquoted date and time.
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2})?")
_ZONE = re.compile(r"[A-Za-z]{1,5}")


@dataclass(frozen=True)
class OptionTable:
    """The option names of a typer app's program and commands, from its click command."""

    commands: tuple[str, ...]
    long_options: frozenset[str]  # every --name, of the program and of any command
    short_flags: frozenset[str]  # every -x
    taking_values: frozenset[str]  # options whose next word is their value

    @classmethod
    def of(cls, app: Any) -> "OptionTable":
        import typer.main

        group = typer.main.get_command(app)
        params = list(group.params)
        for command in group.commands.values():
            params += command.get_params(group.make_context(command.name, [], resilient_parsing=True))
        names: set[str] = set()
        values: set[str] = set()
        for param in params:
            if getattr(param, "param_type_name", "") != "option":
                continue
            opts = [*param.opts, *param.secondary_opts]
            names.update(opts)
            if not param.is_flag and not param.count:
                values.update(opts)
        return cls(
            commands=tuple(group.commands),
            long_options=frozenset(n for n in names if n.startswith("--")),
            short_flags=frozenset(n for n in names if len(n) == 2 and n[0] == "-" and n[1] != "-"),
            taking_values=frozenset(values),
        )


def route(program: str, app: Any, argv: list[str], default_command: str | None = None) -> list[str]:
    """The words as the typer app should get them, or one usage error (exit 2) that says what was meant.

    - ``--show-completion SHELL`` / ``--install-completion SHELL`` use the shell named, not the one
      detected;
    - a one-dash word (``-help``, ``-annex-name``) is refused naming its two-dash form;
    - ``--version``/``-v`` anywhere (before ``--``) is the program's version, as ``--help`` is help;
    - options before the command never hide it: its first word that is neither an option nor an
      option's value is the command (moved first), or a mistyped one, named with the closest; an
      unknown option before it is refused as one (its value cannot be told from a command);
    - with no command, ``default_command`` (condor_annex's launch) is the command.
    """
    if not argv:
        return argv
    if argv[0] in COMPLETION_OPTIONS and len(argv) > 1 and not argv[1].startswith("-"):
        _completion(program, app, argv[0], argv[1])
    if argv[0] in PROGRAM_OPTIONS:
        return argv
    needs_table = argv[0].startswith("-") or any(
        _SINGLE_DASH_WORD.fullmatch(word) or word in VERSION_OPTIONS for word in argv)
    if not needs_table:
        reject_unknown_command(program, argv, command_names(app))
        return argv
    table = OptionTable.of(app)
    first: int | None = None
    words = iter(enumerate(argv))
    for index, word in words:
        if word == "--":
            break
        if word in VERSION_OPTIONS:
            return [word]
        if _SINGLE_DASH_WORD.fullmatch(word) and not set(f"-{c}" for c in word[1:]) <= table.short_flags:
            _refuse(_one_dash(program, word, table))
        name = word.split("=", 1)[0]
        if first is None and name.startswith("--") and name not in table.long_options:
            command = next((w for w in argv if w in table.commands), default_command)
            _refuse(_no_such_option(name, table.long_options, f"See `{program}{' ' + command if command else ''} --help`."))
        if word in table.taking_values:
            next(words, None)  # its value, whatever it looks like
        elif not word.startswith("-") and first is None:
            first = index
    if first is None:
        return [default_command, *argv] if default_command else argv
    if argv[first] not in table.commands:
        _refuse(_unquoted_value(argv, first) or _unknown_command(program, argv[first], table.commands))
    return [argv[first], *argv[:first], *argv[first + 1:]]


def run_app(program: str, app: Any, argv: list[str], default_command: str | None = None) -> None:
    """Run the typer app on the words (``route``); a usage error is one message in the project's
    words and exit 2, never the parsing library's text."""
    sys.stdout = ReaderGuard(sys.stdout)
    try:
        _run_app(program, app, argv, default_command)
    finally:
        sys.stdout.flush()  # here, not at exit: a reader gone by now is still an exit 0, not a Python message


def _run_app(program: str, app: Any, argv: list[str], default_command: str | None) -> None:
    import typer.main
    from typer._click import exceptions as click_errors
    from typer.exceptions import Abort

    words = route(program, app, argv, default_command)
    try:
        code = typer.main.get_command(app).main(args=words, prog_name=program, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()  # the program's help, as --help shows it (exit 2: no command was given)
        raise SystemExit(exc.exit_code) from None
    except click_errors.UsageError as exc:
        _refuse(_usage_error(program, exc, words))
    except Abort:
        err_console.print("Interrupted: nothing further was started.", markup=False)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


# What the parsing library says of a value it cannot read, in words.
_LIBRARY_PHRASES = (
    (re.compile(r"^Value error, "), ""),
    (re.compile(r"Input should be a valid integer.*"), "is not a whole number"),
    (re.compile(r"Input should be a valid number.*"), "is not a number"),
    (re.compile(r"Input should be (.*)"), r"should be \1"),
)


def _usage_error(program: str, exc: Any, words: list[str]) -> Exception:
    from annex_common.errors import BadInput

    command = " ".join(exc.ctx.command_path.split()[1:]) if exc.ctx is not None else ""
    see = f"See `{program}{' ' + command if command else ''} --help`."
    if exc.__class__.__name__ == "NoSuchOption":
        return _no_such_option(exc.option_name, exc.possibilities or (), see)
    if exc.message.startswith("Got unexpected extra argument"):
        split = next(filter(None, (_unquoted_value(words, index) for index in range(len(words)))), None)
        if split is not None:
            return split
    param = getattr(exc, "param", None)
    if exc.__class__.__name__ == "BadParameter" or (param is not None and exc.__class__.__name__ != "MissingParameter"):
        names = list(getattr(param, "opts", []) or [])
        label = names[0] if names else (getattr(param, "human_readable_name", "") or "a value")
        message = exc.message
        for pattern, words_for in _LIBRARY_PHRASES:
            message = pattern.sub(words_for, message)
        value = _given_value(words, names)
        if value is not None and not message.startswith(repr(value)):
            message = f"{value!r} {message}"
        return BadInput(f"{label} {message.rstrip('.')}", "", see)
    if exc.__class__.__name__ == "MissingParameter" and param is not None:
        names = list(getattr(param, "opts", []) or [])
        label = names[0] if getattr(param, "param_type_name", "") == "option" else (param.metavar or param.name).upper()
        return BadInput(f"{label} is missing", f"`{program}{' ' + command if command else ''}` needs it", see)
    return BadInput(exc.format_message().rstrip("."), "", see)


def _no_such_option(name: str, options: Any, see: str) -> Exception:
    """An unknown option, wherever it is written: named, with the closest option there is."""
    import difflib

    from annex_common.errors import BadInput

    close = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    return BadInput(f"No such option: {name}" + (f" (did you mean {close[0]}?)" if close else ""), "", see)


def _unquoted_value(words: list[str], index: int) -> Exception | None:
    """The words[index] a time of day right after an option and its value: a date and time the
    shell split in two because it was not quoted (``--expiry 2026-12-07 10:00``); else None."""
    if index < 2 or not _CLOCK.fullmatch(words[index]):
        return None
    option, date = words[index - 2], words[index - 1]
    if not option.startswith("--") or date.startswith("-"):
        return None
    from annex_common.errors import BadInput

    parts = [date, words[index]]
    if index + 1 < len(words) and _ZONE.fullmatch(words[index + 1]):
        parts.append(words[index + 1])  # a zone written after the time (UTC) was split off too
    return BadInput(
        f"{option} {' '.join(parts)}: the date and time came as separate words",
        f"the shell splits a value at its spaces unless it is quoted, so {option} got {date!r} alone",
        f"Quote it: {option} '{' '.join(parts)}'.",
    )


def _given_value(words: list[str], names: list[str]) -> str | None:
    """The last value given to one of these options on the command line, or None."""
    found = None
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                found = words[index + 1]
            elif word.startswith(name + "="):
                found = word[len(name) + 1:]
    return found


def _one_dash(program: str, word: str, table: OptionTable) -> Exception:
    import difflib

    from annex_common.errors import BadInput

    meant = f"-{word}"
    if meant not in table.long_options:
        close = difflib.get_close_matches(meant, sorted(table.long_options), n=1, cutoff=0.6)
        meant = close[0] if close else ""
    return BadInput(
        f"{program} has no option {word}",
        "its options take two dashes (HTCondor's own tools take one)",
        (f"Did you mean {meant}? " if meant else "") + f"See `{program} --help`.",
    )


def _completion(program: str, app: Any, option: str, shell: str) -> None:
    """Show or install the completion script of the shell named; an unknown shell is bad input."""
    from typer._completion_classes import completion_init
    from typer._completion_shared import Shells, get_completion_script, install

    from annex_common.errors import BadInput

    completion_init()
    shells = [s.value for s in Shells]
    if shell not in shells:
        _refuse(BadInput(f"{option} does not know the shell {shell!r}", f"it knows {', '.join(shells)}",
                         f"Run `{program} {option} {shells[0]}` (or another of them)."))
    complete_var = "_{}_COMPLETE".format(program.replace("-", "_").upper())
    if option == "--show-completion":
        print(get_completion_script(prog_name=program, complete_var=complete_var, shell=shell))
    else:
        installed, path = install(shell=shell, prog_name=program, complete_var=complete_var)
        print(f"{installed} completion installed in {path}\nCompletion will take effect once you restart the terminal")
    raise SystemExit(0)


def print_version(program: str) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("condor-annex")
    except PackageNotFoundError:  # running from a source tree that was never installed
        number = "unknown"
    print(f"{program} (condor-annex) {number}")


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
