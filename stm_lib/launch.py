"""Where `stm reproduce` trains a table's runs: `--launcher pool | local | slurm`.

    pool   (default) worker processes of this one (stm_lib/book/pool.py), as before
    local  one submitit job per run, as local processes (`submitit.LocalExecutor`)
    slurm  one Slurm job array (`submitit.SlurmExecutor`), one array task per run

Whatever the launcher, a run is what `runner.plan` says, identified by its cache key
(`runner.cache_key`) and trained by `runner.train_cached` into `<out-root>/_cache/<key>/` under
that entry's lock (`<cache>/.<key>.lock`), its output in `<cache>/<key>.log`. When every job has
ended, the table's notebook runs exactly as on the default path and finds every run in the cache,
so the page is the same whichever launcher trained the runs.

A job is a `RunJob`, a `submitit.helpers.Checkpointable`: when Slurm preempts it or its time limit
comes (submitit's USR2 signal, `--signal=USR2@120` in the job's sbatch script), submitit calls
`RunJob.checkpoint`, which resubmits the same call, and requeues the job (`scontrol requeue`; as a
local process: the same job is started again). The requeued call finds the run folder without its
`done.json` but with `checkpoint_last.pt` and resumes it there (`train_cached(resume=True)`): the
engine resumes bit for bit on CPU (tests/test_engine_resume.py), so a requeued run ends with the
metrics of an uninterrupted one; what is lost is the work since the run's last checkpoint (the
epoch in progress). Submitit's own files (pickled calls, sbatch scripts, job logs) go to
`<cache>/.submitit/`.

One large run across several nodes is not a job array: it goes through `torchrun` under `srun`,
`tools/slurm/train_multinode.sbatch` (README, "On a Slurm cluster").
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
import sys
import time
from pathlib import Path

try:
    from submitit.helpers import Checkpointable
except ImportError:   # submitit only matters to --launcher local / slurm (checked in `make`)
    Checkpointable = object

LAUNCHERS = ("pool", "local", "slurm")
SUBMITIT_DIR = ".submitit"     # inside the run cache: it is on the shared file system the jobs use
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
SLURM_TIMEOUT_MIN = 24 * 60
# Requeues at the time limit before submitit gives a job up (preemptions do not count): a run
# resumes from its checkpoint each time, so a cluster's short limit only splits it into pieces.
MAX_TIMEOUTS = 100
SIGNAL_DELAY_S = 120           # USR2 this long before the time limit: time to stop cleanly


@dataclasses.dataclass
class Options:
    """`stm reproduce`'s launcher flags. `jobs`: runs at once (pool workers, local processes, or
    the array's `%N`; None: the pool's default, all local runs one per core, no limit on Slurm)."""
    launcher: str = "pool"
    jobs: int | None = None
    partition: str | None = None
    gpus_per_run: int | None = None
    time_limit: int | None = None          # minutes
    account: str | None = None
    cpus_per_run: int | None = None
    slurm_options: dict = dataclasses.field(default_factory=dict)
    poll_s: float | None = None

    def check(self) -> "Options":
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher: unknown launcher {self.launcher!r}; choose from {', '.join(LAUNCHERS)}")
        jobs = self.jobs if self.launcher != "pool" else None   # the pool keeps its own reading of --jobs
        for flag, v, least in (("--jobs", jobs, 1), ("--gpus-per-run", self.gpus_per_run, 0),
                               ("--time-limit", self.time_limit, 1), ("--cpus-per-run", self.cpus_per_run, 1)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
                raise ValueError(f"{flag} must be an integer >= {least}, got {v!r}")
        slurm_only = [f for f, v in (("--partition", self.partition), ("--account", self.account),
                                     ("--slurm-option", self.slurm_options)) if v]
        if slurm_only and self.launcher != "slurm":
            raise ValueError(f"{', '.join(slurm_only)}: only with --launcher slurm (got --launcher {self.launcher})")
        if self.launcher == "pool" and any(v is not None for v in (self.gpus_per_run, self.time_limit,
                                                                   self.cpus_per_run)):
            raise ValueError("--gpus-per-run, --time-limit and --cpus-per-run are for --launcher local or slurm")
        if self.launcher != "pool":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise ValueError(f"--launcher {self.launcher} needs submitit (pip install submitit; it is in "
                                 "pyproject's dependencies)") from None
        if self.launcher == "slurm":
            missing = [c for c in ("sbatch", "srun", "sacct", "scontrol") if shutil.which(c) is None]
            if missing:
                raise ValueError(f"--launcher slurm: {', '.join(missing)} not found on PATH: run stm reproduce on "
                                 "a Slurm login node (or use --launcher local to run the same jobs here)")
        return self


def time_minutes(text: str) -> int:
    """`--time-limit`: minutes (`90`) or Slurm's `[D-]HH:MM[:SS]` (`1-12:00:00`, `04:30:00`)."""
    s = str(text).strip()
    try:
        if s.isdigit():
            return int(s)
        days, _, hms = s.rpartition("-")
        parts = [int(x) for x in hms.split(":")]
        if not 2 <= len(parts) <= 3 or any(p < 0 for p in parts):
            raise ValueError
        h, m, sec = (parts + [0])[:3]
        return int(days or 0) * 1440 + h * 60 + m + (1 if sec else 0)
    except ValueError:
        raise ValueError(f"--time-limit: expected minutes or [D-]HH:MM[:SS], got {s[:40]!r}") from None


