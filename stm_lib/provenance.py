"""The one provenance record: which code (git commit, dirty tree), which command and parameters,
which hardware and library versions (and the lock the environment was installed from), when and
how long. Written by `stm reproduce`
(results.json), `stm train` (run.json) and `stm data bench`, so a number can always be traced back
to what produced it.
"""
from __future__ import annotations

import hashlib
import os
import re
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "numpy", "pillow", "fvcore", "papermill", "opencv-contrib-python-headless", "decord", "av",
            "stm-lib")
LOCK = ROOT / "requirements.lock"   # `make setup` installs exactly this (tools/lockfile.py)


def git_state(root: str | Path = ROOT) -> dict:
    """Commit, whether tracked files differ from it, and branch; None values outside a checkout.
    `dirty` looks at everything but `runs/`; a change there (a table's own results, rewritten by
    `stm reproduce TABLE=all` before the next table starts) is `results_changed`, not dirt."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()

    try:   # porcelain: "XY path" (or "XY old -> new"), paths from the repository root
        paths = [line.split(maxsplit=1)[1].split(" -> ")[-1].strip('"')
                 for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
        in_runs = [p.startswith("runs/") for p in paths]
        return {"commit": git("rev-parse", "HEAD") or None,
                "dirty": not all(in_runs),
                "results_changed": any(in_runs),
                "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "results_changed": None, "branch": None}


def hardware(device: str | None = None) -> dict:
    """CPU model, cores, torch threads, GPUs, memory and load (other jobs sharing the CPU)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {"host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(),
          "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
          if torch.cuda.is_available() else []}
    if device is not None:
        hw["device"] = str(device)
    try:
        hw["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if (load := load_average()) is not None:
        hw["load_average_1_5_15min"] = load
    return hw


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how many other jobs shared the CPU (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    return {**v, **lock_state()}


def lock_state(path: str | Path = LOCK) -> dict:
    """The lock: its file name and SHA-256, and how the installed distributions differ from its
    pins (`lock_mismatch`: [] when this environment is exactly the lock, the package itself aside;
    at most 20 listed). All None where there is no lock (stm_lib installed, not checked out)."""
    import importlib.metadata as md

    try:
        data = Path(path).read_bytes()
    except OSError:
        return {"lock": None, "lock_sha256": None, "lock_mismatch": None}

    def canon(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = dict(line.split()[0].split("==", 1) for line in data.decode().splitlines()
                if "==" in line and not line.startswith(("#", " ")))
    pins = {canon(k): v for k, v in pins.items()}
    have = {canon(d.metadata["Name"]): d.version for d in md.distributions()}
    have.pop("stm-lib", None)
    mismatch = [f"{n}: installed {have.get(n)}, lock {pins.get(n)}"
                for n in sorted(set(have) | set(pins)) if have.get(n) != pins.get(n)]
    return {"lock": Path(path).name, "lock_sha256": hashlib.sha256(data).hexdigest(),
            "lock_mismatch": mismatch[:20] + ([f"... {len(mismatch) - 20} more"] if len(mismatch) > 20 else [])}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """This process's command line, as a user would type it."""
    return shlex.join([Path(sys.argv[0]).name] + sys.argv[1:])


def record(command: str | None = None, parameters: dict | None = None, seed: int | None = None,
           start: str | None = None, seconds: float | None = None, git: dict | None = None,
           device: str | None = None) -> dict:
    """The provenance record. `git`: the state when the work began; if the checkout moved or
    changed meanwhile (modules imported late may then come from other code), `git_changed_during_run`
    holds the state at the end."""
    end_git = git_state()
    git = git or end_git
    rec = {"git": git}
    code = ("commit", "dirty", "branch")   # results written meanwhile under runs/ are not a code change
    if [end_git.get(k) for k in code] != [git.get(k) for k in code]:
        rec["git_changed_during_run"] = end_git
    rec.update({
        "command": command or command_line(),
        "parameters": parameters or {},
        "seed": seed,
        "hardware": hardware(device),
        "versions": versions(),
        "start": start,
        "end": now(),
        "wall_time_s": None if seconds is None else round(seconds, 1),
    })
    return rec
