"""How many CPUs this process may use: its affinity mask and its cgroup's CPU quota.

A container's cpuset narrows the affinity mask, which ``os.sched_getaffinity`` reports. A
CPU limit (``docker run --cpus``, compose's ``cpus:``, a Kubernetes ``limits.cpu``) is a
quota the kernel enforces by throttling, and nothing in the ``os`` module reports it: a
processor limited to one CPU on a 16-core node sees 16. Both count here, the quota rounded
up (1.5 CPUs: 2), as the JVM and Go's runtime count them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on at once: its affinity mask, capped by its CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return n if limit is None else max(1, min(n, math.ceil(limit)))


def cgroup_cpu_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The tightest CPU quota, in CPUs, of this process's cgroup and its ancestors; None
    without one (or off Linux).

    cgroup v2: ``cpu.max`` ("quota period", or "max period" for none). v1: the ``cpu``
    controller's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none). The cgroup's path
    from ``/proc/self/cgroup`` is walked up to the mount's root, since a container sees its
    own cgroup at the root while its path may name the host's (v1 without a cgroup
    namespace)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    read: Callable[[Path], float | None]
    for line in lines:
        fields = line.split(":", 2)  # hierarchy id, controllers, path
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2, the unified hierarchy
            mounts = [root] if (root / "cgroup.controllers").exists() else [root / "unified"]
            read = _v2_quota
        elif "cpu" in controllers.split(","):
            mounts = [root / controllers, root / "cpu"]
            read = _v1_quota
        else:
            continue
        for mount in mounts:
            if mount.is_dir():
                limits += _along(mount, path, read)
                break
    return min(limits) if limits else None


def _along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas ``read`` finds in ``path``'s directories under ``mount``, up to the root."""
    found = []
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), -1, -1):
        quota = read(mount.joinpath(*parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(d: Path) -> float | None:
    try:
        quota, period = (d / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(d: Path) -> float | None:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