def slurm_option(text: str) -> tuple[str, str]:
    """`--slurm-option KEY=VALUE`: any sbatch option submitit has no name for (qos=high, mem=64G,
    constraint=a100, ...), written as `#SBATCH --KEY=VALUE`."""
    key, eq, value = str(text).partition("=")
    key = key.strip().lstrip("-")
    if not eq or not key or not all(c.isalnum() or c in "-_" for c in key) or "\n" in value:
        raise ValueError(f"--slurm-option: expected KEY=VALUE like qos=high, got {str(text)[:60]!r}")
    return key.replace("_", "-"), value.strip()


# ---- the job ---------------------------------------------------------------------------------

class RunJob(Checkpointable):
    """One cached run as a submitit job: `train_cached(cfg, cache_dir, profile, need_weights,
    resume=True)` with its output appended to `<cache>/<key>.log`. `threads`: torch threads on a
    CPU (the profile's `threads`, 1 for smoke and proxy, as in the pool and the notebooks)."""

    def __init__(self, cfg, cache_dir: str, profile: str, need_weights: bool = False, threads: int | None = None,
                 label: str = ""):
        self.cfg, self.cache_dir, self.profile = cfg, str(Path(cache_dir).resolve()), profile
        self.need_weights, self.threads, self.label = need_weights, threads, label

    def __call__(self) -> dict:
        import torch

        from stm_lib.book import runner
        from stm_lib.provenance import now

        if self.threads and not torch.cuda.is_available():
            torch.set_num_threads(int(self.threads))
        key = runner.cache_key(self.cfg, self.cache_dir)
        t0 = time.time()
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.cache_dir) / f"{key}.log", "a") as fh, contextlib.redirect_stdout(fh), \
                contextlib.redirect_stderr(fh):
            print(f"# {now()} {_job_name()}: {self.label or key}", flush=True)
            _, _, ev, cached = runner.train_cached(self.cfg, self.cache_dir, self.profile, self.need_weights,
                                                   resume=True)
        return {"key": key, "top1": ev["top1"], "seconds": time.time() - t0, "cached": cached}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or at the time limit, before it requeues the job: the
        run's last checkpoint is on disk, so the same call, resubmitted, resumes it."""
        print(f"# {_job_name()}: preempted or at its time limit: requeued; the run resumes from its last "
              "checkpoint", flush=True)
        return super().checkpoint(*args, **kwargs)


def _job_name() -> str:
    try:
        import submitit

        return f"job {submitit.JobEnvironment().job_id}"
    except Exception:   # noqa: BLE001 - not inside a submitit job (a direct call)
        return f"pid {os.getpid()}"


# ---- executors -------------------------------------------------------------------------------

