import pytest

from api.webhook_verifier import WebhookVerificationError, verify
from tests.conftest import fixture_json

VECTORS = fixture_json("composio", "signature_vectors.json")
SIGNED = fixture_json("composio", "v3_slack_signed_request.json")


def _verify_vector(vector: dict, signature: str, **kwargs) -> None:
    verify(
        VECTORS["secret"],
        webhook_id=vector["webhook_id"],
        timestamp=vector["webhook_timestamp"],
        signature=signature,
        body=vector["body"].encode(),
        now=int(vector["webhook_timestamp"]) + 10,
        **kwargs,
    )


@pytest.mark.parametrize(
    "key_style", ["signature_with_utf8_secret_key", "signature_with_base64_decoded_key"]
)
def test_both_key_styles_verify(key_style: str) -> None:
    for vector in VECTORS["vectors"]:
        _verify_vector(vector, vector[key_style])


def test_whole_signed_request_fixture_verifies() -> None:
    headers = SIGNED["headers"]
    for signature in (
        SIGNED["signature_with_utf8_secret_key"],
        SIGNED["signature_with_base64_decoded_key"],
    ):
        verify(
            SIGNED["secret"],
            webhook_id=headers["webhook-id"],
            timestamp=headers["webhook-timestamp"],
            signature=signature,
            body=SIGNED["body"].encode(),
            now=int(headers["webhook-timestamp"]),
        )


def test_any_of_several_signatures_may_match() -> None:
    vector = VECTORS["vectors"][0]
    good = vector["signature_with_utf8_secret_key"]
    _verify_vector(vector, f"v1,AAAAbogus= {good} v2,whatever")


def test_one_changed_byte_in_the_body_fails() -> None:
    vector = dict(VECTORS["vectors"][0])
    vector["body"] = vector["body"].replace("Hello", "Hellp")
    with pytest.raises(WebhookVerificationError, match="does not match"):
        _verify_vector(vector, vector["signature_with_utf8_secret_key"])


def test_wrong_secret_fails() -> None:
    vector = VECTORS["vectors"][0]
    with pytest.raises(WebhookVerificationError):
        verify(
            "whsec_c29tZW9uZS1lbHNl",
            webhook_id=vector["webhook_id"],
            timestamp=vector["webhook_timestamp"],
            signature=vector["signature_with_utf8_secret_key"],
            body=vector["body"].encode(),
            now=int(vector["webhook_timestamp"]),
        )


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_timestamps_more_than_300_seconds_off_fail(skew: int) -> None:
    vector = VECTORS["vectors"][0]
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify(
            VECTORS["secret"],
            webhook_id=vector["webhook_id"],
            timestamp=vector["webhook_timestamp"],
            signature=vector["signature_with_utf8_secret_key"],
            body=vector["body"].encode(),
            now=int(vector["webhook_timestamp"]) + skew,
        )


@pytest.mark.parametrize(
    "missing",
    [
        {"webhook_id": None},
        {"timestamp": None},
        {"signature": None},
        {"timestamp": "soon"},
    ],
)
def test_missing_or_garbled_headers_fail(missing: dict) -> None:
    vector = VECTORS["vectors"][0]
    arguments = {
        "webhook_id": vector["webhook_id"],
        "timestamp": vector["webhook_timestamp"],
        "signature": vector["signature_with_utf8_secret_key"],
        **missing,
    }
    with pytest.raises(WebhookVerificationError):
        verify(
            VECTORS["secret"], body=vector["body"].encode(), now=1674087231, **arguments
        )
