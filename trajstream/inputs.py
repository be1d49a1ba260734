"""Opening positions files: plain or gzip-compressed JSONL, told apart by their first bytes.

The recorded data sets ship as ``.jsonl.gz``; every command that reads a positions file
(process, replay, evaluate, model evaluate) or an NGSIM file (data import) takes them as
they are, whatever their name.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from trajstream.errors import TrajstreamError

__all__ = ["READ_ERRORS", "is_gzip", "lines", "open_input"]

_GZIP_MAGIC = b"\x1f\x8b"

# What reading a damaged file raises: OSError (gzip.BadGzipFile is one), EOFError (a
# truncated gzip stream), zlib.error (corrupt compressed data).
READ_ERRORS = (OSError, EOFError, zlib.error)


def is_gzip(path: str | Path) -> bool:
    """Whether the file at ``path`` starts like a gzip stream."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_input(path: str | Path) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed when it is gzip. Only for files that
    can be read twice (the first two bytes are read once to tell): not pipes."""
    if is_gzip(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def lines(f: IO[bytes], path: str | Path) -> Iterator[bytes]:
    """The lines of an opened input; a damaged file ends them with one error naming it."""
    try:
        yield from f
    except READ_ERRORS as exc:
        raise TrajstreamError(f"cannot read {path}: {exc}") from exc
