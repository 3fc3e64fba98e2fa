"""The project's one exception root.

Every failure a user can see is an ``AnnexError`` carrying three parts, printed once by the CLI
layer: what failed, why, and what to do next. ``exit_code`` follows the contract: 1 when an
operation failed, 2 when the input was bad and nothing was changed in AWS.
"""

from __future__ import annotations


class AnnexError(Exception):
    exit_code = 1

    def __init__(self, what: str, why: str = "", next_step: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.why = why
        self.next_step = next_step

    def render(self) -> str:
        lines = [f"Error: {self.what}"]
        if self.why:
            lines.append(f"  Why: {self.why}")
        if self.next_step:
            lines.append(f"  Next: {self.next_step}")
        return "\n".join(lines)


class BadInput(AnnexError):
    """Bad input or usage; guaranteed to have changed nothing in AWS."""

    exit_code = 2


class Declined(BadInput):
    """A question that was not answered yes: nothing was changed. Exit 2 everywhere, as all bad
    input (the README's exit status line)."""

    def __init__(self, question: str, *, asked: bool = True) -> None:
        super().__init__(
            "not confirmed: nothing was changed",
            f"{question!r} " + ("was not answered yes" if asked else "could not be asked (no --yes, and no terminal to ask on)"),
            "Run again and answer y, or pass --yes.",
        )
        self.asked = asked

    def render(self) -> str:
        # "n" is an answer, not a mistake: a notice. A question that could not be asked stays an
        # error, which says how to answer it (--yes).
        return "Not confirmed: nothing was changed." if self.asked else super().render()


class AwsFailure(AnnexError):
    """An AWS call failed (after retries)."""


class NotReady(AnnexError):
    """Something the tools need is missing (no stack, stack failed, ...)."""


class Interrupted(AnnexError):
    """Ctrl-C after something was asked of AWS: says what may have happened and how to see it."""

    exit_code = 130
