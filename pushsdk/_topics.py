"""MQTT topic names and filters: validation and matching (MQTT 3.1.1 §4.7).

Private and self-contained on purpose: the codec (``pushsdk.protocol``) gains
``topic_matches``, ``validate_topic_filter`` and ``validate_topic_name``; once that lands this
module becomes three re-exports of it. Errors are ``ValueError`` with a one-line reason.
"""
from __future__ import annotations

__all__ = ["topic_matches", "validate_topic_filter", "validate_topic_name"]

#: Largest UTF-8 encoded length of a topic (a 16-bit length prefix on the wire).
MAX_TOPIC_BYTES = 65535


def _check_text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a topic {what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"a topic {what} must not be empty")
    if "\x00" in value:
        raise ValueError(f"topic {what} {value!r} contains U+0000")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"topic {what} {value!r} is not valid Unicode") from None
    if size > MAX_TOPIC_BYTES:
        raise ValueError(f"topic {what} is {size} bytes of UTF-8; at most {MAX_TOPIC_BYTES}")
    return value


def validate_topic_name(name: object) -> str:
    """``name`` if it is a valid topic name to publish to (no wildcards), else ValueError."""
    text = _check_text("name", name)
    if "+" in text or "#" in text:
        raise ValueError(f"topic name {text!r} contains a wildcard (+ or #); "
                         "wildcards belong in subscription filters")
    return text


def validate_topic_filter(topic_filter: object) -> str:
    """``topic_filter`` if valid: ``+`` fills a whole level, ``#`` only as the last level."""
    text = _check_text("filter", topic_filter)
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"topic filter {text!r}: '#' must be a whole level and the last")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {text!r}: '+' must be a whole level")
    return text


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` (a name) matches ``topic_filter``. Topics starting with ``$`` are
    not matched by a filter starting with a wildcard (§4.7.2)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    names = topic.split("/")
    filters = topic_filter.split("/")
    for index, level in enumerate(filters):
        if level == "#":
            return True  # also matches the parent level itself ("a/#" matches "a")
        if index >= len(names):
            return False
        if level != "+" and level != names[index]:
            return False
    return len(names) == len(filters)
