"""The share layer: SLIP-39 split and combine round trips, and clean refusals."""

from __future__ import annotations

import itertools
import os

import pytest

from builder.core import shares
from builder.core.errors import InputError
from builder.core.secret import Secret
from builder.core.shares import GroupShape, Slip39


def _secret() -> Secret:
    return Secret(os.urandom(32))


def _word_triples(group: list[Secret]) -> set[str]:
    triples: set[str] = set()
    for share in group:
        words = share.reveal().decode("ascii").split()
        triples.update(" ".join(words[i : i + 3]) for i in range(len(words) - 2))
    return triples


def _assert_no_share_words(error: InputError, all_shares: list[Secret]) -> None:
    message = str(error)
    assert "\n" not in message
    assert message == message.strip() and not message.endswith(".")
    for triple in _word_triples(all_shares):
        assert triple not in message


def test_two_of_three_round_trip_for_every_pair() -> None:
    secret = _secret()
    [group] = shares.split(secret, 1, [GroupShape(2, 3)])
    assert len(group) == 3
    assert all(isinstance(s, Secret) for s in group)
    for pair in itertools.combinations(group, 2):
        assert shares.combine(list(pair)) == secret
    # all three is also enough
    assert shares.combine(group) == secret


def test_shares_print_masked() -> None:
    [group] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    words = group[0].reveal().decode("ascii")
    assert len(words.split()) == 33  # 256-bit secret: 33 words per share
    assert words not in repr(group) and words not in str(group)


def test_two_group_policy_round_trip() -> None:
    # both groups must take part: 2 of 3 ops engineers and 1 of 2 security officers
    secret = _secret()
    ops, security = shares.split(secret, 2, [GroupShape(2, 3), GroupShape(1, 2)])
    assert (len(ops), len(security)) == (3, 2)
    for pair in itertools.combinations(ops, 2):
        for officer in security:
            assert shares.combine([*pair, officer]) == secret


def test_two_group_policy_one_group_is_not_enough() -> None:
    secret = _secret()
    ops, security = shares.split(secret, 2, [GroupShape(2, 3), GroupShape(1, 2)])
    with pytest.raises(InputError) as caught:
        shares.combine(ops)
    _assert_no_share_words(caught.value, ops + security)
    with pytest.raises(InputError):
        shares.combine([ops[0], security[0]])


@pytest.mark.parametrize(("k", "n"), [(2, 3), (3, 5)])
def test_k_minus_one_shares_fail(k: int, n: int) -> None:
    [group] = shares.split(_secret(), 1, [GroupShape(k, n)])
    for subset in itertools.combinations(group, k - 1):
        with pytest.raises(InputError) as caught:
            shares.combine(list(subset))
        assert str(caught.value).startswith("cannot combine shares (")
        _assert_no_share_words(caught.value, group)


def test_shares_of_two_splits_do_not_combine() -> None:
    [first] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    [second] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    with pytest.raises(InputError) as caught:
        shares.combine([first[0], second[1]])
    _assert_no_share_words(caught.value, first + second)


def test_same_share_twice_is_not_two_shares() -> None:
    [group] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    with pytest.raises(InputError) as caught:
        shares.combine([group[0], group[0]])
    _assert_no_share_words(caught.value, group)


def test_corrupted_share_is_refused_without_echoing_it() -> None:
    [group] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    words = group[1].reveal().decode("ascii").split()
    words[5] = "academic" if words[5] != "academic" else "acid"  # checksum now fails
    bad = Secret(" ".join(words).encode("ascii"))
    with pytest.raises(InputError) as caught:
        shares.combine([group[0], bad])
    _assert_no_share_words(caught.value, [*group, bad])


def test_unknown_word_is_not_echoed() -> None:
    [group] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    words = group[1].reveal().decode("ascii").split()
    words[7] = "notaword"
    with pytest.raises(InputError) as caught:
        shares.combine([group[0], Secret(" ".join(words).encode("ascii"))])
    assert "notaword" not in str(caught.value)
    _assert_no_share_words(caught.value, group)


@pytest.mark.parametrize(
    "junk",
    [b"", b"   ", b"\xff\xfe not ascii", b"hello world", b"academic " * 40],
)
def test_junk_is_refused(junk: bytes) -> None:
    with pytest.raises(InputError):
        shares.combine([Secret(junk)])


def test_no_shares_is_refused() -> None:
    with pytest.raises(InputError, match="no shares"):
        shares.combine([])


@pytest.mark.parametrize(
    ("group_threshold", "groups", "secret_len"),
    [
        (1, [], 32),  # no groups
        (2, [GroupShape(2, 3)], 32),  # group threshold above group count
        (1, [GroupShape(4, 3)], 32),  # member threshold above member count
        (1, [GroupShape(0, 3)], 32),  # zero threshold
        (1, [GroupShape(1, 0)], 32),  # empty group
        (1, [GroupShape(1, 17)], 32),  # more members than SLIP-39 can index
        (1, [GroupShape(2, 17)], 32),
        (0, [GroupShape(2, 3)], 32),  # zero group threshold
        (1, [GroupShape(2, 3)], 8),  # secret shorter than 128 bits
        (1, [GroupShape(2, 3)], 17),  # odd length
    ],
)
def test_bad_split_policy_is_refused(
    group_threshold: int, groups: list[GroupShape], secret_len: int
) -> None:
    with pytest.raises(InputError) as caught:
        shares.split(Secret(os.urandom(secret_len)), group_threshold, groups)
    message = str(caught.value)
    assert "\n" not in message and not message.endswith(".")


def test_default_scheme_uses_no_passphrase() -> None:
    assert Slip39.passphrase == b""
    assert isinstance(shares.DEFAULT, Slip39)


def test_one_of_n_group_gives_every_member_a_working_share() -> None:
    # SLIP-39 itself refuses 1-of-n member shares; the scheme hands out n copies of a 1-of-1
    secret = _secret()
    [group] = shares.split(secret, 1, [GroupShape(1, 3)])
    assert len(group) == 3
    for share in group:
        assert shares.combine([share]) == secret


def test_more_shares_than_the_quorum_still_combine() -> None:
    # every approver may answer; surplus approvals must not block the unseal
    secret = _secret()
    [group] = shares.split(secret, 1, [GroupShape(3, 5)])
    assert shares.combine(group) == secret
    assert shares.combine(list(reversed(group))) == secret
    ops, security = shares.split(secret, 1, [GroupShape(2, 3), GroupShape(2, 2)])
    # group threshold 1: a complete ops group alone is enough; a lone officer is ignored
    assert shares.combine([*ops, security[0]]) == secret


def test_surplus_share_from_another_split_is_refused() -> None:
    [first] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    [second] = shares.split(_secret(), 1, [GroupShape(2, 3)])
    with pytest.raises(InputError) as caught:
        shares.combine([*first, second[0]])
    _assert_no_share_words(caught.value, first + second)
