"""`stm reproduce --launcher local | slurm` (stm_lib/launch.py): every run of a table as one submitit
job keyed by its cache key; a preempted job requeues and resumes from its checkpoint; the page is
the default path's. Slurm is played by stand-in `sbatch` / `srun` / `sacct` / `scontrol` scripts
that run the job array's tasks on this machine; tools/slurm/train_multinode.sbatch runs the same
way, its torchrun on one node with gloo on the CPU."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from stm_lib import launch
from stm_lib.book import runner
from stm_lib.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _jobs_import_this_checkout(monkeypatch):
    """Jobs are new Python processes: they import this checkout's stm_lib, one thread each."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids = _children(pid)
    return kids + [d for k in kids for d in _descendants(k)]


def _preempt(job) -> None:
    """What Slurm does to a preempted job (or at its time limit, `--signal=USR2@120`): USR2 to the
    job's task. (submitit 1.5.4's `LocalJob._interrupt` sends it to the local controller process
    instead, which has no handler for it: the controller dies and its task runs on orphaned.)"""
    tasks = _children(job._process.pid)
    assert tasks, "the job has no task process"
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)


# ---- the flags -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["--launcher", "slurm"], "--launcher slurm: sbatch, srun, sacct, scontrol not found on PATH"),
    (["--partition", "gpu"], "--partition: only with --launcher slurm"),
    (["--launcher", "local", "--account", "a"], "--account: only with --launcher slurm"),
    (["--gpus-per-run", "2"], "are for --launcher local or slurm"),
    (["--launcher", "local", "--jobs", "0"], "--jobs must be an integer >= 1, got 0"),
    (["--launcher", "local", "--gpus-per-run", "-1"], "--gpus-per-run must be an integer >= 0"),
    (["--launcher", "local", "--time-limit", "1:xx"], "--time-limit: expected minutes or [D-]HH:MM[:SS]"),
    (["--launcher", "slurm", "--slurm-option", "qos"], "--slurm-option: expected KEY=VALUE"),
    (["--launcher", "cloud"], "invalid choice: 'cloud'"),
])
def test_bad_launcher_flags_are_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, argv, says):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))   # no Slurm here
    try:
        rc = main(["reproduce", "--table", "5", "--profile", "smoke", "--out-root", str(tmp_path / "runs"), *argv])
    except SystemExit as e:   # argparse: usage, then one error line
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and says in err[-1] and "Traceback" not in "\n".join(err), err
    assert not (tmp_path / "runs").exists()


def test_time_limit_and_slurm_options():
    assert [launch.time_minutes(s) for s in ("90", "04:30:00", "1-12:00:00", "0:30", "00:10:30")] == \
        [90, 270, 2160, 30, 11]
    assert launch.slurm_option("qos=high") == ("qos", "high")
    assert launch.slurm_option("--mem_per_gpu=40G") == ("mem-per-gpu", "40G")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        launch.slurm_option("a b=1")


def test_a_failed_job_is_one_line():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    trace = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad input\n"
    failed = FailedJobError(f"Job (task=0) failed during processing with trace:\n----------------------\n{trace}"
                            "----------------------\nYou can check full logs with 'job.stderr(0)'")
    assert launch._job_error(failed) == "ValueError: bad input"
    killed = UncompletedJobError("Job 12_3 (task: 0) with path /x/12_3_0_result.pkl\nhas not produced any output "
                                 "(state: OUT_OF_MEMORY)\nError stream produced:\n" + "-" * 40 + "\noom-kill")
    assert launch._job_error(killed) == "the job ended without a result (state OUT_OF_MEMORY; its log says why)"


# ---- a stand-in Slurm --------------------------------------------------------------------------

