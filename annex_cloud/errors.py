"""What the broker says when it will not do something: the client shows it and exits 2."""

from __future__ import annotations


class Refused(Exception):
    """A request the broker will not carry out; nothing was changed in AWS.

    Carries the same three parts every condor-annex message has: what, why, what to do next.
    """

    def __init__(self, what: str, why: str = "", next_step: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.why = why
        self.next_step = next_step

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "why": self.why, "next": self.next_step}


class Busy(Exception):
    """Another request of the same project holds the project's lock: retry shortly."""
