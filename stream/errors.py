"""The project's exceptions: one base, decode errors apart from processing errors."""

from __future__ import annotations


class TrajstreamError(Exception):
    """Base of every error trajstream raises on purpose."""

    retriable: bool = False


class ConfigError(TrajstreamError):
    """A setting is unknown, out of range or contradicts another; raised at start-up."""


class DecodeError(TrajstreamError):
    """A message could not be turned into a valid position; ``reason`` is a bounded label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class KafkaUnavailable(TrajstreamError):
    """The broker cannot be reached (yet); callers may retry."""

    retriable = True
