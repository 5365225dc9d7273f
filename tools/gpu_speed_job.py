"""Issue 29's GPU speed check as one time-boxed job (about 8 min on an H100), everything in one
folder OUT, at most 8 files (what a device call brings back):

    bench_eager.json    `stm bench`: tsn, tsm, stm, stm@reference at 8 frames, 224 px, bf16,
                        channels_last, eager, batch 16 / 32 / 64 (a size that does not fit is a
                        row with its error), training step and inference, with the per-module
                        breakdown (torch.profiler) and MFU against the bf16 matmul peak measured
                        in the same run
    bench_compile.json  the same for tsn and stm, training step, torch.compile (each --compile-mode)
                        at the largest batch that fitted
    train_stm.json      200 steps of `stm train` at the paper's setting (8 frames, 224 px, the
                        largest batch that fitted, bf16, channels_last, torch.compile) on a
                        synthetic dataset in the Something-Something v1 layout (`stm data
                        make-proxy`'s generator, read through the ssv1 reader: JPEG frames,
                        decoded by the loader's workers): every step's loss, loader wait and
                        step time (STM_STEP_LOG), the epoch metrics and run.json
    train_torchrun.json the same run launched by `torchrun --standalone --nproc_per_node 1`
    summary.json        device, chosen batch, and per training run: videos/s (compute, and end to
                        end with the loader's wait), MFU, peak memory, loader wait per step,
                        compile (first-step) time, loss at the start and the end; what was cut
    log.txt             every stage's output

Each stage runs as a subprocess with a deadline inside --budget-s; the summary is rewritten after
every stage, so a job cut short still returns what finished. The run folders (checkpoints) and the
data stay in --work, outside OUT.

    python3 tools/gpu_speed_job.py --out $OUT                       # on the GPU machine
    python3 tools/gpu_speed_job.py --out /tmp/o --tiny              # CPU smoke test (tests/test_gpu_speed_job.py)

The machine's image has PyTorch but not fvcore (the FLOP counter) and its small pure-Python
dependencies: `--prepare-site DIR` copies them from this environment into DIR, which the device
call carries and puts on PYTHONPATH. From this checkout (DIR ignored by git, so it travels only
when carried):

    echo /.devsite/ >> .git/info/exclude
    .venv/bin/python tools/gpu_speed_job.py --prepare-site .devsite
    # device call, carry [".devsite"], timeout_s 540:
    PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1 python3 tools/gpu_speed_job.py --out $OUT --budget-s 460
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

T0 = time.time()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's stm_lib, installed or not
SITE_PACKAGES = ("fvcore", "iopath", "yacs", "termcolor", "portalocker", "tabulate")
WARM_STEPS = 10                  # steps left out of the speed figures (compile, cuDNN autotuning)


def log(out: Path, msg: str) -> None:
    line = f"[{time.time() - T0:6.0f} s] {msg}"
    print(line, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(line + "\n")


def run(cmd: list[str], deadline: float, out: Path, env: dict | None = None) -> int | None:
    """A subprocess, its output appended to OUT/log.txt, killed at `deadline` (returns None then)."""
    log(out, "$ " + " ".join(cmd))
    with open(out / "log.txt", "a") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
        try:
            rc = p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
    log(out, f"  -> rc {rc}" + (" (deadline)" if rc is None else ""))
    return rc


def prepare_site(dest: Path) -> None:
    """Copy the pure-Python packages the GPU image lacks from this environment into `dest`."""
    import importlib

    dest.mkdir(parents=True, exist_ok=True)
    for name in SITE_PACKAGES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            print(f"skip {name}: not installed here")
            continue
        src = Path(mod.__file__)
        src = src.parent if src.name == "__init__.py" else src
        target = dest / src.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, target)
        print(f"copied {src} -> {target}")


def start_ssv1(work: Path, shards: int, train: int, val: int, classes: int, frames: int, res: int) -> list:
    """Generate the synthetic SSv1-layout data in `shards` processes (make_proxy is single-threaded:
    about 0.1 s a clip of 8 frames at 128 px), each shard its own seed; `finish_ssv1` merges them."""
    per_train, per_val = -(-train // shards), -(-val // shards)
    procs = []
    for i in range(shards):
        code = ("from stm_lib.data.proxy import make_proxy; "
                f"make_proxy('temporal', {str(work / f'shard{i}')!r}, videos={max(classes, per_train + per_val)}, "
                f"classes={classes}, frames={frames}, resolution={res}, seed={i}, progress=False, val_clips={per_val})")
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    return procs


def finish_ssv1(procs: list, work: Path, data: Path, deadline: float) -> str | None:
    """Wait for the shards, then merge them into one SSv1 folder `data` (clip ids `s<shard>_<id>`).
    Returns an error message, or None."""
    from stm_lib.data.proxy import FRAMES_DIR, PREFIX

    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            return "killed at the deadline"
        if p.returncode != 0:
            return err.decode(errors="replace")[-2000:]
    (data / FRAMES_DIR).mkdir(parents=True)
    rows = {"train": [], "validation": []}
    for i in range(len(procs)):
        shard = work / f"shard{i}"
        if i == 0:
            shutil.copy(shard / f"{PREFIX}-labels.csv", data / f"{PREFIX}-labels.csv")
        for split in rows:
            for line in (shard / f"{PREFIX}-{split}.csv").read_text().splitlines():
                vid, label = line.split(";")
                (shard / FRAMES_DIR / vid).rename(data / FRAMES_DIR / f"s{i}_{vid}")
                rows[split].append(f"s{i}_{vid};{label}")
    for split, lines in rows.items():
        (data / f"{PREFIX}-{split}.csv").write_text("\n".join(lines) + "\n")
    return None


def read_steps(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize_run(steps: list[dict], batch: int, flops_per_clip: int | None, peak: float | None) -> dict:
    """Speed figures of one training run from its per-step log (the first WARM_STEPS left out)."""
    if not steps:
        return {"steps": 0}
    warm = steps[WARM_STEPS:] if len(steps) > WARM_STEPS + 2 else steps[1:] or steps
    step_s = statistics.median(r["step_s"] for r in warm)
    waits = sorted(r["loader_wait_s"] for r in warm)
    e2e = statistics.median(r["step_s"] + r["loader_wait_s"] for r in warm)
    vps = batch / step_s
    mfu = 2 * 3 * flops_per_clip * vps / peak if flops_per_clip and peak else None
    mem = max((r.get("max_memory_allocated", 0) for r in steps), default=0) or None
    return {"steps": len(steps), "timed_steps": len(warm), "batch_size": batch,
            "first_step_s": steps[0]["step_s"], "median_step_s": step_s,
            "videos_per_s": vps, "videos_per_s_end_to_end": batch / e2e, "mfu": mfu,
            "loader_wait_s": {"median": statistics.median(waits), "mean": statistics.fmean(waits),
                              "p90": waits[min(len(waits) - 1, int(0.9 * len(waits)))], "max": waits[-1]},
            "loader_wait_share": sum(waits) / sum(r["step_s"] + r["loader_wait_s"] for r in warm),
            "peak_memory_bytes": mem, "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"],
            "loss_last10_mean": statistics.fmean(r["loss"] for r in steps[-10:])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default $OUT)")
    ap.add_argument("--work", default="/tmp/stm-gpu-speed", help="data and run folders (not brought back)")
    ap.add_argument("--budget-s", type=float, default=460, help="seconds for the whole job")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: width 0.25, 4 frames, 32 px, "
                    "batches 2 and 4, 2x2 steps, no compile")
    ap.add_argument("--device", default=None, help="default cuda (cpu with --tiny)")
    ap.add_argument("--models", nargs="+", default=["tsn", "tsm", "stm", "stm@reference"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 16 32 64")
    ap.add_argument("--steps", type=int, default=200, help="training steps per run (epochs x steps per epoch)")
    ap.add_argument("--compile", choices=["on", "off"], default=None, help="compile the training runs and the "
                    "compiled bench (default on; off with --tiny)")
    ap.add_argument("--compile-modes", nargs="+", default=["default"],
                    help="modes for bench_compile.json (reduce-overhead: CUDA graphs)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: cores - 4)")
    ap.add_argument("--prepare-site", metavar="DIR", help="only copy fvcore & co. into DIR (run here, not there)")
    a = ap.parse_args(argv)
    if a.prepare_site:
        prepare_site(Path(a.prepare_site))
        return 0
    if not a.out:
        ap.error("--out (or $OUT) is required")
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    end = T0 + a.budget_s - 10
    tiny = a.tiny
    dev = a.device or ("cpu" if tiny else "cuda")
    compile_on = (a.compile or ("off" if tiny else "on")) == "on"
    frames, size, width = (4, 32, 0.25) if tiny else (8, 224, 1.0)
    batches = a.batch_sizes or ([2, 4] if tiny else [16, 32, 64])
    epochs, per_epoch = (2, 2) if tiny else (10, max(1, a.steps // 10))
    workers = a.workers if a.workers is not None else (0 if tiny else max(1, (os.cpu_count() or 8) - 4))
    repeats, warmup, breakdown = (2, 1, 1) if tiny else (8, 3, 2)
    py = [sys.executable, "-m", "stm_lib.cli"]
    common = ["--frames", str(frames), "--input-size", str(size), "--width-mult", str(width), "--device", dev]

    import torch

    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "tiny": tiny, "torch": torch.__version__,
                     "device": torch.cuda.get_device_name(0) if dev == "cuda" and torch.cuda.is_available() else dev,
                     "cpu_cores": os.cpu_count(), "loader_workers": workers, "budget_s": a.budget_s, "cut": []}
    try:
        from stm_lib.provenance import git_state

        summary["git"] = git_state()
    except Exception as e:    # a copied tree without .git
        summary["git"] = f"unknown ({type(e).__name__})"

    def save():
        summary["elapsed_s"] = round(time.time() - T0, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))

    log(out, f"torch {torch.__version__}, device {summary['device']}, {os.cpu_count()} cores, budget {a.budget_s:.0f} s")
    save()

    # ---- 1. the data, generated while the bench runs (CPU work beside GPU work) --------------------
    classes = 10
    train_clips = max(per_epoch * max(batches), classes)
    val_clips = max(2 * max(batches), classes)
    data = work / "ssv1"
    shards = 1 if tiny else max(1, min(8, (os.cpu_count() or 2) - 4))
    gens = start_ssv1(work, shards, train_clips, val_clips, classes, frames, 32 if tiny else 128)
    summary["data"] = {"layout": "ssv1 (Something-Something v1: frames folders of JPEGs, ';'-separated lists)",
                       "generator": "stm_lib.data.proxy.make_proxy('temporal'), shards merged", "shards": shards,
                       "train_clips_at_least": train_clips, "val_clips_at_least": val_clips,
                       "frames_per_clip": frames, "resolution": 32 if tiny else 128}
    t_gen = time.time()

    # ---- 2. the eager bench grid ---------------------------------------------------------------
    bench_eager = out / "bench_eager.json"
    run([*py, "bench", "--models", *a.models, *common, "--batch-size", *map(str, batches),
         "--modes", "train", "inference", "--precision", "bf16", "--channels-last", "on", "--compile", "off",
         "--warmup", str(warmup), "--repeats", str(repeats), "--breakdown", str(breakdown),
         "--note", "issue 29 GPU speed job: eager grid", "--out", str(bench_eager)],
        min(end, time.time() + (0.3 * a.budget_s if tiny else 170)), out)   # --tiny (a CPU test): the budget rules
    from stm_lib.bench import largest_fitting_batch

    doc = json.loads(bench_eager.read_text()) if bench_eager.is_file() else None
    batch = (largest_fitting_batch(doc, "stm", mode="train") if doc else None) or batches[0]
    peak = (doc or {}).get("matmul_peak", {}).get("flops_per_s")
    flops = next((r["flops_per_clip"] for r in (doc or {}).get("rows", []) if r["model"] == "stm"
                  and r.get("flops_per_clip")), None)
    summary.update(batch_size=batch, matmul_peak_flops_per_s=peak, stm_flops_per_clip=flops)
    if doc:
        summary["bench_eager"] = [{k: r.get(k) for k in ("model", "mode", "batch_size", "videos_per_s", "ratio_vs_tsn",
                                                         "mfu", "peak_memory_bytes", "error")} for r in doc["rows"]]
    save()

    err = finish_ssv1(gens, work, data, end)
    summary["data"]["ready_after_s"] = round(time.time() - t_gen, 1)
    if not err:
        from stm_lib.data.datasets import read_ssv1

        summary["data"].update({f"{s}_clips": len(read_ssv1(data, s)[1]) for s in ("train", "val")})
    if err:
        log(out, f"data generation failed: {err}")
        summary["cut"].append("training: no data")
        save()
        return 1
    log(out, f"data ready: {data} ({summary['data']['ready_after_s']} s after its start)")

    # ---- 3. training runs: stm train, then torchrun --nproc_per_node 1 --------------------------
    train_args = ["train", "--dataset", "ssv1", "--data-root", str(data), "--model", "stm", *common,
                  "--batch-size", str(batch), "--epochs", str(epochs), "--max-steps-per-epoch", str(per_epoch),
                  "--lr", "0.01", "--num-workers", str(workers), "--no-progress", "--no-tensorboard"]
    train_args += ["--amp", "bf16", "--channels-last"]
    if compile_on:
        train_args += ["--compile"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                "-m", "stm_lib.cli"]
    # shares of the time left: the first run compiles (inductor's cache then serves the second and
    # the compiled bench), so it gets the most
    for name, launcher, share, cap in (("stm", py, 0.45, 170), ("torchrun", torchrun, 0.6, 150)):
        run_dir, steps_file = work / f"run-{name}", work / f"steps-{name}.jsonl"
        left = end - time.time()
        if left < 30:
            summary["cut"].append(f"train_{name}: no time left")
            continue
        cap = left if tiny else cap   # --tiny (a CPU test, maybe on a busy machine): the budget rules
        rc = run([*launcher, *train_args, "--out", str(run_dir)], time.time() + min(left * share, cap), out,
                 env={"STM_STEP_LOG": str(steps_file), "PYTHONUNBUFFERED": "1"})
        steps = read_steps(steps_file)
        rec = {"command": [*launcher, *train_args, "--out", str(run_dir)], "rc": rc, "steps": steps,
               "metrics": [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
               if (run_dir / "metrics.jsonl").is_file() else [],
               "run": json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else None}
        (out / f"train_{name}.json").write_text(json.dumps(rec))
        summary[f"train_{name}"] = {"rc": rc, **summarize_run(steps, batch, flops, peak)}
        if rc is None:
            summary["cut"].append(f"train_{name}: stopped at its deadline after {len(steps)} steps")
        save()

    # ---- 4. the compiled bench (inductor's cache is warm from the training runs) ----------------
    if compile_on and end - time.time() > 30:
        run([*py, "bench", "--models", "tsn", "stm", *common, "--batch-size", str(batch), "--modes", "train",
             "--precision", "bf16", "--channels-last", "on", "--compile", "on", "--compile-mode", *a.compile_modes,
             "--warmup", str(warmup), "--repeats", str(repeats),
             "--note", "issue 29 GPU speed job: compiled training step", "--out", str(out / "bench_compile.json")],
            end, out)
        if (out / "bench_compile.json").is_file():
            rows = json.loads((out / "bench_compile.json").read_text())["rows"]
            summary["bench_compile"] = [{k: r.get(k) for k in ("model", "compile_mode", "batch_size", "videos_per_s",
                                                               "ratio_vs_tsn", "mfu", "peak_memory_bytes", "error")}
                                        for r in rows]
    elif compile_on:
        summary["cut"].append("bench_compile: no time left")
    save()
    log(out, f"done; summary in {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
