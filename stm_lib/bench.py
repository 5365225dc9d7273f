"""`stm bench`: Table 9's speed protocol grown up. One run times every requested model (default:
every registry variant) at each frame count and batch size, for inference and for a full training
step, in fp32 and bf16, with channels_last off/on and `torch.compile` off/on (in each requested
compile mode). Within one setting the models take turns batch by batch
(`profile.time_interleaved`), so the ratio to TSN is measured under the same conditions. Reports
videos/s (median of repeats, with the slowest and fastest batch), the ratio to TSN, peak memory,
the achieved FLOP rate against a dense matmul peak measured in the same run (bf16 on a GPU, fp32
on a CPU: MFU), and with `--breakdown` where an eager step's time goes (`profile.breakdown`: each temporal
module's forward and backward against the convolutions, from torch.profiler).

Results: `runs/bench/<device>/results.json` (schema "stm-bench/2", see `run_bench`), written
atomically with provenance. A batch size that does not fit is a row with its `error` (out of
memory); `largest_fitting_batch` reads the largest that ran.
"""
from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import torch

from stm_lib.config import COMPILE_MODES, ModelConfig
from stm_lib.provenance import load_average
from stm_lib.models import build_model, get_variant, list_models
from stm_lib.models.temporal import set_fast
from stm_lib.engine.distributed import resolve_device
from stm_lib.io import atomic_write_json
from stm_lib.profile import _sync, breakdown, compare_throughput, count_flops, device_name, paired_ratio  # noqa: F401

SCHEMA = "stm-bench/2"   # /2: batch-size list, compile_mode, CPU fp32 MFU, breakdown


def device_slug(dev: torch.device) -> str:
    """Folder name for a device: `cpu` or the GPU's name, e.g. `nvidia-h100-80gb-hbm3`."""
    if dev.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower()).strip("-")


