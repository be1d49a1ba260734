"""CPUs the processor may use: the affinity mask capped by the cgroup's CPU quota (a
container's --cpus, a Kubernetes limit), read from cgroup trees built here as v1, v2 and
hybrid hosts and containers lay them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from trajstream.stream import cpus
from trajstream.stream.config import ProcessorConfig
from trajstream.stream.cpus import cgroup_cpu_limit


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _limit(tmp_path: Path, proc_cgroup: str, files: dict[str, str]) -> float | None:
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    _tree(root, files)
    proc = root.parent / "proc_cgroup"
    proc.write_text(proc_cgroup)
    return cgroup_cpu_limit(proc, root)


def test_v2_container_with_a_cpu_limit(tmp_path: Path) -> None:
    # docker run --cpus 1.5 on a cgroup v2 host: a namespace, the container at the root
    assert _limit(tmp_path, "0::/\n", {"cgroup.controllers": "cpu io memory",
                                        "cpu.max": "150000 100000\n"}) == 1.5


def test_v2_without_a_limit_and_the_tightest_ancestor(tmp_path: Path) -> None:
    assert _limit(tmp_path, "0::/\n", {"cgroup.controllers": "cpu",
                                        "cpu.max": "max 100000\n"}) is None
    # a pod's limit on its parent, none on the container's own cgroup
    assert _limit(tmp_path / "k8s", "0::/kubepods/pod1/ctr\n", {
        "cgroup.controllers": "cpu",
        "kubepods/pod1/cpu.max": "200000 100000\n",
        "kubepods/pod1/ctr/cpu.max": "max 100000\n",
    }) == 2.0


def test_v1_container_sees_its_cgroup_at_the_mount_root(tmp_path: Path) -> None:
    # cgroup v1 without a namespace: the path names the host's cgroup, which the container's
    # mount does not hold; the container's own quota is at the mount's root
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
             "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    assert _limit(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
                  files) == 0.5


def test_v1_unlimited_and_a_hybrid_host(tmp_path: Path) -> None:
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
             "cpu/batch/cpu.cfs_quota_us": "300000\n", "cpu/batch/cpu.cfs_period_us": "100000\n",
             "unified/cgroup.procs": ""}
    assert _limit(tmp_path, "1:cpu:/\n0::/\n", files) is None
    assert _limit(tmp_path / "b", "1:cpu:/batch\n0::/\n", files) == 3.0


def test_unreadable_or_malformed_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path) is None
    assert _limit(tmp_path, "0::/\n", {"cgroup.controllers": "cpu",
                                        "cpu.max": "garbage\n"}) is None
    assert _limit(tmp_path / "b", "no colons here\n0::/\n", {
        "cgroup.controllers": "cpu", "cpu.max": "100000 100000\n"}) == 1.0


@pytest.mark.parametrize(("limit", "expected"), [(None, 8), (0.5, 1), (1.0, 1), (1.5, 2),
                                                 (32.0, 8)])
def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(
        monkeypatch, limit: float | None, expected: int) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: limit)
    assert cpus.usable_cpus() == expected
    # the risk process's default follows: on with 2 CPUs or more
    assert ProcessorConfig(source="memory").risk_in_process == (expected >= 2)
