"""What ``on_state_change`` receives: the states' reasons, and the callback's type."""
from __future__ import annotations

from typing import Protocol

from .config import ClientState
from .errors import PushError

__all__ = ["Reason", "StateChangeCallback"]


class Reason(str):
    """Why a state changed: the one-line text, plus ``code`` (a stable name: a
    :attr:`PushError.reason_code <pushsdk.errors.PushError.reason_code>` for failures, or
    ``"connecting"``, ``"connected"``, ``"closed"``, ...) and the ``error`` if there was one."""

    code: str
    error: PushError | None

    def __new__(cls, text: str, code: str, error: PushError | None = None) -> Reason:
        self = super().__new__(cls, text)
        self.code = code
        self.error = error
        return self


class StateChangeCallback(Protocol):
    """``on_state_change(old, new, reason)``: a plain function (it runs inside the
    connection machinery)."""

    def __call__(self, old: ClientState, new: ClientState, reason: Reason, /) -> object: ...