SBATCH = r'''#!/bin/bash
# stand-in sbatch: records the script, then runs the job (each array task) here in the background
script="$1"; cp "$script" "$FAKE_SLURM/script-$(ls "$FAKE_SLURM" | grep -c '^script-')"
if grep -q -- '--partition=nope' "$script"; then
  echo "sbatch: error: invalid partition specified: nope" >&2; echo "sbatch: error: Batch job submission failed" >&2; exit 1
fi
id=$(( $(cat "$FAKE_SLURM/next" 2>/dev/null || echo 4200) + 1 )); echo $id > "$FAKE_SLURM/next"
range=$(sed -n 's/^#SBATCH --array=\([0-9]*\)-\([0-9]*\).*/\1 \2/p' "$script")
task() {  # one (array) task; again while `scontrol requeue` asked for it
  local jid=$1; shift
  while true; do
    rm -f "$FAKE_SLURM/requeue-$jid"; echo "$jid|RUNNING|localhost" >> "$FAKE_SLURM/states"
    env "$@" SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 \
        SLURM_JOB_NODELIST=localhost bash "$script"; rc=$?
    [ -f "$FAKE_SLURM/requeue-$jid" ] || break
    echo "$jid|REQUEUED|localhost" >> "$FAKE_SLURM/states"
  done
  if [ $rc = 0 ]; then s=COMPLETED; else s=FAILED; fi
  echo "$jid|$s|localhost" >> "$FAKE_SLURM/states"
}
if [ -n "$range" ]; then
  set -- $range
  for a in $(seq $1 $2); do
    task "${id}_$a" SLURM_JOB_ID=$((id + a + 1)) SLURM_ARRAY_JOB_ID=$id SLURM_ARRAY_TASK_ID=$a \
      > /dev/null 2>&1 < /dev/null &
  done
else
  task "$id" SLURM_JOB_ID=$id > /dev/null 2>&1 < /dev/null &
fi
echo "Submitted batch job $id"
'''
SRUN = r'''#!/bin/bash
# stand-in srun: one task, its command run here; --output/--error patterns expanded as srun does
out=""; err=""
while [[ "${1:-}" == -* ]]; do
  case "$1" in --output) out=$2; shift 2;; --error) err=$2; shift 2;; *) shift;; esac
done
x() { local s=$1; s=${s//%A/${SLURM_ARRAY_JOB_ID:-}}; s=${s//%a/${SLURM_ARRAY_TASK_ID:-}}; s=${s//%j/$SLURM_JOB_ID}; echo "${s//%t/0}"; }
if [ -n "$out" ]; then exec >> "$(x "$out")"; fi
if [ -n "$err" ]; then exec 2>> "$(x "$err")"; elif [ -n "$out" ]; then exec 2>&1; fi
exec "$@"
'''
SACCT = r'''#!/bin/bash
echo "JobID|State|NodeList"
tac "$FAKE_SLURM/states" 2>/dev/null | awk -F'|' '!seen[$1]++'
'''
SCONTROL = r'''#!/bin/bash
case "$1 $2" in
  "requeue "*) touch "$FAKE_SLURM/requeue-$2"; echo "$*" >> "$FAKE_SLURM/scontrol.log";;
  "show hostnames") echo "${3:-localhost}" | tr ',' '\n';;
  *) echo "scontrol stand-in: $*" >&2; exit 1;;
esac
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A bin folder with sbatch, srun, sacct and scontrol stand-ins first on PATH; their records in
    the returned folder."""
    state, bin_ = tmp_path / "slurm", tmp_path / "slurm-bin"
    state.mkdir()
    bin_.mkdir()
    for name, text in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT), ("scontrol", SCONTROL)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def test_slurm_launcher_runs_a_job_array_keyed_by_cache_key(tmp_path, proxy_cache, fake_slurm):
    """Two runs -> one array of two tasks with the flags asked for; each task trains its run into
    the shared cache; a failing run is one line naming its log, the other run still finishes."""
    cache = tmp_path / "cache"
    good = tiny_config(tmp_path / "x", proxy_cache, epochs=1)
    bad = good.update("data", dataset="ssv1", data_root=str(tmp_path / "no-such-data"))   # fails in its job
    pending = {runner.cache_key(c, cache): (label, c, False) for label, c in (("good", good), ("bad", bad))}
    runner._prepare_proxy(good)
    opts = launch.Options("slurm", jobs=2, partition="gpu", account="proj", time_limit=90, gpus_per_run=0,
                          slurm_options={"qos": "high"}, poll_s=0.5)
    lines = []
    failures = launch.Launcher(opts, "cpu")(pending, cache, "smoke", lambda *a, **k: lines.append(a[0]))
    script = (fake_slurm / "script-0").read_text()
    for flag in ("--array=0-1%2", "--partition=gpu", "--account=proj", "--time=90", "--signal=USR2@120",
                 "--qos=high", "--cpus-per-task=1", "--job-name=stm-reproduce"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "--gpus-per-node" not in script and not (fake_slurm / "script-1").exists()   # one sbatch call
    assert lines[0].startswith("training 2 run(s) as Slurm job array 4201")
    key = runner.cache_key(good, cache)
    assert (cache / key / "done.json").is_file() and not (cache / runner.cache_key(bad, cache) / "done.json").exists()
    assert len(failures) == 1 and failures[0].startswith("bad: FileNotFoundError: ") and "no-such-data" in failures[0]
    assert f"(log: {cache / runner.cache_key(bad, cache)}.log; job 4201_" in failures[0] and "\n" not in failures[0]
    log = (cache / f"{key}.log").read_text()
    assert "job 4201_" in log and "epoch 1/1" in log


def test_sbatch_refusing_the_array_is_one_line(tmp_path, proxy_cache, fake_slurm, capsys):
    cfg = tiny_config(tmp_path / "x", proxy_cache, epochs=1)
    opts = launch.Options("slurm", partition="nope", gpus_per_run=0)
    with pytest.raises(ValueError) as e:
        launch.Launcher(opts, "cpu")({"k": ("run", cfg, False)}, tmp_path / "cache", "smoke", lambda *a, **k: None)
    assert str(e.value) == ("--launcher slurm: sbatch refused the job array: sbatch: error: Batch job submission "
                            "failed")
    assert capsys.readouterr().err == ""   # submitit's echo of sbatch's stderr is not shown


# ---- preempted, requeued, resumed ------------------------------------------------------------

@pytest.mark.slow
def test_preempted_job_requeues_resumes_and_matches_an_uninterrupted_run(tmp_path, proxy_cache):
    """A local job preempted (USR2) after its first epoch checkpoint is requeued by submitit
    (`RunJob.checkpoint`), resumes the run from that checkpoint and ends with the metrics, weights
    and done.json of the same run trained without interruption (CPU, --deterministic)."""
    cfg = tiny_config(tmp_path / "x", proxy_cache, epochs=3, lr_steps=(2,))
    runner._prepare_proxy(cfg)
    ex = launch.make_executor(launch.Options("local", gpus_per_run=0), tmp_path / "jobs", "cpu")
    ref_cache, cut_cache = tmp_path / "ref", tmp_path / "cut"
    key = runner.cache_key(cfg, cut_cache)
    ref = ex.submit(launch.RunJob(cfg, str(ref_cache), "smoke", threads=1, label="uninterrupted"))
    cut = ex.submit(launch.RunJob(cfg, str(cut_cache), "smoke", threads=1, label="preempted"))
    try:
        run = cut_cache / key
        deadline = time.time() + 900
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip()):
            assert not cut.done() and time.time() < deadline, "the job ended before its first epoch was written"
            time.sleep(0.05)
        assert not (run / "done.json").exists(), "the run finished before it could be preempted"
        _preempt(cut)
        got, want = cut.result(), ref.result()
    finally:
        for job in (ref, cut):
            if not job.done():
                job.cancel()
    submitit_log = (cut.stdout() or "") + (cut.stderr() or "")
    assert "this job is preempted" in submitit_log and "Requeued job" in submitit_log
    log = (cut_cache / f"{key}.log").read_text()
    assert "requeued; the run resumes from its last checkpoint" in log and "resuming" in log
    assert log.count(": preempted\n") == 2   # the job's call started twice
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[0]["status"].startswith("failed: SystemExit")
    assert sessions[1]["status"] == "finished" and 1 <= sessions[1]["resumed_from_epoch"] < 3
    # the same run as the uninterrupted one
    assert got["key"] == want["key"] == key and got["top1"] == want["top1"]
    assert _metrics(run) == _metrics(ref_cache / key) and len(_metrics(run)) == 3
    a, b = (json.loads((c / key / "done.json").read_text()) for c in (ref_cache, cut_cache))
    assert (a["top1"], a["top5"], a["n"]) == (b["top1"], b["top5"], b["n"])
    wa = torch.load(ref_cache / key / "checkpoint_last.pt", weights_only=True)["model"]
    wb = torch.load(run / "checkpoint_last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    runner.check_done(run)   # the record agrees with its evaluation file and metrics


# ---- the must-show: the same page ---------------------------------------------------------------

def _rows(d: Path) -> list[dict]:
    def strip(x):   # a run's wall time is the only thing that may differ
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "wall_time_s"}
        return [strip(v) for v in x] if isinstance(x, list) else x

    res = json.loads((d / "results.json").read_text())
    return strip([res[k] for k in ("rows", "claims", "settings", "seeds", "chance")])


@pytest.mark.slow
def test_local_launcher_trains_table5_as_jobs_and_renders_the_default_page(tmp_path, capsys):
    """`stm reproduce --table 5 --profile smoke --launcher local`: each of the table's 5 runs is one
    job; the page (results.json rows and verdicts, the table's CSV) is the default path's."""
    default, jobs = tmp_path / "default", tmp_path / "jobs"
    assert main(["reproduce", "--table", "5", "--profile", "smoke", "--out-root", str(default), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["reproduce", "--table", "5", "--profile", "smoke", "--out-root", str(jobs), "--quiet",
                 "--launcher", "local"]) == 0
    out = capsys.readouterr().out
    assert "training 5 run(s) as local submitit jobs" in out and out.count("seed 0: top-1") == 5
    results = sorted((jobs / "_cache" / ".submitit").glob("*_result.pkl"))
    assert len(results) == 5                                   # five jobs, one per run
    keys = {p.name for p in (jobs / "_cache").iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert keys == {p.name for p in (default / "_cache").iterdir() if p.is_dir() and not p.name.startswith(".")}
    page, page_jobs = default / "table5" / "smoke", jobs / "table5" / "smoke"
    assert _rows(page_jobs) == _rows(page)
    assert (page_jobs / "table5.csv").read_text() == (page / "table5.csv").read_text()
    assert (page_jobs / "table5.ipynb").is_file()


# ---- one run across nodes: the sbatch example ------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multinode_sbatch_example_runs_torchrun_under_srun_and_requeues(tmp_path, proxy_cache, fake_slurm):
    """tools/slurm/train_multinode.sbatch as Slurm runs it, here on one node of a 1-node job: srun
    starts torchrun, whose two CPU ranks (gloo) meet at the c10d rendezvous on the job's first node
    and train one run. USR2 before the time limit makes the script requeue its job; Slurm then
    ends the job's processes and starts the script again, which resumes the run and finishes it."""
    script = ROOT / "tools" / "slurm" / "train_multinode.sbatch"
    text = script.read_text()
    srun = text[text.index("\nsrun "):].split("&\n")[0]
    for part in ("--nnodes=\"$SLURM_NNODES\"", "--rdzv_backend=c10d", "--rdzv_endpoint=\"$HEAD:$PORT\"",
                 "--rdzv_id=\"$SLURM_JOB_ID\"", "-m stm_lib.cli train --resume-or-start \"$@\""):
        assert part in srun, part
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR2@" in text
    out = tmp_path / "big"
    env = {**os.environ, "SLURM_JOB_ID": "777", "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "localhost",
           "GPUS_PER_NODE": "2", "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    args = ["bash", str(script), "--dataset", "proxy-temporal", "--proxy-cache", str(proxy_cache),
            "--proxy-videos", "40", "--proxy-classes", "4", "--proxy-frames", "8", "--proxy-resolution", "32",
            "--model", "tsm", "--frames", "4", "--input-size", "32", "--width-mult", "0.25", "--epochs", "3",
            "--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--no-progress", "--no-tensorboard",
            "--out", str(out)]
    job = subprocess.Popen(args, env={**env, "MASTER_PORT": str(_free_port())}, cwd=ROOT, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    steps = []
    try:
        deadline = time.time() + 900
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()):
            assert job.poll() is None and time.time() < deadline, job.stdout.read()[-4000:] if job.poll() else "slow"
            time.sleep(0.05)
        steps = _descendants(job.pid)   # srun, torchrun and its ranks (in sessions of their own)
        os.kill(job.pid, signal.SIGUSR2)   # --signal=B:USR2@180: to the batch script
        job.wait(timeout=60)
        assert (fake_slurm / "requeue-777").exists(), "the script did not requeue its job"
    finally:
        for pid in [job.pid, *steps]:   # a requeue ends every process of the job (its cgroup)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        job.wait()
    assert "requeueing job 777" in job.stdout.read()
    assert len(_metrics(out)) < 3
    r = subprocess.run(args, env={**env, "MASTER_PORT": str(_free_port())}, cwd=ROOT, capture_output=True,
                       text=True, timeout=600)   # the requeued job: the same script again
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["status"] == "finished" and len(_metrics(out)) == 3
    assert run["sessions"][-1]["resumed_from_epoch"] >= 1 and "resuming" in r.stdout
