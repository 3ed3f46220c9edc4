"""Signature checks against the shared vectors (computed with Sentry's algorithm)."""

from __future__ import annotations

import json

import pytest

from obsv.core.signature import is_valid, sign

from .conftest import SAMPLES

VECTORS = json.loads((SAMPLES / "signature-vectors.json").read_text("utf-8"))


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_every_vector_verifies(vector: dict[str, object]) -> None:
    raw = str(vector["raw_body"]).encode("utf-8")
    headers = vector["headers"]
    assert isinstance(headers, dict)
    assert sign(VECTORS["client_secret"], raw) == vector["expected_signature"]
    assert is_valid(VECTORS["client_secret"], raw, headers["Sentry-Hook-Signature"])


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_reserialised_body_does_not_verify(vector: dict[str, object]) -> None:
    reserialised = json.dumps(json.loads(str(vector["raw_body"]))).encode("utf-8")
    assert reserialised != str(vector["raw_body"]).encode("utf-8")
    assert not is_valid(VECTORS["client_secret"], reserialised,
                        str(vector["expected_signature"]))


def test_documented_wrong_signature_is_the_default_separators_one() -> None:
    vector = VECTORS["vectors"][0]
    body = json.dumps(json.loads(vector["raw_body"])).encode("utf-8")
    wrong = vector["signature_over_python_json_dumps_default_separators_WRONG"]
    assert sign(VECTORS["client_secret"], body) == wrong
    assert not is_valid(VECTORS["client_secret"], vector["raw_body"].encode(), wrong)


def test_raw_utf8_body_verifies() -> None:
    raw = '{"comment":"caf\u00e9 \u2014 \U0001f525"}'.encode()
    assert is_valid("s3cret", raw, sign("s3cret", raw))
    assert not is_valid("s3cret", raw, sign("other", raw))


@pytest.mark.parametrize("signature", [None, "", "zz", "A" * 64])
def test_missing_or_malformed_signature_is_invalid(signature: str | None) -> None:
    assert not is_valid("s3cret", b"{}", signature)


def test_uppercase_hex_is_not_the_documented_form() -> None:
    raw = b"{}"
    assert not is_valid("s3cret", raw, sign("s3cret", raw).upper())
