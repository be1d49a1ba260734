"""Output files that never destroy input: alias checks and write-then-rename.

An output named like an input (``./in.jsonl`` for ``in.jsonl``, an absolute path, a symlink,
a hard link) would be truncated before it is read, so commands compare *files* (device and
inode), not path strings, and refuse such a combination at start-up. Outputs are written to
a temporary file in the same directory and renamed over the target only when the command
succeeds: a failed or interrupted run leaves an existing file as it was, and a reader never
sees a half-written file. Targets that are not regular files (``-``, ``/dev/full``, a FIFO)
are written in place, since they cannot be renamed over.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from trajstream.errors import ConfigError, TrajstreamError

__all__ = ["OutputError", "OutputFile", "refuse_aliases", "same_file"]

PathLike = str | Path


class OutputError(TrajstreamError):
    """An output could not be written (disk full, permission, device gone)."""


def _identity(path: PathLike) -> tuple[int, int] | str:
    """(device, inode) of an existing file, else the resolved path it would be created at."""
    try:
        st = os.stat(path)  # follows symlinks
    except OSError:
        return os.path.realpath(path)
    return st.st_dev, st.st_ino


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file (or one file-to-be); ``-`` is never a file."""
    if str(a) == "-" or str(b) == "-":
        return False
    return _identity(a) == _identity(b)


def refuse_aliases(inputs: Mapping[str, PathLike | None],
                   outputs: Mapping[str, PathLike | None]) -> None:
    """Raise ConfigError when an output is an input or another output.

    Keys are the option names shown in the message (``--input``, ``--alerts-out``).
    """
    ins = [(k, v) for k, v in inputs.items() if v is not None and str(v) != "-"]
    outs = [(k, v) for k, v in outputs.items() if v is not None and str(v) != "-"]
    for o_name, o_path in outs:
        for i_name, i_path in ins:
            if same_file(o_path, i_path):
                raise ConfigError(f"{o_name} {o_path} is the same file as {i_name} {i_path}: "
                                  "writing it would destroy the input")
    for n, (a_name, a_path) in enumerate(outs):
        for b_name, b_path in outs[n + 1:]:
            if same_file(a_path, b_path):
                raise ConfigError(f"{a_name} {a_path} and {b_name} {b_path} are the same "
                                  "file: give each output its own file")


class OutputFile:
    """A binary output: ``-`` (stdout), a special file written in place, or a regular file
    written to a temporary sibling and renamed over ``path`` by :meth:`commit`.

    :meth:`discard` (after a failure) removes the temporary file and leaves ``path`` as it
    was. Write errors raise :class:`OutputError` with one line naming the file.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = str(path)
        self._tmp: str | None = None
        self._stdout = self.path == "-"
        if self._stdout:
            self.file: IO[bytes] = sys.stdout.buffer
            return
        try:
            special = not stat.S_ISREG(os.stat(self.path).st_mode)
        except FileNotFoundError:
            special = False
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from exc
        try:
            if special:
                self.file = open(self.path, "wb")  # noqa: SIM115 - closed in commit()
            else:
                folder = os.path.dirname(os.path.abspath(self.path))
                fd, self._tmp = tempfile.mkstemp(
                    dir=folder, prefix=f".{os.path.basename(self.path)}.", suffix=".part")
                self.file = os.fdopen(fd, "wb")
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from exc

    def error(self, exc: OSError) -> OutputError:
        """The one-line error for a failed write to this output."""
        return OutputError(f"cannot write {self.path}: {exc.strerror or exc}")

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise self.error(exc) from exc

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            raise self.error(exc) from exc

    def commit(self) -> None:
        """Flush and close; a temporary file replaces ``path`` (keeping its permissions)."""
        if self._stdout:
            self.flush()
            return
        try:
            self.file.close()
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    os.chmod(self._tmp, _new_file_mode(self.path))
                os.replace(self._tmp, self.path)
                self._tmp = None
        except OSError as exc:
            self.discard()
            raise self.error(exc) from exc

    def discard(self) -> None:
        """Close without publishing: an existing ``path`` keeps its content."""
        if self._stdout:
            with contextlib.suppress(OSError):
                self.file.flush()
            return
        with contextlib.suppress(OSError):
            self.file.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


def _new_file_mode(path: str) -> int:
    """The mode ``open(path, "w")`` would give: the existing file's, else 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
