"""MQTT strings, topic names, topic filters and matching (3.1.1 §1.5.3, §4.7; 5.0 §1.5.4,
§4.7, §4.8.2).

The public helpers (:func:`validate_topic_name`, :func:`validate_topic_filter`,
:func:`topic_matches`, :func:`shared_subscription`) are what the SDK and the server use to
check user input and to route messages; the ``*_problem`` functions are the codec's own
checks, returning why a value is invalid (or None) so each caller raises its own error.
"""
from __future__ import annotations

_MAX_UTF8 = 0xFFFF
_SHARE_PREFIX = "$share/"


def string_problem(value: str) -> str | None:
    """Why ``value`` cannot be an MQTT UTF-8 string, or None.

    [MQTT-1.5.4-1] no ill-formed UTF-8 (a lone surrogate has no UTF-8 form);
    [MQTT-1.5.4-2] no U+0000; and at most 65,535 bytes once encoded (§1.5.4).
    """
    if "\x00" in value:
        return "contains U+0000"
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return "is not encodable as UTF-8 (lone surrogate)"
    if size > _MAX_UTF8:
        return f"is {size} bytes of UTF-8, over 65535"
    return None


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` (a str) is not a valid topic name, or None ([MQTT-4.7.3-1..3],
    [MQTT-4.7.1-1]: at least one character, no wildcards)."""
    if not topic:
        return "is empty"
    if "+" in topic:
        return "contains wildcard '+'"
    if "#" in topic:
        return "contains wildcard '#'"
    return string_problem(topic)


def _wildcard_problem(topic_filter: str) -> str | None:
    if "+" not in topic_filter and "#" not in topic_filter:
        return None
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        # [MQTT-4.7.1-2] '#' alone and last; [MQTT-4.7.1-3] '+' alone in its level.
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "uses '#' other than as the whole last level"
        if "+" in level and level != "+":
            return "uses '+' other than as a whole level"
    return None


def topic_filter_problem(topic_filter: str, *, shared: bool = False) -> str | None:
    """Why ``topic_filter`` (a str) is not a valid topic filter, or None.

    With ``shared`` (MQTT 5.0), a filter starting ``$share/`` must be a well-formed shared
    subscription ([MQTT-4.8.2-1], [MQTT-4.8.2-2]); in 3.1.1 it is an ordinary filter.
    """
    if not topic_filter:
        return "is empty"
    problem = string_problem(topic_filter)
    if problem:
        return problem
    if shared and topic_filter.startswith(_SHARE_PREFIX):
        group, slash, inner = topic_filter[len(_SHARE_PREFIX):].partition("/")
        if not group:
            return "is a shared subscription with an empty share name"
        if "+" in group or "#" in group:
            return "is a shared subscription whose share name contains a wildcard"
        if not slash or not inner:
            return "is a shared subscription with no topic filter after the share name"
        return _wildcard_problem(inner)
    return _wildcard_problem(topic_filter)


def validate_topic_name(topic: str) -> None:
    """Raise ValueError (TypeError for a non-str) if ``topic`` is not a valid topic name:
    non-empty, no ``+``/``#``, no U+0000, no lone surrogate, at most 65,535 UTF-8 bytes."""
    if type(topic) is not str:
        raise TypeError(f"topic name must be str, not {type(topic).__name__}")
    problem = topic_name_problem(topic)
    if problem:
        raise ValueError(f"topic name {topic!r} {problem}")


def validate_topic_filter(topic_filter: str, *, shared: bool = True) -> None:
    """Raise ValueError (TypeError for a non-str) if ``topic_filter`` is not a valid filter.

    Wildcards: ``#`` only as the whole last level, ``+`` only as a whole level. With
    ``shared`` (the default, MQTT 5.0's rules) ``$share/<name>/<filter>`` must have a
    non-empty share name without wildcards and a valid filter after it.
    """
    if type(topic_filter) is not str:
        raise TypeError(f"topic filter must be str, not {type(topic_filter).__name__}")
    problem = topic_filter_problem(topic_filter, shared=shared)
    if problem:
        raise ValueError(f"topic filter {topic_filter!r} {problem}")


def shared_subscription(topic_filter: str) -> tuple[str, str] | None:
    """``(share name, topic filter)`` of a shared subscription ``$share/<name>/<filter>``,
    or None if ``topic_filter`` is not one (§4.8.2)."""
    if not topic_filter.startswith(_SHARE_PREFIX):
        return None
    group, slash, inner = topic_filter[len(_SHARE_PREFIX):].partition("/")
    if not group or not slash or not inner:
        return None
    return group, inner


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a message published on ``topic`` matches ``topic_filter`` (§4.7).

    ``+`` matches one whole level (an empty one too), ``#`` the parent level and any number
    of levels below it; a filter starting with a wildcard does not match a topic starting
    with ``$`` ([MQTT-4.7.2-1]); a shared subscription ``$share/<name>/<filter>`` matches what
    ``<filter>`` matches. Both arguments are assumed valid (see the validators).
    """
    shared = shared_subscription(topic_filter)
    if shared is not None:
        topic_filter = shared[1]
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    if topic[:1] == "$" and topic_filter[0] in "+#":
        return False
    topic_levels = topic.split("/")
    count = len(topic_levels)
    filter_levels = topic_filter.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= count or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == count


__all__ = [
    "validate_topic_name",
    "validate_topic_filter",
    "topic_matches",
    "shared_subscription",
]
