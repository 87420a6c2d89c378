"""The one error base that the CLI catches, and its few kinds.

Library code raises; only ``builder.cli.main`` turns an error into an exit code.
Messages are one line, lowercase, without a trailing period, and never carry a
secret.
"""

from __future__ import annotations


class BreakglassError(Exception):
    """Base of every error a user may see. Exit code 2: bad input."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(BreakglassError):
    """Malformed or invalid input: a spec, bundle, request, approval or file.

    ``where`` is ``file:line:col`` (or as much of it as is known).
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.where = where


class CheckFailed(BreakglassError):
    """A check ran and did not pass: a signature, a digest, a drill step. Exit code 1."""

    exit_code = 1


class StateError(BreakglassError):
    """A command called out of order for the current state (not bad input). Exit code 1."""

    exit_code = 1


class ToolMissing(BreakglassError):
    """An external program we need (ssh-keygen, age, umoci, packer, ...) is not installed."""

    exit_code = 2
