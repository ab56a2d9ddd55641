import pytest

from api.composio_events import Ignored, MalformedWebhook, TriggerEvent, parse
from tests.conftest import fixture_json


def test_v3_gmail_message_becomes_an_event_for_its_user() -> None:
    parsed = parse(fixture_json("composio", "v3_gmail_new_message.json"))
    assert isinstance(parsed, TriggerEvent)
    assert parsed.user_id == "user-0001"
    assert parsed.type == "gmail.new_message"
    assert parsed.title == "Gmail from Alex Example"
    assert parsed.body == "Quarterly report draft"
    assert parsed.data["messageId"] == "18f3a1b2c3d4e5f6"
    assert parsed.data["connectedAccountId"] == "ca_FakeGmail01"


def test_v2_slack_body_finds_user_and_ids_inside_data() -> None:
    parsed = parse(fixture_json("composio", "v2_slack_receive_message.json"))
    assert isinstance(parsed, TriggerEvent)
    assert parsed.user_id == "user-0002"
    assert parsed.slug == "SLACK_RECEIVE_MESSAGE"
    assert parsed.type == "slack.message"
    assert parsed.body == "test"
    assert parsed.data["connectedAccountId"] == "ca_FakeNano001"


def test_v3_slack_from_signed_request_fixture() -> None:
    import json

    body = json.loads(fixture_json("composio", "v3_slack_signed_request.json")["body"])
    parsed = parse(body)
    assert isinstance(parsed, TriggerEvent)
    assert (parsed.user_id, parsed.body) == ("user-0001", "lunch at noon?")


def test_other_composio_types_are_ignored() -> None:
    parsed = parse(fixture_json("composio", "v3_trigger_disabled.json"))
    assert isinstance(parsed, Ignored)
    assert "composio.trigger.disabled" in parsed.reason


def test_trigger_without_user_is_ignored() -> None:
    payload = fixture_json("composio", "v3_gmail_new_message.json")
    payload["metadata"]["user_id"] = None
    assert isinstance(parse(payload), Ignored)


def test_unknown_slug_gets_a_generic_type() -> None:
    payload = fixture_json("composio", "v3_gmail_new_message.json")
    payload["metadata"]["trigger_slug"] = "GITHUB_COMMIT_EVENT"
    parsed = parse(payload)
    assert isinstance(parsed, TriggerEvent)
    assert parsed.type == "github.commit_event"


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {"type": "composio.trigger.message", "data": {}},
        {"type": "composio.trigger.message", "metadata": {"user_id": "u"}, "data": {}},
        {
            "type": "composio.trigger.message",
            "metadata": {"trigger_slug": "X", "user_id": 7},
            "data": {},
        },
        {"type": "Weird Type!", "data": {}},
        {"data": {}},
        {"type": "slack_receive_message", "data": "nope"},
    ],
)
def test_malformed_bodies_are_refused(payload: object) -> None:
    with pytest.raises(MalformedWebhook):
        parse(payload)
