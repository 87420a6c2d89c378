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
from typing import Any, Protocol

import shamir_mnemonic

from builder.core.errors import InputError
from builder.core.record import record
from builder.core.secret import Secret


@record
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

    def check(self, share: Secret) -> None:
        """Check one share is well formed (its checksum) without combining; raises InputError."""
        ...


# SLIP-39 encodes member and group indices in 4 bits
_MAX_SHARES = 16


class Slip39:
    """SLIP-39 mnemonic shares: checksummed words an approver can keep on paper."""

    # Each increment doubles the PBKDF2 work in SLIP-39's Feistel cipher; the
    # shares are already only readable by their approver, so we keep the
    # smallest cost, which also keeps activation fast.
    iteration_exponent = 0
    # SLIP-39's optional passphrase; the shares are protected by age, not by a passphrase,
    # so it stays empty (public test vectors set their own through a subclass)
    passphrase = b""

    def split(
        self, secret: Secret, group_threshold: int, groups: Sequence[GroupShape]
    ) -> list[list[Secret]]:
        if not groups:
            raise InputError("refusing to split a secret into no groups")
        for g in groups:
            if not 1 <= g.threshold <= g.count <= _MAX_SHARES:
                raise InputError(
                    f"cannot split the unseal key (a group needs 1 <= threshold <= count <= "
                    f"{_MAX_SHARES}, got {g.threshold} of {g.count})"
                )
        try:
            words = shamir_mnemonic.generate_mnemonics(
                group_threshold,
                # a 1-of-n group is n copies of one share: SLIP-39 refuses to make n
                # shares with threshold 1 because they would all be the same anyway
                [(g.threshold, 1 if g.threshold == 1 else g.count) for g in groups],
                secret.reveal(),
                self.passphrase,
                extendable=True,
                iteration_exponent=self.iteration_exponent,
            )
        except (ValueError, shamir_mnemonic.MnemonicError) as e:
            raise InputError(f"cannot split the unseal key ({_first_line(e)})") from None
        return [
            [Secret(w.encode("ascii")) for w in (group * g.count if g.threshold == 1 else group)]
            for g, group in zip(groups, words, strict=True)
        ]

    def check(self, share: Secret) -> None:
        try:
            shamir_mnemonic.share.Share.from_mnemonic(share.reveal().decode("ascii"))
        except (ValueError, UnicodeDecodeError, shamir_mnemonic.MnemonicError) as e:
            raise InputError(f"not a valid SLIP-39 share ({_first_line(e)})") from None

    def combine(self, shares: Sequence[Secret]) -> Secret:
        if not shares:
            raise InputError("no shares to combine")
        try:
            # decoding checks every share's checksum and that all belong to one split
            groups = shamir_mnemonic.decode_mnemonics([s.reveal().decode("ascii") for s in shares])
            ems = shamir_mnemonic.recover_ems(_minimal_quorum(groups))
            return Secret(ems.decrypt(self.passphrase))
        except (ValueError, UnicodeDecodeError, shamir_mnemonic.MnemonicError) as e:
            raise InputError(f"cannot combine shares ({_first_line(e)})") from None


def _minimal_quorum(groups: dict[int, Any]) -> dict[int, Any]:
    """Exactly the shares the policy needs, when there are enough; else all of them.

    shamir-mnemonic refuses more shares than a threshold, but more approvals than the
    quorum must still unseal. The choice is deterministic (lowest indices first) so a
    bad surplus share cannot make the outcome vary from run to run.
    """
    if not groups:
        return groups
    group_threshold = next(iter(groups.values())).common_parameters().group_threshold
    complete = [i for i in sorted(groups) if groups[i].is_complete()]
    if len(complete) < group_threshold:
        return groups
    chosen = {}
    for i in complete[:group_threshold]:
        group = groups[i]
        minimal = shamir_mnemonic.shamir.ShareGroup()
        for share in sorted(group, key=lambda s: s.index)[: group.member_threshold()]:
            minimal.add(share)
        chosen[i] = minimal
    return chosen


def _first_line(e: BaseException) -> str:
    # shamir-mnemonic quotes the opening words of a share, or an unknown word, in some
    # messages; drop every quoted part so no share material reaches an error
    text = (str(e).splitlines() or [type(e).__name__])[0]
    text = re.sub(r"\"[^\"]*\"|'[^']*'", '"..."', text)[:160].rstrip(". ")
    return text[:1].lower() + text[1:]


DEFAULT: ShareScheme = Slip39()


def split(secret: Secret, group_threshold: int, groups: Sequence[GroupShape]) -> list[list[Secret]]:
    return DEFAULT.split(secret, group_threshold, groups)


def combine(shares: Sequence[Secret]) -> Secret:
    return DEFAULT.combine(shares)


def check(share: Secret) -> None:
    DEFAULT.check(share)
