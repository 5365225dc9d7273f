"""Model complexity and speed: parameters, FLOPs (fvcore; one multiply-add = one flop, BN counted,
the paper's convention for Tables 8 and 9) and throughput in videos/s (Table 9 protocol: batch 16,
data loading excluded), always measured next to the TSN baseline in the same run.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from stm_lib.config import ModelConfig
from stm_lib.engine.distributed import resolve_device
from stm_lib.models import build_model, list_models, get_variant


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, frames: int, input_size: int = 224) -> int:
    """fvcore FLOPs of one clip `(1, T, C_in, S, S)` in eval mode (C_in: 3, or 23 with flow). fvcore counts convs, linear
    layers and BN (2 per element with affine); element-wise add/sub/mul and pooling are free."""
    import warnings

    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        fa = FlopCountAnalysis(model, torch.zeros(1, frames, getattr(model, "in_channels", 3), input_size, input_size))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")      # fvcore's tracer warns about deprecated jit APIs
            return int(fa.total())
    finally:
        model.train(was_training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


AMP = {"none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def random_clips(model: torch.nn.Module, batch_size: int, frames: int, input_size: int, dev: torch.device,
                 channels_last: bool = False) -> torch.Tensor:
    """`(N, T, C_in, S, S)` random input on the device; with `channels_last` its frames are stored
    NHWC, so the `(N*T, C, S, S)` view the backbone sees is channels_last too."""
    c = getattr(model, "in_channels", 3)
    x = torch.randn(batch_size * frames, c, input_size, input_size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.view(batch_size, frames, c, input_size, input_size)


def prepare(model: torch.nn.Module, dev: torch.device, train: bool = False, channels_last: bool = False,
            compile: bool | str = False) -> torch.nn.Module:
    """The model on the device in train/eval mode, NHWC weights if asked, compiled if asked
    (`compile`: True, or a torch.compile mode such as "reduce-overhead")."""
    model = model.train(train).to(dev)
    if channels_last:    # `model.to(memory_format=...)` rejects CSTM's 5-D Conv3d weight
        from stm_lib.models import to_channels_last

        to_channels_last(model)
    if not compile:
        return model
    return torch.compile(model, mode=None if compile in (True, "default") else compile)


def make_step(model: torch.nn.Module, x: torch.Tensor, train: bool = False, amp: str = "none",
              num_classes: int | None = None):
    """One timed unit as a closure: a forward without grad (inference), or a full training step
    (zero grad, forward, cross-entropy, backward, SGD-with-momentum update, as in section 4.2).
    bf16 needs no loss scaling; fp16 training is not offered (it would need a GradScaler)."""
    dtype = AMP[amp]
    dev = x.device
    if not train:
        def step():
            with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                model(x)
        return step
    if amp == "fp16":
        raise ValueError("fp16 training steps are not benchmarked (use bf16, which needs no loss scaling)")
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    y = torch.randint(0, num_classes or 2, (x.shape[0],), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def time_interleaved(steps: dict, dev: torch.device, warmup: int = 3, repeats: int = 10) -> dict[str, list[float]]:
    """Seconds per call of each step, the steps taking turns (the order rotating every round) so
    that a machine whose load drifts (shared CPU, GPU clocks) slows all of them alike and their
    ratio stays fair. `warmup` untimed calls of each come first."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    _sync(dev)
    times = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _sync(dev)
            t0 = time.perf_counter()
            steps[name]()
            _sync(dev)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(times: list[float], batch_size: int) -> dict:
    """Median videos/s and the spread of the repeats (slowest and fastest batch)."""
    med = statistics.median(times)
    return {"videos_per_s": batch_size / med, "videos_per_s_min": batch_size / max(times),
            "videos_per_s_max": batch_size / min(times), "batch_time_s": med,
            "spread": (max(times) - min(times)) / med, "repeats": len(times), "times_s": list(times)}


def paired_ratio(base_times: list[float], times: list[float]) -> dict:
    """Speed relative to a baseline timed in the same rounds (`time_interleaved`): per round,
    baseline time / this time. `median`: their median; `geomean` and `ci95`: the geometric mean
    and its 95% confidence interval (Student's t on the log ratios, scipy.stats), which a drift in
    load that slows both alike within a round leaves unbiased. n rounds; ci95 None for n < 2."""
    import math

    from scipy import stats as st

    logs = [math.log(b / t) for b, t in zip(base_times, times)]
    n, m = len(logs), statistics.fmean(logs)
    ci = None
    if n >= 2:
        half = st.t.ppf(0.975, n - 1) * statistics.stdev(logs) / math.sqrt(n)
        ci = [math.exp(m - half), math.exp(m + half)]
    return {"median": statistics.median(b / t for b, t in zip(base_times, times)), "geomean": math.exp(m),
            "ci95": ci, "n": n}


