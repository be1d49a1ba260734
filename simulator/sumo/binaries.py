"""Where Eclipse SUMO is: the PyPI packages ``eclipse-sumo`` (programs and tools) and
``libsumo`` (the simulation in-process), installed with ``pip install 'trajstream[sumo]'``.

Nothing here imports SUMO at module import time, so ``trajstream simulate --help`` and the
built-in engine work without it; the first use raises one clear :class:`SumoMissing`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from trajstream.errors import ConfigError, TrajstreamError

INSTALL_HINT = "pip install 'trajstream[sumo]'"


class SumoMissing(ConfigError):
    """Eclipse SUMO (or libsumo) is not installed."""


class SumoToolFailed(TrajstreamError):
    """A SUMO program (netgenerate, netconvert, randomTrips) exited with an error."""


@cache
def sumo_home() -> Path:
    """The SUMO installation of the ``eclipse-sumo`` package (bin/, data/, tools/)."""
    try:
        import sumo  # the eclipse-sumo package; sets SUMO_HOME for its programs
    except ImportError as exc:
        raise SumoMissing(f"Eclipse SUMO is not installed ({INSTALL_HINT})") from exc
    home = Path(sumo.SUMO_HOME)
    if not (home / "bin").is_dir():
        raise SumoMissing(f"Eclipse SUMO at {home} has no bin/ folder ({INSTALL_HINT})")
    return home


def libsumo() -> ModuleType:
    """The in-process simulation API (same calls as TraCI, no socket)."""
    sumo_home()
    try:
        import libsumo as module
    except ImportError as exc:
        raise SumoMissing(f"libsumo is not installed ({INSTALL_HINT})") from exc
    return module


def require() -> None:
    """Raise :class:`SumoMissing` now unless SUMO and libsumo can be used."""
    libsumo()


def version() -> str:
    """The installed SUMO version, e.g. '1.28.0' (part of what makes a run reproducible)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("eclipse-sumo")
    except PackageNotFoundError as exc:
        raise SumoMissing(f"Eclipse SUMO is not installed ({INSTALL_HINT})") from exc


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["SUMO_HOME"] = str(sumo_home())
    return env


def run_program(name: str, args: list[str], cwd: Path) -> None:
    """Run a SUMO program (``bin/<name>``) or tool script (``tools/<name>.py``); a failure is
    one :class:`SumoToolFailed` line with the program's last error."""
    home = sumo_home()
    if name.endswith(".py"):
        cmd = [sys.executable, str(home / "tools" / name), *args]
    else:
        cmd = [str(home / "bin" / name), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        errors = [x for x in lines if "rror" in x] or lines or ["no output"]
        raise SumoToolFailed(f"{name} failed: {errors[-1].strip()}")
