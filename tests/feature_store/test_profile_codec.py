"""The profile's binary stored form gives back exactly the profile that was encoded, and still
reads the JSON form stores wrote before."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from engine.config import EngineConfig
from engine.fold import fold_in_place
from engine.profile import Profile
from feature_store.profile_codec import (
    SCHEMA_VERSION,
    UnknownProfileVersion,
    decode_profile,
    encode_profile,
)
from tests.engine.test_fold_golden import SPEC, synthetic_histories

GOLDEN = Path(__file__).parents[1] / "engine" / "data" / "golden_profiles.json"


def golden_documents() -> list[str]:
    expected: dict[str, Any] = json.loads(GOLDEN.read_text())
    return [
        *expected["synthetic"]["profiles"].values(),
        *(result[part] for result in expected["mixed"].values() for part in ("final", "replayed")),
    ]


def same_records(left: Any, right: Any) -> None:
    """Field by field, with types: a record decoded must be the record encoded (an int stays
    an int, a Decimal a Decimal, a datetime keeps its offset)."""
    assert type(left) is type(right), (left, right)
    if isinstance(left, BaseModel):
        for name in type(left).model_fields:
            same_records(getattr(left, name), getattr(right, name))
    elif is_dataclass(left):
        for field in fields(left):
            same_records(getattr(left, field.name), getattr(right, field.name))
    elif isinstance(left, dict):
        assert list(left) == list(right)
        for key in left:
            same_records(left[key], right[key])
    elif isinstance(left, list | tuple):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            same_records(a, b)
    else:
        assert left == right
        if hasattr(left, "utcoffset"):
            assert left.utcoffset() == right.utcoffset()


@pytest.mark.parametrize("document", golden_documents())
def test_golden_profiles_round_trip_exactly(document: str) -> None:
    profile = Profile.model_validate_json(document)
    stored = encode_profile(profile)
    decoded = decode_profile(stored)
    same_records(decoded, profile)
    assert decoded.model_dump_json() == document
    assert encode_profile(decoded) == stored


def test_the_synthetic_population_round_trips_exactly() -> None:
    histories = synthetic_histories()
    assert len(histories) == SPEC.customers
    for customer_id, events in histories.items():
        profile, _ = fold_in_place(None, customer_id, events, EngineConfig(), known_new=True)
        decoded = decode_profile(encode_profile(profile))
        same_records(decoded, profile)
        assert decoded.model_dump_json() == profile.model_dump_json()


def test_the_json_form_is_still_read() -> None:
    document = golden_documents()[0]
    assert decode_profile(document.encode()).model_dump_json() == document


def test_the_binary_form_is_smaller_than_json_and_versioned() -> None:
    for document in golden_documents():
        stored = encode_profile(Profile.model_validate_json(document))
        assert len(stored) < len(document.encode())
        assert msgspec.msgpack.decode(stored)[0] == SCHEMA_VERSION


def test_a_newer_version_is_refused() -> None:
    layout = msgspec.msgpack.decode(encode_profile(Profile(customer_id="c1")))
    layout[0] = SCHEMA_VERSION + 1
    with pytest.raises(UnknownProfileVersion):
        decode_profile(msgspec.msgpack.encode(layout))


def test_a_decoded_profile_folds_like_the_original() -> None:
    [(customer_id, events)] = list(synthetic_histories().items())[:1]
    half = len(events) // 2
    config = EngineConfig()
    first, _ = fold_in_place(None, customer_id, events[:half], config, known_new=True)
    via_json, _ = fold_in_place(
        Profile.model_validate_json(first.model_dump_json()), customer_id, events[half:], config
    )
    via_binary, _ = fold_in_place(
        decode_profile(encode_profile(first)), customer_id, events[half:], config
    )
    assert via_binary.model_dump_json() == via_json.model_dump_json()