def make_executor(opts: Options, folder: str | Path, device: str = "auto", cpus: int | None = None):
    """The submitit executor of `opts.launcher` ("local" or "slurm"), its jobs' files in `folder`."""
    import submitit

    folder = Path(folder)
    gpus = gpus_per_run(opts, device)
    if opts.launcher == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
        ex.update_parameters(timeout_min=opts.time_limit or LOCAL_TIMEOUT_MIN, gpus_per_node=gpus,
                             signal_delay_s=SIGNAL_DELAY_S if opts.time_limit else 30, stderr_to_stdout=True)
        return ex
    ex = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
    params = dict(job_name="stm-reproduce", time=opts.time_limit or SLURM_TIMEOUT_MIN, gpus_per_node=gpus or None,
                  cpus_per_task=opts.cpus_per_run or cpus, partition=opts.partition, account=opts.account,
                  signal_delay_s=SIGNAL_DELAY_S, stderr_to_stdout=True,
                  additional_parameters=dict(opts.slurm_options) or None)
    if opts.jobs:
        params["array_parallelism"] = opts.jobs
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def gpus_per_run(opts: Options, device: str = "auto") -> int:
    """`--gpus-per-run`, else: none with `--device cpu`; 1 on Slurm; locally 1 when there is a GPU."""
    if opts.gpus_per_run is not None:
        return opts.gpus_per_run
    if device == "cpu":
        return 0
    return 1 if opts.launcher == "slurm" or _cuda_count() else 0


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class Launcher:
    """`prefetch`'s way to train the runs it still needs: `launcher(pending, cache_dir, profile,
    log) -> failures`, `pending` mapping cache key -> (label, Config, need_weights), the failures
    one line each. Every run is a job; this call returns when every job has ended."""

    def __init__(self, opts: Options, device: str = "auto"):
        self.opts, self.device = opts.check(), device

    def __call__(self, pending: dict, cache_dir: str | Path, profile: str, log=print) -> list[str]:
        from stm_lib.book.tables import check_profile

        if not pending:
            return []
        cache_dir = Path(cache_dir).resolve()
        gpus = gpus_per_run(self.opts, self.device)
        threads = None if gpus else check_profile(profile).get("threads")
        order = sorted(pending.items(), key=lambda kv: kv[1][1].train.seed)   # seed-major, as the pool
        calls = [(key, label, RunJob(cfg, str(cache_dir), profile, need, threads, label))
                 for key, (label, cfg, need) in order]
        workers = max(cfg.data.num_workers for _, cfg, _ in pending.values())
        ex = make_executor(self.opts, cache_dir / SUBMITIT_DIR, self.device,
                           cpus=(1 + workers) * max(1, gpus))
        if self.opts.launcher == "slurm":
            return self._slurm(ex, calls, cache_dir, log)
        return self._local(ex, calls, cache_dir, log)

    # ---- Slurm: one job array ----------------------------------------------------------------
    def _slurm(self, ex, calls, cache_dir: Path, log) -> list[str]:
        import submitit

        quiet = io.StringIO()
        try:   # submitit echoes sbatch's stderr before raising: keep only our one line
            with contextlib.redirect_stderr(quiet), ex.batch():
                jobs = [ex.submit(call) for _, _, call in calls]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as e:
            why = _last_line(str(e)) or _last_line(quiet.getvalue()) or type(e).__name__
            raise ValueError(f"--launcher slurm: sbatch refused the job array: {why}") from None
        array = jobs[0].job_id.split("_")[0]
        log(f"training {len(calls)} run(s) as Slurm job array {array} "
            f"({len(calls)} task(s){', %d at a time' % self.opts.jobs if self.opts.jobs else ''}); "
            f"logs in {cache_dir}/<key>.log and {cache_dir / SUBMITIT_DIR}", flush=True)
        try:
            return self._wait(list(zip(jobs, calls)), [], cache_dir, log, self.opts.poll_s or 30.0)
        except BaseException:
            log(f"stm reproduce: stopped waiting; the jobs go on on the cluster (scancel {array} stops them; "
                "the same command again reuses every run they finish)", flush=True)
            raise

    # ---- local: one process per run, `jobs` at a time ------------------------------------------
    def _local(self, ex, calls, cache_dir: Path, log) -> list[str]:
        at_once = self.opts.jobs or max(1, min(8, os.cpu_count() or 1))
        log(f"training {len(calls)} run(s) as local submitit jobs, {at_once} at a time; logs in "
            f"{cache_dir}/<key>.log and {cache_dir / SUBMITIT_DIR}", flush=True)
        gpus = list(range(_cuda_count()))
        queue, live = list(calls), []

        def submit():
            while queue and len([j for j, _ in live if not j.done()]) < at_once:
                call = queue.pop(0)
                if gpus and ex.parameters.get("gpus_per_node"):   # spread the runs over the GPUs
                    k, g = len(live), ex.parameters["gpus_per_node"]
                    ex.update_parameters(visible_gpus=[gpus[(k * g + i) % len(gpus)] for i in range(g)])
                live.append((ex.submit(call[2]), call))
        try:
            return self._wait(live, queue, cache_dir, log, self.opts.poll_s or 0.5, submit)
        except BaseException:
            for job, _ in live:   # local jobs are this machine's processes: stop them with us
                if not job.done():
                    job.cancel()
            raise

    def _wait(self, live: list, queue: list, cache_dir: Path, log, poll_s: float, submit=None) -> list[str]:
        """Until every job (submitted or queued) has ended: one line per job as it ends."""
        failures, seen, t0 = [], set(), time.time()
        total = len(live) + len(queue)
        while True:
            if submit:
                submit()
            for job, (key, label, _) in live:
                if id(job) in seen or not job.done():
                    continue
                seen.add(id(job))
                n = f"[{len(seen)}/{total}]"
                err = job.exception()
                if err is None:
                    r = job.result()
                    log(f"  {n} {label}: top-1 {r['top1']:.1f}% ({'cached' if r['cached'] else '%.0f s' % r['seconds']}; "
                        f"{(time.time() - t0) / 60:.1f} min so far)", flush=True)
                else:
                    msg = _job_error(err)
                    failures.append(f"{label}: {msg} (log: {cache_dir / (key + '.log')}; job {job.job_id}: "
                                    f"{job.paths.stdout})")
                    log(f"  {n} {label}: FAILED: {msg}", flush=True)
            if len(seen) == total:
                return failures
            time.sleep(poll_s)


