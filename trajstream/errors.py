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


class Fenced(KafkaUnavailable):
    """Another process took this one's place in Kafka (the same --instance-id in the group,
    or the same transactional id): retrying cannot help, and a restart under the same name
    would only fence the other one in turn. Ends the run (exit 1)."""

    retriable = False