def matmul_peak(dev: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> dict:
    """Measured dense matmul rate (real flops: 2 per multiply-add) of an n x n x n product, the
    best of `repeats`: the denominator of MFU, taken on this device in this run."""
    n = n or (8192 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "flops_per_s": 2 * n ** 3 / best}


REFERENCE = "@reference"


def build_variant(name: str, frames: int, num_classes: int, width_mult: float) -> torch.nn.Module:
    """A registry variant; `<name>@reference` runs its temporal modules' plain reference forwards
    (what the fast paths replaced), to time the difference in the same run."""
    m = build_model(ModelConfig(name=name.removesuffix(REFERENCE), frames=frames, num_classes=num_classes,
                                width_mult=width_mult))
    return set_fast(m, not name.endswith(REFERENCE))


def settings_grid(frames, modes, precisions, channels_last, compile, batch_sizes=(16,),
                  compile_modes=("default",)) -> list[dict]:
    """The grid's settings, batch sizes ascending within each combination of the others (so a
    batch that does not fit skips the larger ones). `compile` (booleans) x `compile_modes`: every
    mode when compile is on, `compile_mode` None when off."""
    comp = [m if c else None for c in compile for m in (compile_modes if c else [None])]
    return [dict(frames=t, mode=m, precision=p, channels_last=cl, compile=c is not None, compile_mode=c, batch_size=b)
            for t, m, p, cl, c, b in itertools.product(frames, modes, precisions, channels_last, comp,
                                                      sorted(set(batch_sizes)))]


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def run_bench(models: list[str] | None = None, frames=(8, 16), batch_size: int | list[int] = 16, input_size: int = 224,
              modes=("inference", "train"), precisions=("fp32", "bf16"), channels_last=(False, True),
              compile=(False, True), warmup: int = 3, repeats: int = 10, device: str = "auto",
              width_mult: float = 1.0, num_classes: int = 174, note: str = "", log=print,
              compile_modes=("default",), breakdown_steps: int = 0) -> dict:
    """Every setting of the grid times all `models` in turns; TSN is always included (the
    reference of `ratio_vs_tsn`). A setting that fails (out of memory, a compile error) is
    recorded as a row with `error` and the run goes on; after an out-of-memory batch size the
    larger ones of the same setting are skipped (rows with `error` "skipped: ...").

    Row fields: model, frames, mode ("inference" | "train": forward+backward+SGD step), precision
    ("fp32" | "bf16": autocast), channels_last, compile, compile_mode (None | "default" |
    "reduce-overhead" (CUDA graphs) | "max-autotune" ...), batch_size, videos_per_s (median),
    videos_per_s_min / _max (slowest / fastest batch), spread ((max-min)/median batch time),
    ratio_vs_tsn, peak_memory_bytes + peak_memory_kind (what one more step needs beyond the
    resident weights and inputs: CUDA max_memory_allocated delta, or CPU peak-RSS delta),
    flops_per_clip (fvcore multiply-adds, the paper's FLOPs), achieved_flops_per_s (2 flops per
    multiply-add, per second; a training step counted as 3 forwards), mfu (achieved / the matmul
    peak: bf16 on a GPU, fp32 on a CPU, the better of the two measurements taken at the start and
    at the end of the run, see `matmul_peak`), times_s (every timed batch, in round order),
    breakdown (with `breakdown_steps` > 0, eager settings only: `breakdown`), error."""
    dev = resolve_device(device)
    models = list(dict.fromkeys(["tsn", *(models or list_models())]))
    batch_sizes = [batch_size] if isinstance(batch_size, int) else list(batch_size)
    for m in models:
        get_variant(m.removesuffix(REFERENCE))          # fail early on an unknown name
    if any(p not in ("fp32", "bf16") for p in precisions):
        raise ValueError(f"precisions must be fp32 or bf16, got {list(precisions)}")
    if any(m not in ("inference", "train") for m in modes):
        raise ValueError(f"modes must be inference or train, got {list(modes)}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {batch_sizes}")
    bad = [m for m in compile_modes if m not in COMPILE_MODES]
    if bad:
        raise ValueError(f"compile modes must be among {COMPILE_MODES}, got {bad}")
    load_start = load_average()
    # MFU's denominator: a dense matmul on this device in this run (bf16 on a GPU, fp32 on a CPU),
    # taken at the start and again at the end; the better one counts (on a shared CPU a peak timed
    # while other jobs ran is too low, and would put MFU above what the hardware gives)
    peak_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    peak_start = matmul_peak(dev, peak_dtype)
    log(f"device: {device_name(dev)}; {peak_start['dtype']} matmul peak {peak_start['flops_per_s'] / 1e12:.3f} TFLOP/s")
    flops = {}
    rows = []
    too_big = {}                                         # setting without batch -> batch that did not fit
    for s in settings_grid(frames, modes, precisions, channels_last, compile, batch_sizes, compile_modes):
        t, train, bs = s["frames"], s["mode"] == "train", s["batch_size"]
        amp = "bf16" if s["precision"] == "bf16" else "none"
        base = {"model": None, **s, "input_size": input_size}
        key = tuple(v for k, v in s.items() if k != "batch_size")
        if key in too_big:
            rows += [{**base, "model": name, "error": f"skipped: batch {too_big[key]} did not fit"} for name in models]
            continue
        built = {}
        for name in models:
            built[name] = build_variant(name, t, num_classes, width_mult)
            if (name, t) not in flops:
                flops[(name, t)] = count_flops(built[name], t, input_size)
        comp = (s["compile_mode"] or True) if s["compile"] else False
        try:
            speeds = compare_throughput(built, t, input_size, bs, str(dev), warmup, repeats, amp,
                                        s["channels_last"], train, comp, memory=True,
                                        breakdown_steps=0 if s["compile"] else breakdown_steps)
        except Exception as e:    # OOM, inductor failures: keep going
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            log(f"  {_label(s)}: failed: {msg}")
            rows += [{**base, "model": name, "error": msg} for name in models]
            if _is_oom(e):
                too_big[key] = bs
            del built
            _free(dev)
            continue
        for name in models:
            sp = speeds[name]
            mem, kind = sp["peak_memory_bytes"], sp["peak_memory_kind"]
            achieved = 2 * flops[(name, t)] * (3 if train else 1) * sp["videos_per_s"]
            rows.append({**base, "model": name,
                         **{k: sp[k] for k in ("videos_per_s", "videos_per_s_min", "videos_per_s_max",
                                               "batch_time_s", "spread", "repeats", "times_s")},
                         "warmup": warmup,
                         "ratio_vs_tsn": sp["videos_per_s"] / speeds["tsn"]["videos_per_s"],
                         "ratio_vs_tsn_paired": paired_ratio(speeds["tsn"]["times_s"], sp["times_s"]),
                         "peak_memory_bytes": mem, "peak_memory_kind": kind,
                         "flops_per_clip": flops[(name, t)], "achieved_flops_per_s": achieved,
                         "mfu": None, "breakdown": sp.get("breakdown"), "error": None})
            log(f"  {_label(s)} {name:14s} {sp['videos_per_s']:9.2f} videos/s "
                f"[{sp['videos_per_s_min']:.2f}-{sp['videos_per_s_max']:.2f}]  x{rows[-1]['ratio_vs_tsn']:.3f} tsn "
                f"(paired {_fmt_paired(rows[-1]['ratio_vs_tsn_paired'])})  "
                f"mem {_fmt_bytes(mem)}  {achieved / 1e12:.3f} TFLOP/s")
        del built
        _free(dev)
    peak_end = matmul_peak(dev, peak_dtype)
    best = max(peak_start["flops_per_s"], peak_end["flops_per_s"])
    peak = {**peak_start, "flops_per_s": best, "start_flops_per_s": peak_start["flops_per_s"],
            "end_flops_per_s": peak_end["flops_per_s"]}
    for r in rows:
        if r.get("achieved_flops_per_s") is not None:
            r["mfu"] = r["achieved_flops_per_s"] / best
    log(f"matmul peak (best of start and end) {best / 1e12:.3f} TFLOP/s; MFU = achieved / peak")
    return {"schema": SCHEMA, "device": device_name(dev), "device_type": dev.type, "threads": torch.get_num_threads(),
            "matmul_peak": peak, "note": note,
            "load_average_1_5_15min": {"start": load_start, "end": load_average()},   # other jobs on the CPU
            "settings": {"models": models, "frames": list(frames), "batch_sizes": batch_sizes, "input_size": input_size,
                         "modes": list(modes), "precisions": list(precisions), "channels_last": list(channels_last),
                         "compile": list(compile), "compile_modes": list(compile_modes), "warmup": warmup,
                         "repeats": repeats, "width_mult": width_mult, "num_classes": num_classes,
                         "breakdown_steps": breakdown_steps},
            "rows": rows}


def largest_fitting_batch(doc: dict, model: str = "stm", **setting) -> int | None:
    """The largest batch size at which `model` ran without error in a `run_bench` result, among
    the rows matching `setting` (e.g. mode="train", precision="bf16", channels_last=True)."""
    ok = [r["batch_size"] for r in doc["rows"] if r["model"] == model and not r.get("error")
          and all(r.get(k) == v for k, v in setting.items())]
    return max(ok, default=None)


def _label(s: dict) -> str:
    return (f"{s['frames']}F b{s['batch_size']} {s['mode']:9s} {s['precision']} cl={'on' if s['channels_last'] else 'off'} "
            f"compile={s['compile_mode'] if s['compile'] else 'off'}")


def _fmt_paired(p: dict) -> str:
    ci = p["ci95"]
    return f"{p['geomean']:.3f}" + (f", 95% CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else "")


def _fmt_bytes(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f} MiB"


def _free(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _onoff(values: list[str]) -> list[bool]:
    return [v == "on" for v in dict.fromkeys(values)]


def _cmd_bench(args) -> int:
    from stm_lib import provenance as P

    if args.threads:
        torch.set_num_threads(args.threads)
    start, t0, git = P.now(), time.time(), P.git_state()
    doc = run_bench(args.models, args.frames, args.batch_size, args.input_size, args.modes, args.precision,
                    _onoff(args.channels_last), _onoff(args.compile), args.warmup, args.repeats, args.device,
                    args.width_mult, args.num_classes, args.note, compile_modes=args.compile_mode,
                    breakdown_steps=args.breakdown)
    doc["provenance"] = P.record(parameters=vars(args) | {"func": None}, seed=0, start=start,
                                 seconds=time.time() - t0, git=git, device=str(resolve_device(args.device)))
    out = Path(args.out) if args.out else Path("runs/bench") / device_slug(resolve_device(args.device)) / "results.json"
    atomic_write_json(out, doc)
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed of every model variant next to TSN: inference and training, "
                                     "fp32/bf16, channels_last, torch.compile",
                       description="Table 9's protocol (batch 16, 224 px, data loading excluded) across variants "
                                   "and settings; all models of a setting are timed in turns. Writes "
                                   "runs/bench/<device>/results.json. Shrink it for a CPU with --models, "
                                   "--frames, --batch-size, --input-size, --modes, --precision.")
    p.add_argument("--models", nargs="+", help="registry names (default: all; tsn is always added); "
                   "NAME@reference times NAME with its temporal modules' reference forwards")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    p.add_argument("--batch-size", type=int, nargs="+", default=[16],
                   help="one or more batch sizes, e.g. 16 32 64 (a size that runs out of memory skips the larger)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--num-classes", type=int, default=174)
    p.add_argument("--modes", nargs="+", choices=["inference", "train"], default=["inference", "train"])
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--channels-last", nargs="+", choices=["off", "on"], default=["off", "on"])
    p.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    p.add_argument("--compile-mode", nargs="+", choices=COMPILE_MODES, default=["default"],
                   help="torch.compile mode(s) timed when --compile has on (reduce-overhead: CUDA graphs)")
    p.add_argument("--breakdown", type=int, default=0, metavar="STEPS",
                   help="also profile STEPS eager steps per model (torch.profiler): time in each temporal "
                        "module, forward and backward, against convolutions and the rest (0: off)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per model and setting "
                                                         "(compile: the first one compiles)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: leave PyTorch's default)")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. why a subset)")
    p.add_argument("--out", help="results file (default runs/bench/<device>/results.json)")
    p.set_defaults(func=_cmd_bench)
