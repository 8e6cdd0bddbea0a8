"""Cluster execution on a real Slurm: a one-node cluster on localhost (Debian's slurm-wlm and munge)
runs the tiny pipeline through ``snakemake --profile workflow/profiles/slurm``. Every rule becomes a
Slurm job that asks for what the profile says (memory, wall time, CPUs, a GPU for training: the node
declares one GPU backed by /dev/null, so the request is granted), the cells' metrics come out, and
nothing the test started is left running.

Needs root (the daemons run as root). Under CI=true or DIFFPOSE_TEST_SLURM=1 a missing slurm-wlm or
munge is installed with apt-get and a missing executor plugin with pip (the `slurm` extra of
pyproject.toml); otherwise the test skips when they are absent.

Two things differ from a real cluster on purpose: the cluster's files live in a temporary folder
(``SLURM_CONF``), and slurmd runs in a private mount namespace where that folder is mounted on
/etc/slurm: the plugin's job step clears every ``SLURM_*`` variable, ``SLURM_CONF`` too, before its
inner ``srun``, which must then find the configuration where a compute node keeps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from diffpose.sweep import cells
from diffpose.workflow import rules_from_dvc
from tests.conftest import in_ci
from tests.pipeline_copy import REPO, make_copy, run, tool_env

pytestmark = pytest.mark.slow

PROFILE = REPO / "workflow" / "profiles" / "slurm"
NODE_CPUS = 2
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "unshare")
SEARCH_PATH = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin"


def _may_install() -> bool:
    return in_ci() or os.environ.get("DIFFPOSE_TEST_SLURM", "") == "1"


def _binaries() -> dict[str, str]:
    """Full paths of the daemons and client commands; installs or skips when some are missing."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root")
    missing = [name for name in (*DAEMONS, *CLIENTS) if not shutil.which(name, path=SEARCH_PATH)]
    if missing and _may_install() and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            assert proc.returncode == 0, (
                f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        missing = [name for name in (*DAEMONS, *CLIENTS) if not shutil.which(name, path=SEARCH_PATH)]
    if missing:
        reason = (f"Slurm not installed ({', '.join(missing)} not found): apt-get install slurm-wlm munge, "
                  f"or set DIFFPOSE_TEST_SLURM=1 to let this test install them")
        if _may_install():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return {name: shutil.which(name, path=SEARCH_PATH) for name in (*DAEMONS, *CLIENTS)}


def _plugin_installed() -> bool:
    modules = "snakemake_executor_plugin_slurm, snakemake_executor_plugin_slurm_jobstep"
    probe = [sys.executable, "-c", f"import {modules}"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _require_plugin() -> None:
    """The executor plugin as pyproject's `slurm` extra pins it, installed into this venv if missing."""
    if _plugin_installed():
        return
    if not _may_install():
        pytest.skip("snakemake-executor-plugin-slurm not installed: pip install -e '.[slurm]' "
                    "(or DIFFPOSE_TEST_SLURM=1 installs it)")
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["slurm"]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *extra],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and _plugin_installed(), f"pip install {extra} failed:\n{proc.stderr[-3000:]}"


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _real_memory_mb() -> int:
    kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
              if line.startswith("MemTotal:"))
    return kb // 1024


def _write_config(folder: Path) -> Path:
    """slurm.conf and gres.conf of a one-node cluster on localhost, every path under ``folder``."""
    etc = folder / "etc"
    for sub in ("etc", "state", "spool", "log", "munge"):
        (folder / sub).mkdir(mode=0o755)
    (folder / "key").mkdir(mode=0o700)  # munged wants its key private, its socket reachable by all
    (folder / "key" / "munge.key").write_bytes(os.urandom(1024))
    (folder / "key" / "munge.key").chmod(0o600)
    node = socket.gethostname().split(".")[0]
    ctld_port, node_port = _free_ports(2)
    conf = f"""\
ClusterName=diffpose-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
# finished jobs stay visible to squeue/scontrol this long (the status command here is squeue)
MinJobAge=3600
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={_real_memory_mb()} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    (etc / "slurm.conf").write_text(conf)
    # a GPU needs a device file; nothing opens it (no cgroups, the pipeline trains on CPU)
    (etc / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
    return etc / "slurm.conf"


@dataclass
class LocalSlurm:
    folder: Path
    env: dict[str, str]  # the environment for client commands: SLURM_CONF set

    def client(self, *cmd: str) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True, timeout=60)
        return proc.stdout

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still holds (MinJobAge), as the key=value pairs of scontrol."""
        out = self.client("scontrol", "show", "job", "--oneliner")
        return [dict(re.findall(r"(\S+?)=(\S*)", line))
                for line in out.splitlines() if line.startswith("JobId=")]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.folder / "log").glob("*")))


