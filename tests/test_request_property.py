"""Requests and approvals come from other machines: any input parses or fails cleanly."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.approval.request import (
    APPROVAL_ARMOR,
    REQUEST_ARMOR,
    Approval,
    UnsealRequest,
    load_approval,
    load_request,
)
from builder.core.errors import InputError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)

REQUEST_KEYS = [
    "format", "id", "image", "scope", "ttl_seconds", "reason", "requester", "created_at",
    "not_after", "ephemeral_recipient", "group_threshold", "groups", "shares",
]  # fmt: skip
APPROVAL_KEYS = [
    "format", "request_id", "request_digest", "approver", "approved_at", "not_after", "share",
    "signature",
]  # fmt: skip


def _one_line(e: InputError) -> None:
    assert "\n" not in str(e) and str(e)


@settings(max_examples=200, deadline=None)
@given(doc=json_values)
def test_any_json_is_a_request_or_a_clean_error(doc: Any) -> None:
    try:
        UnsealRequest.from_dict(doc)
    except InputError as e:
        _one_line(e)


@settings(max_examples=200, deadline=None)
@given(values=st.fixed_dictionaries({k: json_values for k in REQUEST_KEYS}))
def test_request_shaped_documents_parse_or_fail_cleanly(values: dict[str, Any]) -> None:
    values["format"] = "breakglass-request/1"
    try:
        UnsealRequest.from_dict(values)
    except InputError as e:
        _one_line(e)


@settings(max_examples=200, deadline=None)
@given(values=st.fixed_dictionaries({k: json_values for k in APPROVAL_KEYS}))
def test_approval_shaped_documents_parse_or_fail_cleanly(values: dict[str, Any]) -> None:
    values["format"] = "breakglass-approval/1"
    try:
        Approval.from_dict(values)
    except InputError as e:
        _one_line(e)


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=300))
def test_armored_lines_with_any_payload_fail_cleanly(payload: bytes) -> None:
    text = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    for armor, load in ((REQUEST_ARMOR, load_request), (APPROVAL_ARMOR, load_approval)):
        try:
            load(armor + text)
        except InputError as e:
            _one_line(e)


def test_a_json_round_trip_of_a_valid_shape_is_refused_when_a_field_is_unknown() -> None:
    doc = {k: "x" for k in APPROVAL_KEYS} | {"format": "breakglass-approval/1", "extra": 1}
    try:
        Approval.from_dict(json.loads(json.dumps(doc)))
    except InputError as e:
        assert "extra" in str(e) or "unknown" in str(e)
    else:
        raise AssertionError("an unknown field was accepted")