def peak_memory(step, dev: torch.device) -> tuple[int | None, str]:
    """Memory one more call of `step` needs beyond what is already held (weights, input, other
    models timed beside it): on CUDA the rise of `max_memory_allocated` over `memory_allocated`
    before the call; on Linux CPUs the rise of the process's peak RSS over its RSS before the call
    (the peak is reset through /proc/self/clear_refs); else None."""
    if dev.type == "cuda":
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        step()
        _sync(dev)
        return torch.cuda.max_memory_allocated(dev) - before, "cuda_max_memory_allocated_delta"
    try:
        Path("/proc/self/clear_refs").write_text("5")

        def kb(field):
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
            return int(line.split()[1]) * 1024
        before = kb("VmRSS:")
        step()
        return max(0, kb("VmHWM:") - before), "cpu_rss_delta"
    except (OSError, StopIteration, ValueError):
        return None, "n/a"


def compare_throughput(models: dict[str, torch.nn.Module], frames: int, input_size: int = 224,
                       batch_size: int = 16, device: str = "auto", warmup: int = 3, repeats: int = 10,
                       amp: str = "none", channels_last: bool = False, train: bool = False,
                       compile: bool | str = False, memory: bool = False, breakdown_steps: int = 0) -> dict[str, dict]:
    """Videos/s of several models measured in turns in one run (see `time_interleaved`); with
    `memory`, also the peak memory of one more call of each (see `peak_memory`); with
    `breakdown_steps`, where an eager step's time goes (`breakdown`)."""
    dev = resolve_device(device)
    steps, prepared = {}, {}
    for name, m in models.items():
        m = prepared[name] = prepare(m, dev, train, channels_last, compile)
        x = random_clips(m, batch_size, frames, input_size, dev, channels_last)
        steps[name] = make_step(m, x, train, amp, getattr(models[name], "num_classes", None))
    times = time_interleaved(steps, dev, warmup, repeats)
    res = {name: {**summarize(t, batch_size), "batch_size": batch_size, "warmup": warmup, "amp": amp,
                  "channels_last": channels_last, "compile": compile, "train": train,
                  "device": device_name(dev)} for name, t in times.items()}
    if memory:
        for name, step in steps.items():
            res[name]["peak_memory_bytes"], res[name]["peak_memory_kind"] = peak_memory(step, dev)
    if breakdown_steps and not compile:
        for name, step in steps.items():
            res[name]["breakdown"] = breakdown(step, prepared[name], dev, breakdown_steps)
    return res


# ---- where the time goes ----------------------------------------------------------------------

def _temporal_types() -> tuple[type, ...]:
    from stm_lib.models.relatives import STHConv, TemporalConv
    from stm_lib.models.successors import MTA, TAM, LongTermTDM, MotionExcitation, ShortTermTDM, TemporalInterlace
    from stm_lib.models.temporal import CMM, CSTM, TemporalShift

    return (TemporalShift, CSTM, CMM, STHConv, TemporalConv, MotionExcitation, MTA, LongTermTDM, ShortTermTDM,
            TAM, TemporalInterlace)


def _annotate(model: torch.nn.Module) -> list:
    """Profiler ranges `temporal::<Class>::forward` / `::backward` around every temporal module's
    forward (forward hooks) and backward (full backward hooks: from the gradient of its output
    to the gradient of its input). Returns the hook handles (remove them after)."""
    from torch.autograd.profiler import record_function

    handles, open_ranges = [], {}

    def enter(key, label):
        rf = record_function(label)
        rf.__enter__()
        open_ranges[key] = rf

    def leave(key):
        rf = open_ranges.pop(key, None)
        if rf is not None:
            rf.__exit__(None, None, None)

    for m in model.modules():
        if not isinstance(m, _temporal_types()):
            continue
        label = f"temporal::{type(m).__name__}"
        handles += [m.register_forward_pre_hook(lambda mod, a, label=label: enter((id(mod), 0), label + "::forward")),
                    m.register_forward_hook(lambda mod, a, o: leave((id(mod), 0)))]
        if type(m).__name__ != "ShortTermTDM":    # its input, the clip, needs no gradient: no backward to time
            handles += [m.register_full_backward_pre_hook(
                            lambda mod, g, label=label: enter((id(mod), 1), label + "::backward")),
                        m.register_full_backward_hook(lambda mod, gi, go: leave((id(mod), 1)))]
    handles.append(_Closer(open_ranges, leave))
    return handles


class _Closer:
    """A 'handle' whose remove() closes any range left open (a backward that never reached a
    module's input)."""

    def __init__(self, open_ranges, leave):
        self.open_ranges, self.leave = open_ranges, leave

    def remove(self):
        for key in list(self.open_ranges):
            self.leave(key)


KINDS = (("convolution", ("conv",)), ("batch_norm", ("batch_norm",)), ("matmul", ("mm", "matmul", "linear")))


