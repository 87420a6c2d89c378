"""Approvers and the quorum policy (``builder.release.policy``), in-process: every rule, its message and place."""

from __future__ import annotations

import pytest

from builder.approval.quorum import Group
from builder.core.errors import InputError
from builder.core.yamlfile import loads
from builder.release.policy import Approver, Policy, parse_approvers, parse_policy

ALICE = (
    "age1y4x56c2gc2m7cetlpaunlr83d6w6qjae63wrvuk70uyp69g76ems6ucxcu",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPE9WKrurYYUfWwzi+V1wYyb50RO/T7t1srv47Tu07nd alice",
)
BOB = (
    "age1ckzzyv2zu8y58udq20q0myx6emjqp67ayhrj9uxf8p5cvnxryujs7j29y3",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdbSaEtKOYRAwwIE6Kv8tK4c8TmYXe66fYp094z3Rhg bob",
)
CAROL = (
    "age1vuxh34h2kd5r8yr37cls2svrr4yv3achjdxv4staqeqpyyzsaaqq7f7nx5",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILyKNVI/Jowr40k7SMc5CBNYi+WlRNJn1arWY8QSEau9 carol",
)
KEYS = {"alice": ALICE, "bob": BOB, "carol": CAROL}
TAIL = "  max_ttl: 4h\n  rotate_every: 90d\n"


def approvers_yaml(names: tuple[str, ...] = ("alice", "bob", "carol")) -> str:
    return "approvers:\n" + "".join(
        f"  - name: {n}\n    recipient: {KEYS[n][0]}\n    signing_key: {KEYS[n][1]}\n"
        for n in names
    )


def policy(body: str, tail: str = TAIL) -> Policy:
    """Parse ``policy:`` with ``body`` (its lines, indented two spaces) over alice, bob, carol."""
    root = loads(approvers_yaml() + "policy:\n" + body + tail, "spec.yaml")
    return parse_policy(root.get("policy"), parse_approvers(root.get("approvers")))


def refused(body: str, tail: str = TAIL) -> InputError:
    with pytest.raises(InputError) as err:
        policy(body, tail)
    return err.value


# line numbers below: approvers take lines 1-10, "policy:" is line 11, its body starts at 12
# (an error about the policy mapping itself points at its first key, 12:3)


def test_threshold_is_one_group_of_every_approver() -> None:
    p = policy("  threshold: 2\n")
    assert p.group_threshold == 1
    assert p.groups == (Group("default", 2, ("alice", "bob", "carol")),)
    assert (p.allow_single_approver, p.justification, p.on_activate) == (False, None, None)
    assert (p.max_ttl, p.request_lifetime, p.rotate_every) == (4 * 3600, 1800, 90 * 86400)


def test_policy_to_dict_without_a_hook() -> None:
    assert policy("  threshold: 2\n").to_dict()["on_activate"] is None


def test_policy_to_dict_is_the_manifest_form() -> None:
    p = policy("  threshold: 2\n  request_lifetime: 10m\n  on_activate: [/bin/alert, x]\n")
    assert p.to_dict() == {
        "group_threshold": 1,
        "groups": [{"name": "default", "threshold": 2, "members": ["alice", "bob", "carol"]}],
        "allow_single_approver": False,
        "justification": None,
        "max_ttl_seconds": 14400,
        "request_lifetime_seconds": 600,
        "rotate_every_seconds": 7776000,
        "on_activate": ["/bin/alert", "x"],
    }


def test_groups_and_group_threshold() -> None:
    p = policy(
        "  groups:\n"
        "    - {name: sre, threshold: 1, members: [alice]}\n"
        "    - {name: ops, threshold: 2, members: [bob, carol]}\n"
        "  group_threshold: 2\n"
    )
    assert p.group_threshold == 2
    assert p.groups == (Group("sre", 1, ("alice",)), Group("ops", 2, ("bob", "carol")))


