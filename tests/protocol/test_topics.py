"""The public topic helpers: validate_topic_name, validate_topic_filter, topic_matches and
shared_subscription (MQTT 5.0 §4.7, §4.8.2; the same rules as 3.1.1 §4.7)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsdk.protocol import (
    shared_subscription,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)


@pytest.mark.parametrize("topic", ["a", "/", "a/b", "sport/tennis/player1", "$SYS/x", " ",
                                   "caf\u00e9", "\ufeffbom", "a//b", "x" * 65535])
def test_valid_topic_names(topic):
    validate_topic_name(topic)


@pytest.mark.parametrize(("topic", "message"), [
    ("", "is empty"),                                  # [MQTT-4.7.3-1]
    ("a/+", "contains wildcard '+'"),                  # [MQTT-4.7.0-1] / [MQTT-3.3.2-2]
    ("#", "contains wildcard '#'"),
    ("a\x00b", "contains U+0000"),                     # [MQTT-4.7.3-2]
    ("x" * 65536, "is 65536 bytes of UTF-8, over 65535"),  # [MQTT-4.7.3-3]
    ("\u00e9" * 32768, "is 65536 bytes of UTF-8"),
    ("\ud800", "lone surrogate"),                      # [MQTT-1.5.4-1]
])
def test_invalid_topic_names(topic, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_topic_name(topic)


def test_validators_refuse_non_str():
    with pytest.raises(TypeError, match="topic name must be str, not bytes"):
        validate_topic_name(b"a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topic filter must be str, not NoneType"):
        validate_topic_filter(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("topic_filter", [
    "#", "+", "+/+", "/+", "a/#", "a/+/b", "sport/tennis/#", "$SYS/#", "a//b",
    "$share/group/a/#", "$share/g/+", "$share/g/$SYS/x",
])
def test_valid_topic_filters(topic_filter):
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(("topic_filter", "message"), [
    ("", "is empty"),
    ("a/#/b", "'#' other than as the whole last level"),   # [MQTT-4.7.1-1]
    ("a#", "'#' other than as the whole last level"),
    ("sport/tennis#", "'#' other than"),
    ("a+", "'+' other than as a whole level"),              # [MQTT-4.7.1-2]
    ("a/b+/c", "'+' other than"),
    ("a\x00", "contains U+0000"),
    ("$share//a", "empty share name"),                      # [MQTT-4.8.2-1]
    ("$share/g", "no topic filter after the share name"),   # [MQTT-4.8.2-2]
    ("$share/g/", "no topic filter after the share name"),
    ("$share/+/a", "share name contains a wildcard"),
    ("$share/#", "share name contains a wildcard"),
    ("$share/g/a/#/b", "'#' other than"),
])
def test_invalid_topic_filters(topic_filter, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_topic_filter(topic_filter)


def test_shared_rules_can_be_left_out_for_3_1_1():
    validate_topic_filter("$share/g", shared=False)
    validate_topic_filter("$share//a", shared=False)


# (filter, topic, matches) — the examples of §4.7.1.2, §4.7.1.3 and §4.7.2.
MATCHES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "sport", True),
    ("+/tennis/#", "sport/tennis/x", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),          # [MQTT-4.7.3-4] no normalisation
    ("a/b", "a/b/", False),
    ("a/+/c", "a//c", True),
    ("$SYS/#", "$SYS/broker/load", True),
    ("#", "$SYS/broker/load", False),   # [MQTT-4.7.2-1]
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$share/g/sport/#", "sport/tennis", True),
    ("$share/g/#", "$SYS/x", False),
    ("$share/g/a", "a", True),
    ("$share/g/a", "$share/g/a", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_topic_matches(topic_filter, topic, expected):
    assert topic_matches(topic_filter, topic) is expected


def test_shared_subscription():
    assert shared_subscription("$share/group/a/b") == ("group", "a/b")
    assert shared_subscription("$share/g/#") == ("g", "#")
    assert shared_subscription("a/b") is None
    assert shared_subscription("$share/g") is None
    assert shared_subscription("$SHARE/g/a") is None


level = st.text(st.sampled_from("ab$/+#"), max_size=3)


def _reference_match(topic_filter: str, topic: str) -> bool:
    """Matching written the other way round (a regular expression), as an oracle."""
    import re

    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    pattern = ""
    levels = topic_filter.split("/")
    for i, part in enumerate(levels):
        sep = "/" if i else ""
        if part == "#":
            pattern += "(/.*)?" if i else ".*"
        elif part == "+":
            pattern += sep + "[^/]*"
        else:
            pattern += sep + re.escape(part)
    return re.fullmatch(pattern, topic) is not None


@settings(max_examples=500, deadline=None)
@given(filter_levels=st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1,
                              max_size=4),
       hash_tail=st.booleans(),
       topic_levels=st.lists(st.sampled_from(["a", "b", "", "$x"]), min_size=1, max_size=5))
def test_topic_matches_agrees_with_a_regular_expression(filter_levels, hash_tail, topic_levels):
    topic_filter = "/".join(filter_levels + (["#"] if hash_tail else []))
    topic = "/".join(topic_levels)
    if not topic_filter or not topic:
        return
    assert topic_matches(topic_filter, topic) is _reference_match(topic_filter, topic)
