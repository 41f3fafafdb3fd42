"""MQTT topic names and filters: the codec's validation and matching, as the SDK uses them.

The rules live once, in :mod:`pushsdk.protocol` (3.1.1 §4.7, 5.0 §4.7 and §4.8.2 shared
subscriptions); this module only turns the codec's ``TypeError`` for a non-``str`` into the
``ValueError`` the SDK's validators expect, so that every bad topic is one kind of error.
"""
from __future__ import annotations

from .protocol import shared_subscription, topic_matches
from .protocol import validate_topic_filter as _validate_filter
from .protocol import validate_topic_name as _validate_name

__all__ = ["shared_subscription", "topic_matches", "validate_topic_filter",
           "validate_topic_name"]


def validate_topic_name(name: object) -> str:
    """``name`` if it is a valid topic name to publish to (no wildcards), else ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"a topic name must be a str, not {type(name).__name__}")
    _validate_name(name)
    return name


def validate_topic_filter(topic_filter: object) -> str:
    """``topic_filter`` if valid (``+`` a whole level, ``#`` only last; ``$share/<name>/``
    shared subscriptions), else ValueError."""
    if not isinstance(topic_filter, str):
        raise ValueError(f"a topic filter must be a str, not {type(topic_filter).__name__}")
    _validate_filter(topic_filter)
    return topic_filter