def test_group_threshold_defaults_to_one() -> None:
    p = policy("  groups:\n    - {name: sre, threshold: 2, members: [alice, bob]}\n")
    assert p.group_threshold == 1 and p.groups == (Group("sre", 2, ("alice", "bob")),)


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        (
            "  threshold: 2\n  groups: []\n",
            "12:3",
            "policy needs exactly one of 'threshold' or 'groups'",
        ),
        ("  request_lifetime: 5m\n", "12:3", "policy needs exactly one of 'threshold' or 'groups'"),
        (
            "  threshold: 4\n",
            "12:14",
            "threshold 4 of group 'default' must be between 1 and its 3 approvers",
        ),
        (
            "  threshold: 0\n",
            "12:14",
            "threshold 0 of group 'default' must be between 1 and its 3 approvers",
        ),
        ("  groups: []\n", "12:11", "groups must not be empty"),
        (
            "  groups:\n    - {name: sre, threshold: 1, members: [alice]}\n"
            "    - {name: ops, threshold: 3, members: [bob, carol]}\n  group_threshold: 2\n",
            "14:30",
            "threshold 3 of group 'ops' must be between 1 and its 2 approvers",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 1, members: [alice, bob]}\n  group_threshold: 2\n",
            "14:20",
            "group_threshold 2 must be between 1 and 1",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 2, members: [alice, bob]}\n  group_threshold: 0\n",
            "14:20",
            "group_threshold 0 must be between 1 and 1",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 1, members: [alice]}\n"
            "    - {name: sre, threshold: 1, members: [bob]}\n",
            "14:14",
            "duplicate group 'sre'",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 1, members: [alice, bob]}\n"
            "    - {name: ops, threshold: 1, members: [bob, carol]}\n  group_threshold: 2\n",
            "14:42",
            "duplicate group member 'bob'",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 2, members: [alice, erin]}\n",
            "13:42",
            "group 'sre' names unknown approver 'erin'",
        ),
        ("  threshold: 2\n  on_activate: []\n", "13:16", "on_activate must name a command"),
        (
            "  threshold: 2\n  allow_single_approver: yes\n",
            "13:26",
            "allow_single_approver must be true or false",
        ),
    ],
)
def test_policy_errors_are_located(body: str, where: str, message: str) -> None:
    assert refused(body).message.startswith(f"spec.yaml:{where}: {message}")


@pytest.mark.parametrize(
    "body",
    [
        "  threshold: 1\n",
        # one group of one, needed alone
        "  groups:\n    - {name: sre, threshold: 1, members: [alice]}\n"
        "    - {name: ops, threshold: 2, members: [bob, carol]}\n",
    ],
)
def test_one_approver_alone_is_refused_with_a_hint(body: str) -> None:
    err = refused(body)
    assert err.message.endswith("a single approver could unseal alone (two-person rule)")
    assert err.message.startswith("spec.yaml:12:") or err.message.startswith("spec.yaml:13:")
    assert err.hint == (
        "raise the threshold, or set allow_single_approver: true with a justification"
    )


def test_fewest_two_is_accepted_without_opt_in() -> None:
    p = policy(
        "  groups:\n    - {name: sre, threshold: 1, members: [alice]}\n"
        "    - {name: ops, threshold: 1, members: [bob, carol]}\n  group_threshold: 2\n"
    )
    assert p.allow_single_approver is False


def test_single_approver_needs_opt_in_and_justification() -> None:
    p = policy("  threshold: 1\n  allow_single_approver: true\n  justification: lab host\n")
    assert (p.allow_single_approver, p.justification) == (True, "lab host")
    err = refused("  threshold: 1\n  allow_single_approver: true\n")
    assert err.message == "spec.yaml:13:26: allow_single_approver needs a justification"
    # opting in is refused without a reason even where the rule holds anyway
    err = refused("  threshold: 2\n  allow_single_approver: true\n")
    assert err.message == "spec.yaml:13:26: allow_single_approver needs a justification"
    p = policy("  threshold: 2\n  allow_single_approver: false\n")
    assert p.allow_single_approver is False


def test_max_ttl_cap_is_24h() -> None:
    assert policy("  threshold: 2\n", "  max_ttl: 24h\n  rotate_every: 1d\n").max_ttl == 86400
    err = refused("  threshold: 2\n", "  max_ttl: 86401s\n  rotate_every: 1d\n")
    assert err.message == "spec.yaml:13:12: max_ttl must be at most 24h"


def test_missing_required_keys() -> None:
    err = refused("  threshold: 2\n", "  rotate_every: 1d\n")
    assert err.message == "spec.yaml:12:3: policy is missing required key 'max_ttl'"


def test_approver_to_dict() -> None:
    root = loads(approvers_yaml(("alice",)), "spec.yaml")
    (a,) = parse_approvers(root.get("approvers"))
    assert a == Approver("alice", ALICE[0], ALICE[1])
    assert a.to_dict() == {"name": "alice", "recipient": ALICE[0], "signing_key": ALICE[1]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("approvers: []\n", "spec.yaml:1:12: approvers must not be empty"),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n    signing_key: {ALICE[1]}\n"
            f"  - name: alice\n    recipient: {BOB[0]}\n    signing_key: {BOB[1]}\n",
            "spec.yaml:5:11: duplicate approver 'alice'",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n    signing_key: {ALICE[1]}\n"
            f"  - name: bob\n    recipient: {ALICE[0]}\n    signing_key: {BOB[1]}\n",
            "spec.yaml:6:16: duplicate approver recipient",
        ),
        (
            "approvers:\n  - name: alice\n    recipient: age1nope\n    signing_key: x\n",
            "spec.yaml:3:16: approver 'alice': ",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n    signing_key: ssh-dss AAAA alice\n",
            "spec.yaml:4:18: approver 'alice': signing_key must be an OpenSSH public key line",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n    signing_key: ssh-ed25519\n",
            "spec.yaml:4:18: approver 'alice': signing_key must be an OpenSSH public key line",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n    signing_key: ssh-ed25519 AAAA!x\n",
            "spec.yaml:4:18: approver 'alice': signing_key is not valid base64",
        ),
        (
            # a stray character that a lenient decoder would skip over
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n"
            f"    signing_key: ssh-ed25519 {ALICE[1].split()[1][:8]}*{ALICE[1].split()[1][8:]}\n",
            "spec.yaml:4:18: approver 'alice': signing_key is not valid base64",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n"
            f"    signing_key: ssh-rsa {ALICE[1].split()[1]}\n",
            "spec.yaml:4:18: approver 'alice': signing_key type does not match its key data",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n",
            "spec.yaml:2:5: an approver is missing required key 'signing_key'",
        ),
    ],
)
def test_approver_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_approvers(loads(text, "spec.yaml").get("approvers"))
    assert err.value.message.startswith(message), err.value.message


