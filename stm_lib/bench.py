"""`stm bench`: Table 9's speed protocol grown up. One run times every requested model (default:
every registry variant) at each frame count, for inference and for a full training step, in fp32
and bf16, with channels_last off/on and `torch.compile` off/on. Within one setting the models
take turns batch by batch (`profile.time_interleaved`), so the ratio to TSN is measured under the
same conditions. Reports videos/s (median of repeats, with the slowest and fastest batch), the
ratio to TSN, peak memory, and the achieved FLOP rate against a bf16 (GPU) / fp32 (CPU) matmul
peak measured in the same run (GPU only).

Results: `runs/bench/<device>/results.json` (schema "stm-bench/1", see `run_bench`), written
atomically with provenance.
"""
from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import torch

from stm_lib.config import ModelConfig
from stm_lib.provenance import load_average
from stm_lib.models import build_model, get_variant, list_models
from stm_lib.models.temporal import set_fast
from stm_lib.engine.distributed import resolve_device
from stm_lib.io import atomic_write_json
from stm_lib.profile import _sync, compare_throughput, count_flops, device_name

SCHEMA = "stm-bench/1"


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


def settings_grid(frames, modes, precisions, channels_last, compile) -> list[dict]:
    return [dict(frames=t, mode=m, precision=p, channels_last=cl, compile=c)
            for t, m, p, cl, c in itertools.product(frames, modes, precisions, channels_last, compile)]


def run_bench(models: list[str] | None = None, frames=(8, 16), batch_size: int = 16, input_size: int = 224,
              modes=("inference", "train"), precisions=("fp32", "bf16"), channels_last=(False, True),
              compile=(False, True), warmup: int = 3, repeats: int = 10, device: str = "auto",
              width_mult: float = 1.0, num_classes: int = 174, note: str = "", log=print) -> dict:
    """Every setting of the grid times all `models` in turns; TSN is always included (the
    reference of `ratio_vs_tsn`). A setting that fails (out of memory, a compile error) is
    recorded as a row with `error` and the run goes on.

    Row fields: model, frames, mode ("inference" | "train": forward+backward+SGD step), precision
    ("fp32" | "bf16": autocast), channels_last, compile, batch_size, videos_per_s (median),
    videos_per_s_min / _max (slowest / fastest batch), spread ((max-min)/median batch time),
    ratio_vs_tsn, peak_memory_bytes + peak_memory_kind (what one more step needs beyond the
    resident weights and inputs: CUDA max_memory_allocated delta, or CPU peak-RSS delta),
    flops_per_clip (fvcore multiply-adds, the paper's FLOPs), achieved_flops_per_s (2 flops per
    multiply-add, per second; a training step counted as 3 forwards), mfu (achieved / bf16 matmul
    peak; None on CPU), times_s (every timed batch, in round order), error."""
    dev = resolve_device(device)
    models = list(dict.fromkeys(["tsn", *(models or list_models())]))
    for m in models:
        get_variant(m.removesuffix(REFERENCE))          # fail early on an unknown name
    if any(p not in ("fp32", "bf16") for p in precisions):
        raise ValueError(f"precisions must be fp32 or bf16, got {list(precisions)}")
    if any(m not in ("inference", "train") for m in modes):
        raise ValueError(f"modes must be inference or train, got {list(modes)}")
    load_start = load_average()
    peak = matmul_peak(dev, torch.bfloat16) if dev.type == "cuda" else None   # MFU's denominator (GPU only:
    # on a shared CPU a matmul timed between other jobs gives no stable peak)
    log(f"device: {device_name(dev)}" + (f"; bf16 matmul peak {peak['flops_per_s'] / 1e12:.1f} TFLOP/s" if peak else ""))
    flops = {}
    rows = []
    for s in settings_grid(frames, modes, precisions, channels_last, compile):
        t, train = s["frames"], s["mode"] == "train"
        amp = "bf16" if s["precision"] == "bf16" else "none"
        base = {"model": None, **s, "batch_size": batch_size, "input_size": input_size}
        built = {}
        for name in models:
            built[name] = build_variant(name, t, num_classes, width_mult)
            if (name, t) not in flops:
                flops[(name, t)] = count_flops(built[name], t, input_size)
        try:
            speeds = compare_throughput(built, t, input_size, batch_size, str(dev), warmup, repeats, amp,
                                        s["channels_last"], train, s["compile"], memory=True)
        except (RuntimeError, torch.OutOfMemoryError) as e:    # OOM, inductor failures: keep going
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            log(f"  {_label(s)}: failed: {msg}")
            rows += [{**base, "model": name, "error": msg} for name in models]
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
                         "peak_memory_bytes": mem, "peak_memory_kind": kind,
                         "flops_per_clip": flops[(name, t)], "achieved_flops_per_s": achieved,
                         "mfu": achieved / peak["flops_per_s"] if peak else None, "error": None})
            log(f"  {_label(s)} {name:14s} {sp['videos_per_s']:9.2f} videos/s "
                f"[{sp['videos_per_s_min']:.2f}-{sp['videos_per_s_max']:.2f}]  x{rows[-1]['ratio_vs_tsn']:.3f} tsn  "
                f"mem {_fmt_bytes(mem)}" + (f"  MFU {rows[-1]['mfu']:.1%}" if peak else ""))
        del built
        _free(dev)
    return {"schema": SCHEMA, "device": device_name(dev), "device_type": dev.type, "threads": torch.get_num_threads(),
            "matmul_peak": peak, "note": note,
            "load_average_1_5_15min": {"start": load_start, "end": load_average()},   # other jobs on the CPU
            "settings": {"models": models, "frames": list(frames), "batch_size": batch_size, "input_size": input_size,
                         "modes": list(modes), "precisions": list(precisions), "channels_last": list(channels_last),
                         "compile": list(compile), "warmup": warmup, "repeats": repeats, "width_mult": width_mult,
                         "num_classes": num_classes},
            "rows": rows}


def _label(s: dict) -> str:
    return (f"{s['frames']}F {s['mode']:9s} {s['precision']} cl={'on' if s['channels_last'] else 'off'} "
            f"compile={'on' if s['compile'] else 'off'}")


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
                    args.width_mult, args.num_classes, args.note)
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
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--num-classes", type=int, default=174)
    p.add_argument("--modes", nargs="+", choices=["inference", "train"], default=["inference", "train"])
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--channels-last", nargs="+", choices=["off", "on"], default=["off", "on"])
    p.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per model and setting "
                                                         "(compile: the first one compiles)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: leave PyTorch's default)")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. why a subset)")
    p.add_argument("--out", help="results file (default runs/bench/<device>/results.json)")
    p.set_defaults(func=_cmd_bench)
