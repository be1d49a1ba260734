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


def _one_cpu_cgroup(name: str) -> tuple[Path, str] | None:
    """A new cgroup of this host limited to one CPU: its directory and the file a process
    joins it through; None where this process may not make one (not root, no cpu
    controller to delegate)."""
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            d, join = v1 / name, "tasks"
        elif "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
            d, join = v2 / name, "cgroup.procs"
        else:
            return None
        d.mkdir()
    except OSError:
        return None
    try:
        if join == "tasks":
            period = (d / "cpu.cfs_period_us").read_text().strip()
            (d / "cpu.cfs_quota_us").write_text(period)
        else:
            (d / "cpu.max").write_text("100000 100000")
    except OSError:
        d.rmdir()
        return None
    return d, join


def test_a_processor_under_a_one_cpu_quota_assesses_risk_inline(tmp_path: Path) -> None:
    """The real kernel interface: `trajstream process` started in a cgroup limited to one
    CPU counts one usable CPU and keeps risk in the main process; outside it, the affinity
    mask's count."""
    import os
    import subprocess
    import sys
    import uuid

    sys.path.insert(0, str(Path(__file__).parent))
    from test_engine import crossing_traffic

    made = _one_cpu_cgroup(f"trajstream-test-{uuid.uuid4().hex[:8]}")
    if made is None:
        pytest.skip("cannot make a cgroup with a CPU quota here (needs root and a cpu "
                    "controller: cgroup v1, or v2 with cpu in the root's subtree_control)")
    group, join = made
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    cmd = [sys.executable, "-m", "trajstream", "--log-level", "INFO", "process", "--input",
           str(src), "--alerts-out", str(tmp_path / "a.jsonl"), "--predictor", "cv",
           "--metrics-port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    try:
        inside = subprocess.run(["sh", "-c", f'echo $$ > {group / join} && exec "$@"', "sh",
                                 *cmd], capture_output=True, text=True, env=env, timeout=120)
    finally:
        group.rmdir()  # empty again: the run has ended
    outside = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert inside.returncode == 0 and outside.returncode == 0, inside.stderr + outside.stderr
    assert "risk assessed inline (1 usable CPU)" in inside.stderr, inside.stderr
    n = len(os.sched_getaffinity(0))
    mode = "in a child process" if n >= 2 else "inline"
    assert f"risk assessed {mode} ({n} usable CPU{'' if n == 1 else 's'})" in outside.stderr, (
        outside.stderr)