def _job_error(err: BaseException) -> str:
    """One line for a failed job: the last line of the error its call raised, or how it ended."""
    from submitit.core.utils import FailedJobError

    text = str(err)
    if isinstance(err, FailedJobError) and "----------------------\n" in text:   # the remote traceback
        trace = text.split("----------------------")[1]
        return _last_line(trace)[:300] or type(err).__name__
    state = re.search(r"\(state: ([A-Za-z_ ]+)\)", text)   # UncompletedJobError: killed, cancelled, ...
    return f"the job ended without a result (state {state.group(1) if state else 'unknown'}; its log says why)"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---- CLI -------------------------------------------------------------------------------------

def _flag(parse):
    """A flag type whose ValueError argparse prints as it is (not as 'invalid value')."""
    import argparse

    def f(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None
    f.__name__ = parse.__name__
    return f


def add_arguments(p) -> None:
    """`stm reproduce`'s launcher flags."""
    g = p.add_argument_group("launcher (where the runs train; the page is rendered here afterwards)")
    g.add_argument("--launcher", default="pool", choices=LAUNCHERS,
                   help="pool (default): worker processes of this one; local: one submitit job per run, as "
                        "local processes; slurm: one Slurm job array, a task per run (README: On a Slurm cluster)")
    g.add_argument("--partition", default=None, help="slurm: the partition")
    g.add_argument("--account", default=None, help="slurm: the account to charge")
    g.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs per run (default: slurm 1, or 0 with --device cpu; local: 1 when there is a GPU); "
                        "more than 1 trains a run with torchrun on one node")
    g.add_argument("--cpus-per-run", type=int, default=None,
                   help="slurm: CPUs per run (default: (1 + data-loader workers) per GPU)")
    g.add_argument("--time-limit", type=_flag(time_minutes), default=None,
                   help="per job, minutes or [D-]HH:MM[:SS] (default: slurm 24:00:00); a run that reaches it is "
                        "requeued and resumes from its last checkpoint")
    g.add_argument("--slurm-option", action="append", type=_flag(slurm_option), default=None, metavar="KEY=VALUE",
                   help="slurm: another sbatch option, e.g. qos=high, mem=64G, constraint=a100 (repeatable)")


def options_from_args(args) -> Options:
    return Options(getattr(args, "launcher", "pool") or "pool", args.jobs, getattr(args, "partition", None),
                   getattr(args, "gpus_per_run", None), getattr(args, "time_limit", None),
                   getattr(args, "account", None), getattr(args, "cpus_per_run", None),
                   dict(getattr(args, "slurm_option", None) or [])).check()


if __name__ == "__main__":   # pragma: no cover
    sys.exit("use: stm reproduce --launcher local|slurm ...")