def test_signing_key_without_comment_and_with_spaces_is_accepted() -> None:
    key = " ".join(ALICE[1].split()[:2])
    text = (
        f"approvers:\n  - name: alice\n    recipient: ' {ALICE[0]} '\n    signing_key: ' {key} '\n"
    )
    (a,) = parse_approvers(loads(text, "spec.yaml").get("approvers"))
    assert (a.recipient, a.signing_key) == (ALICE[0], key)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  groups: {}\n", "spec.yaml:12:11: groups must be a list, got a mapping"),
        ("  groups: [x]\n", "spec.yaml:12:12: a group must be a mapping, got a string"),
        (
            "  groups:\n    - {name: sre, threshold: 1}\n",
            "spec.yaml:13:7: a group is missing required key 'members'",
        ),
        (
            "  groups:\n    - {name: 7, threshold: 1, members: [alice, bob]}\n",
            "spec.yaml:13:14: group name must be a non-empty string, got an integer",
        ),
        (
            "  groups:\n    - {name: sre, threshold: two, members: [alice, bob]}\n",
            "spec.yaml:13:30: threshold must be an integer, got a string",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 2, members: alice}\n",
            "spec.yaml:13:42: members must be a list, got a string",
        ),
        (
            "  groups:\n    - {name: sre, threshold: 2, members: [alice, 3]}\n",
            "spec.yaml:13:50: each entry of members must be a non-empty string, got an integer",
        ),
        ("  threshold: two\n", "spec.yaml:12:14: threshold must be an integer, got a string"),
        (
            "  groups:\n    - {name: sre, threshold: 2, members: [alice, bob]}\n"
            "  group_threshold: one\n",
            "spec.yaml:14:20: group_threshold must be an integer, got a string",
        ),
        (
            "  threshold: 1\n  allow_single_approver: true\n  justification: 5\n",
            "spec.yaml:14:18: justification must be a non-empty string, got an integer",
        ),
        (
            "  threshold: 2\n  on_activate: /bin/alert\n",
            "spec.yaml:13:16: on_activate must be a list, got a string",
        ),
        (
            "  threshold: 2\n  request_lifetime: soon\n",
            "spec.yaml:13:21: request_lifetime: ",
        ),
        (
            "  threshold: 2\n  thresold: 2\n",
            "spec.yaml:13:3: unknown key 'thresold' in policy (did you mean 'threshold'?)",
        ),
    ],
)
def test_policy_type_errors_name_the_field(body: str, message: str) -> None:
    assert refused(body).message.startswith(message)


def test_duration_errors_name_the_field() -> None:
    assert refused("  threshold: 2\n", "  max_ttl: 4x\n  rotate_every: 90d\n").message.startswith(
        "spec.yaml:13:12: max_ttl: "
    )
    assert refused("  threshold: 2\n", "  max_ttl: 4h\n  rotate_every: never\n").message.startswith(
        "spec.yaml:14:17: rotate_every: "
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("approvers: {}\n", "spec.yaml:1:12: approvers must be a list, got a mapping"),
        ("approvers: [x]\n", "spec.yaml:1:13: an approver must be a mapping, got a string"),
        (
            f"approvers:\n  - name: Alice\n    recipient: {ALICE[0]}\n    signing_key: {ALICE[1]}\n",
            "spec.yaml:2:11: approver name 'Alice' must be lowercase letters, digits and dashes",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: 5\n    signing_key: {ALICE[1]}\n",
            "spec.yaml:3:16: recipient must be a non-empty string, got an integer",
        ),
        (
            f"approvers:\n  - name: alice\n    recipient: {ALICE[0]}\n    signing_key: 5\n",
            "spec.yaml:4:18: signing_key must be a non-empty string, got an integer",
        ),
    ],
)
def test_approver_type_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_approvers(loads(text, "spec.yaml").get("approvers"))
    assert err.value.message.startswith(message), err.value.message
