"""The project's exceptions: one base; bad input is not an exception but a counted
rejection with a reason (stream.codec.Rejection)."""

from __future__ import annotations


class TrajstreamError(Exception):
    """Base of every error trajstream raises on purpose."""

    retriable: bool = False


class ConfigError(TrajstreamError):
    """A setting is unknown, out of range or contradicts another; raised at start-up."""


class KafkaUnavailable(TrajstreamError):
    """The broker cannot be reached (yet); callers may retry."""

    retriable = True
