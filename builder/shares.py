"""The share layer: k-of-n splitting of an unseal key, behind one small interface.

The default implementation is SLIP-39 through ``shamir-mnemonic``, the
reference implementation. Its README warns that it is not hardened (pure
Python, not constant-time); we accept that because shares are combined once,
in a short-lived process on the host at activation (see docs/threat-model.md).
A hardened implementation replaces it by providing the same two functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import shamir_mnemonic

from builder.errors import InputError
from builder.secret import Secret


@dataclass(frozen=True)
class GroupShape:
    """One group of shares: ``threshold`` of ``count`` members must take part."""

    threshold: int
    count: int


class ShareScheme(Protocol):
    def split(
        self, secret: Secret, group_threshold: int, groups: Sequence[GroupShape]
    ) -> list[list[Secret]]:
        """Split ``secret`` into groups of shares; shares are returned masked."""
        ...

    def combine(self, shares: Sequence[Secret]) -> Secret:
        """Recover the secret from enough shares; raises InputError otherwise."""
        ...


class Slip39:
    """SLIP-39 mnemonic shares: checksummed words an approver can keep on paper."""

    # Each increment doubles the PBKDF2 work in SLIP-39's Feistel cipher; the
    # shares are already only readable by their approver, so we keep the
    # smallest cost, which also keeps activation fast.
    iteration_exponent = 0

    def split(
        self, secret: Secret, group_threshold: int, groups: Sequence[GroupShape]
    ) -> list[list[Secret]]:
        if not groups:
            raise InputError("refusing to split a secret into no groups")
        try:
            words = shamir_mnemonic.generate_mnemonics(
                group_threshold,
                [(g.threshold, g.count) for g in groups],
                secret.reveal(),
                b"",
                extendable=True,
                iteration_exponent=self.iteration_exponent,
            )
        except (ValueError, shamir_mnemonic.MnemonicError) as e:
            raise InputError(f"cannot split the unseal key ({e})") from None
        return [[Secret(w.encode("ascii")) for w in group] for group in words]

    def combine(self, shares: Sequence[Secret]) -> Secret:
        if not shares:
            raise InputError("no shares to combine")
        try:
            return Secret(
                shamir_mnemonic.combine_mnemonics([s.reveal().decode("ascii") for s in shares])
            )
        except (ValueError, UnicodeDecodeError, shamir_mnemonic.MnemonicError) as e:
            raise InputError(f"cannot combine shares ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    # shamir-mnemonic quotes the opening words of a share in some messages; drop them
    text = re.sub(r'"[^"]*"', '"..."', (str(e).splitlines() or [type(e).__name__])[0])
    return text[:160]


DEFAULT: ShareScheme = Slip39()


def split(secret: Secret, group_threshold: int, groups: Sequence[GroupShape]) -> list[list[Secret]]:
    return DEFAULT.split(secret, group_threshold, groups)


def combine(shares: Sequence[Secret]) -> Secret:
    return DEFAULT.combine(shares)
