"""VERP return paths: round trip, the 64-octet local part, and refusal of anything forged,
altered or made under another key."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2a_gateway.outbound.return_path import (
    LOCAL_PART_PREFIX,
    MAX_LOCAL_PART_OCTETS,
    parse_return_path,
    return_path_for,
    return_path_key,
)

pytestmark = pytest.mark.backend_independent

KEY = return_path_key("a-gateway-server-key-of-forty-characters")
OTHER_KEY = return_path_key("another-gateway-server-key-of-forty-chars")
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"

message_ids = st.binary(min_size=12, max_size=12).map(lambda raw: "msg_" + raw.hex())
recipients = st.emails() | st.text(min_size=1, max_size=254)
domains = st.sampled_from(["agents.example.com", "mail.example.org", "e2a.example"])


def local_part(address: str) -> str:
    return address.rpartition("@")[0]


@given(message_ids, recipients, domains)
def test_round_trip_with_recipient(message_id: str, recipient: str, domain: str) -> None:
    address = return_path_for(message_id, recipient, KEY, domain)
    assert address.endswith("@" + domain)
    parsed = parse_return_path(address, KEY)
    assert parsed is not None
    assert parsed.message_id == message_id
    assert parsed.recipient_among(["someone.else@example.net", recipient]) == recipient


@given(message_ids, domains)
def test_round_trip_for_the_whole_message(message_id: str, domain: str) -> None:
    parsed = parse_return_path(return_path_for(message_id, None, KEY, domain), KEY)
    assert parsed is not None
    assert (parsed.message_id, parsed.recipient_tag) == (message_id, None)
    assert parsed.recipient_among(["a@example.com"]) is None


@given(message_ids, st.none() | recipients)
def test_local_part_fits_in_64_octets_of_safe_characters(
    message_id: str, recipient: str | None
) -> None:
    part = local_part(return_path_for(message_id, recipient, KEY, "agents.example.com"))
    assert len(part.encode("ascii")) <= MAX_LOCAL_PART_OCTETS
    assert part.startswith(LOCAL_PART_PREFIX)
    assert set(part[len(LOCAL_PART_PREFIX) :]) <= set(BASE32)


@given(message_ids, st.none() | recipients, st.data())
def test_any_altered_character_is_refused(
    message_id: str, recipient: str | None, data: st.DataObject
) -> None:
    address = return_path_for(message_id, recipient, KEY, "agents.example.com")
    token = local_part(address)[len(LOCAL_PART_PREFIX) :]
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from(BASE32).filter(lambda c: c != token[index]))
    forged = token[:index] + replacement + token[index + 1 :]
    assert parse_return_path(f"{LOCAL_PART_PREFIX}{forged}@agents.example.com", KEY) is None


@given(message_ids, st.none() | recipients)
def test_made_under_another_key_is_refused(message_id: str, recipient: str | None) -> None:
    address = return_path_for(message_id, recipient, OTHER_KEY, "agents.example.com")
    assert parse_return_path(address, KEY) is None


@given(st.text(max_size=80))
def test_arbitrary_local_parts_are_refused(token: str) -> None:
    assert parse_return_path(f"{LOCAL_PART_PREFIX}{token}@agents.example.com", KEY) is None


def test_truncated_or_extended_token_is_refused() -> None:
    address = return_path_for("msg_" + "ab" * 12, "a@example.com", KEY, "agents.example.com")
    part, _, domain = address.rpartition("@")
    assert parse_return_path(f"{part[:-1]}@{domain}", KEY) is None
    assert parse_return_path(f"{part}a@{domain}", KEY) is None
    assert parse_return_path(f"{part[:-8]}@{domain}", KEY) is None


def test_case_insensitive_and_angle_brackets_accepted() -> None:
    """Some MTAs change the case of a local part; SMTP paths come in angle brackets."""
    address = return_path_for("msg_" + "cd" * 12, "Bob@Example.com", KEY, "agents.example.com")
    parsed = parse_return_path(f"<{address.upper()}>", KEY)
    assert parsed is not None
    assert parsed.message_id == "msg_" + "cd" * 12
    assert parsed.recipient_among(["bob@example.com"]) == "bob@example.com"


@pytest.mark.parametrize("recipient", [None, "a@example.com"])
def test_non_canonical_spelling_is_refused(recipient: str | None) -> None:
    """The last base32 character carries a spare bit (37 characters hold 185 bits for 184, 45
    hold 225 for 224): setting it spells the same bytes differently, and a token has one
    spelling only."""
    address = return_path_for("msg_" + "ef" * 12, recipient, KEY, "agents.example.com")
    part, _, domain = address.rpartition("@")
    token = part[len(LOCAL_PART_PREFIX) :]
    respelled = token[:-1] + BASE32[BASE32.index(token[-1]) ^ 1]

    def decoded(text: str) -> bytes:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))

    assert decoded(respelled) == decoded(token)
    assert parse_return_path(f"{LOCAL_PART_PREFIX}{respelled}@{domain}", KEY) is None


def test_same_recipient_gets_a_different_tag_on_another_message() -> None:
    first = return_path_for("msg_" + "01" * 12, "a@example.com", KEY, "agents.example.com")
    second = return_path_for("msg_" + "02" * 12, "a@example.com", KEY, "agents.example.com")
    one, two = parse_return_path(first, KEY), parse_return_path(second, KEY)
    assert one is not None and two is not None
    assert one.recipient_tag != two.recipient_tag


@pytest.mark.parametrize(
    "address",
    [
        "support@agents.example.com",
        "bounces@agents.example.com",
        "bounces+@agents.example.com",
        "bounces+abc",
        "",
        "bounces-agv2xk5lvov2xk5lvov2xzrxmoiyckddcovyi@agents.example.com",
    ],
)
def test_other_addresses_are_not_return_paths(address: str) -> None:
    assert parse_return_path(address, KEY) is None


@pytest.mark.parametrize("message_id", ["msg_123", "evt_" + "ab" * 12, "msg_" + "AB" * 12, ""])
def test_only_e2a_message_ids_have_return_paths(message_id: str) -> None:
    with pytest.raises(ValueError, match="not an e2a message id"):
        return_path_for(message_id, None, KEY, "agents.example.com")


def test_key_is_derived_from_the_server_key() -> None:
    assert return_path_key("server-key-one") == return_path_key("server-key-one")
    assert return_path_key("server-key-one") != return_path_key("server-key-two")
    assert len(KEY) == 32