def _stop(procs: list[subprocess.Popen], cluster: LocalSlurm) -> None:
    """Cancel what is still queued (a job outlives its slurmd), then stop the daemons, newest first."""
    with contextlib.suppress(Exception):
        ids = cluster.client("squeue", "--noheader", "--format=%i").split()
        if ids:
            cluster.client("scancel", *ids)
            deadline = time.monotonic() + 60
            active = ("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING", "--format=%i")
            while cluster.client(*active).split():
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def local_slurm(binaries: dict[str, str]) -> Iterator[LocalSlurm]:
    """munged, slurmctld and slurmd for a one-node cluster; stopped (and their folder removed) on exit."""
    # not pytest's tmp_path: munged refuses a socket below a folder others cannot enter (0700)
    folder = Path(tempfile.mkdtemp(prefix="diffpose-slurm-"))
    folder.chmod(0o755)
    conf = _write_config(folder)
    cluster = LocalSlurm(folder, {**os.environ, "SLURM_CONF": str(conf)})
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str]) -> None:
        with open(folder / "log" / f"{name}.out", "wb") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cluster.env,
                                          stdin=subprocess.DEVNULL, start_new_session=True))

    try:
        start("munged", [binaries["munged"], "--foreground", f"--key-file={folder}/key/munge.key",
                         f"--socket={folder}/munge/munge.socket", f"--pid-file={folder}/munge/munged.pid",
                         f"--log-file={folder}/log/munged.log", f"--seed-file={folder}/key/munged.seed"])
        deadline = time.monotonic() + 30
        while not (folder / "munge" / "munge.socket").exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, (
                f"munged did not start:\n{cluster.logs()}")
            time.sleep(0.2)
        start("slurmctld", [binaries["slurmctld"], "-D", "-f", str(conf)])
        # slurmd (and every job it starts) sees the configuration at /etc/slurm, as on a compute node
        start("slurmd", [binaries["unshare"], "--mount", "--propagation", "private", "--", "sh", "-c",
                         'mount --bind "$1" /etc/slurm && shift && exec "$@"', "sh", str(conf.parent),
                         binaries["slurmd"], "-D", "-f", str(conf)])
        deadline = time.monotonic() + 90
        while True:
            state = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%t"], env=cluster.env,
                                   capture_output=True, text=True).stdout.strip()
            if state == "idle":
                break
            dead = [p.args[0] for p in procs if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, (
                f"the node is not idle (sinfo: {state!r}; exited: {dead}):\n{cluster.logs()}")
            time.sleep(0.5)
        yield cluster
    finally:
        _stop(procs, cluster)
        shutil.rmtree(folder, ignore_errors=True)


def _pids(*pattern: str) -> set[int]:
    out = subprocess.run(["pgrep", *pattern], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def _memory_mb(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([MGT])", value).groups()
    return int(number) * {"M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def _minutes(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    hours, minutes, seconds = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def test_the_tiny_pipeline_runs_as_slurm_jobs_with_the_profiles_resources(tmp_path: Path) -> None:
    binaries = _binaries()
    _require_plugin()
    root = make_copy(tmp_path / "repo")
    env = tool_env(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stepds_before = _pids("-x", "slurmstepd")
    with local_slurm(binaries) as cluster:
        env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
        try:
            run(["snakemake", "--executor", "slurm", "--jobs", "2", "--profile", str(PROFILE),
                 "--slurm-status-command", "squeue",  # no accounting: sacct never reports a job
                 "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "5",
                 "--slurm-keep-successful-logs", "--retries", "0"], root, env, timeout=1800)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{cluster.logs()}") from None
        jobs = cluster.jobs()
        folder = cluster.folder

    # nothing the test started is left: daemons (their arguments name the cluster folder), job
    # processes (they run in the copy) and job step daemons
    assert not _pids("-f", str(folder)), "a Slurm or munge daemon of the test is still running"
    assert not _pids("-f", str(root)), "a process of the pipeline's jobs is still running"
    assert _pids("-x", "slurmstepd") <= stepds_before, "a slurmstepd of the test is still running"

    params = yaml.safe_load((root / "params.yaml").read_text())
    for cell in cells(params):
        metrics = root / cell.metrics
        assert metrics.is_file(), f"{cell.stage}: no {cell.metrics}"
        assert 0 <= json.loads(metrics.read_text())["Total"] <= 100
    assert (root / "results/infer/diffpose/seed0/metrics.json").is_file()

    # every rule ran as one Slurm job (the plugin puts the rule name in the job's comment) that
    # completed, with its log, and asked for what the profile gives that rule
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults, per_rule, cores = profile["default-resources"], profile["set-resources"], profile["cores"]
    by_rule = {job["Comment"].removeprefix("rule_"): job
               for job in jobs if job.get("Comment", "").startswith("rule_")}
    specs = rules_from_dvc(root)
    assert sorted(by_rule) == sorted(spec.name for spec in specs), "rules and Slurm jobs differ"
    for spec in specs:
        # what Snakemake gives the rule: defaults < the stage's meta.resources < set-resources
        job, want = by_rule[spec.name], {**defaults, **dict(spec.resources), **per_rule.get(spec.name, {})}
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), (spec.name, job)
        assert (root / ".snakemake/slurm_logs" / f"rule_{spec.name}" / f"{job['JobId']}.log").is_file()
        assert _memory_mb(job["MinMemoryNode"]) == want["mem_mb"], spec.name
        assert _minutes(job["TimeLimit"]) == want["runtime"], spec.name
        assert int(job["NumCPUs"]) == min(spec.cores or cores, cores), spec.name
        gpus = re.findall(r"gpu:(\d+)", job.get("TresPerJob", "") + job.get("TresPerNode", ""))
        assert [int(g) for g in gpus] == ([want["gpu"]] if want.get("gpu") else []), spec.name
    assert any(want.get("gpu") for want in per_rule.values()), "the profile asks for no GPU at all"