def breakdown(step, model: torch.nn.Module, dev: torch.device, steps: int = 2) -> dict:
    """Where `step`'s time goes, per step, from torch.profiler over `steps` calls (after one
    untimed call): `total_ms` (the sum of every op's self time: busy CPU time, or on a GPU the
    kernels' time), `by_kind_ms` (self time of the convolutions (forward and backward, those
    inside the temporal modules included), batch norm, matmuls, and everything else), and
    `temporal_ms` (each temporal module class's forward and backward, inclusive: on a GPU its
    kernels' time, on a CPU its wall time). Eager models only (hooks do not fire in a compiled
    graph)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = dev.type == "cuda"
    handles = _annotate(model)
    try:
        step()
        _sync(dev)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(steps):
                step()
            _sync(dev)
    finally:
        for h in handles:
            h.remove()
    kinds = {k: 0.0 for k, _ in KINDS} | {"other": 0.0}
    temporal: dict[str, dict[str, float]] = {}
    total = 0.0
    for e in prof.key_averages():
        own = (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e3 / steps
        total += own
        if e.key.startswith("temporal::"):
            _, cls, phase = e.key.split("::")
            incl = (e.device_time_total if cuda else e.cpu_time_total) / 1e3 / steps
            temporal.setdefault(cls, {"forward": 0.0, "backward": 0.0})[phase] += incl
            kinds["other"] += own
            continue
        name = e.key.lower()
        kind = next((k for k, pats in KINDS if name.startswith("aten::") and any(p in name for p in pats)), "other")
        kinds[kind] += own
    return {"steps": steps, "clock": "device" if cuda else "cpu", "total_ms": total, "by_kind_ms": kinds,
            "temporal_ms": temporal}


def measure_throughput(model: torch.nn.Module, frames: int, input_size: int = 224, batch_size: int = 16,
                       device: str = "auto", warmup: int = 3, repeats: int = 10,
                       amp: str = "none", channels_last: bool = False) -> dict:
    """Videos/s of the forward pass on random input already on the device: the median of
    `repeats` timed batches after `warmup` untimed ones."""
    return compare_throughput({"m": model}, frames, input_size, batch_size, device, warmup, repeats,
                              amp, channels_last)["m"]


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def profile_model(name: str, frames: int = 8, num_classes: int = 174, input_size: int = 224,
                  width_mult: float = 1.0) -> dict:
    """Params and FLOPs of one registry variant (what Tables 8 and 9 report)."""
    model = build_model(ModelConfig(name=name, frames=frames, num_classes=num_classes, width_mult=width_mult))
    return {"model": name, "frames": frames, "num_classes": num_classes, "input_size": input_size,
            "width_mult": width_mult, "params": count_params(model),
            "flops": count_flops(model, frames, input_size)}


def _cmd_profile(args) -> int:
    get_variant(args.model)   # fail early on an unknown name
    res = profile_model(args.model, args.frames, args.num_classes, args.input_size, args.width_mult)
    print(f"{args.model}  frames={args.frames}  classes={args.num_classes}  input={args.input_size}x{args.input_size}"
          f"  width={args.width_mult}")
    print(f"  params  {res['params'] / 1e6:.2f}M ({res['params']:,})")
    print(f"  FLOPs   {res['flops'] / 1e9:.2f}G ({res['flops']:,}; fvcore, 1 multiply-add = 1 flop)")
    if args.throughput:
        names = list(dict.fromkeys([args.model, "tsn"]))     # the baseline in the same run, in turns
        models = {n: build_model(ModelConfig(name=n, frames=args.frames, num_classes=args.num_classes,
                                             width_mult=args.width_mult)) for n in names}
        speeds = compare_throughput(models, args.frames, args.input_size, args.batch_size, args.device,
                                    args.warmup, args.repeats, args.amp, args.channels_last)
        for name, sp in speeds.items():
            print(f"  speed   {name}: {sp['videos_per_s']:.2f} videos/s (batch {args.batch_size}, median of "
                  f"{args.repeats}, range {sp['videos_per_s_min']:.2f}-{sp['videos_per_s_max']:.2f}, {sp['device']})")
        ratio = speeds[args.model]["videos_per_s"] / speeds["tsn"]["videos_per_s"]
        # the same ratio round by round (each round times both back to back): robust to load drifts
        paired = paired_ratio(speeds["tsn"]["times_s"], speeds[args.model]["times_s"])["median"]
        print(f"  ratio   {args.model} / tsn = {ratio:.3f} (measured in turns in this run; "
              f"median of per-round ratios {paired:.3f})")
        res.update(videos_per_s=speeds[args.model]["videos_per_s"], tsn_videos_per_s=speeds["tsn"]["videos_per_s"],
                   speed_ratio_vs_tsn=ratio, speed_ratio_vs_tsn_paired=paired, throughput=speeds)
    if args.json:
        print(json.dumps(res))
    return 0


def _cmd_models(args) -> int:
    for name in list_models():
        print(f"{name:15s} {get_variant(name).about}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("profile", help="parameters, FLOPs and throughput of a model variant",
                       description="Count parameters and FLOPs (fvcore: 1 multiply-add = 1 flop, the paper's "
                                   "convention) and optionally measure videos/s next to the TSN baseline.")
    p.add_argument("model", help="registry name (see `stm models`)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=174)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--throughput", action="store_true", help="measure videos/s (and TSN's, and the ratio)")
    p.add_argument("--batch-size", type=int, default=16, help="throughput batch (paper: 16)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--channels-last", action="store_true")
    p.set_defaults(func=_cmd_profile)
    m = sub.add_parser("models", help="list the registry's model variants")
    m.set_defaults(func=_cmd_models)
