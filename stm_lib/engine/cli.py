"""`stm train`, `stm evaluate`, `stm predict`.

Precedence for training options: the dataclass defaults (the paper's recipe) < a YAML file
(`--config`, or the run folder's config.yaml when resuming) < flags given on the command line.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from stm_lib.config import COMPILE_MODES, Config, DataConfig, ModelConfig, TrainConfig, load_yaml, safe_load

LR_HELP = """\
learning rate, used as is at any batch size (default 0.01: the paper's lr at batch 64 for 8
frames and at batch 32 for 16 frames, section 4.2). --lr-scale reads it as the lr at batch 64
and scales it linearly (LR * batch-size / 64), a choice for other recipes, not the paper's."""

EPILOG = """\
examples:
  stm train --dataset proxy-temporal --model stm --frames 8 --input-size 64 --width-mult 0.25 \\
            --epochs 8 --batch-size 16 --lr 0.02 --out runs/proxy-stm
  stm train --out runs/proxy-stm --resume           # continue a killed run (config from the folder)
  torchrun --nproc_per_node 8 -m stm_lib.cli train --dataset ssv1 --data-root DIR --batch-size 64 --out RUN
  torchrun --nproc_per_node 8 -m stm_lib.cli train --config run.yaml   # every field, from one file
                                            # (stm_lib.engine.distributed.write_config / torchrun_command)
  torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id JOB \\
           --max-restarts 3 -m stm_lib.cli train ... --resume-or-start

--batch-size is the GLOBAL batch (split evenly over torchrun processes), so lr semantics and the
optimisation do not depend on the number of GPUs. The run folder gets config.yaml, command.txt,
run.json (provenance), metrics.csv / metrics.jsonl, checkpoint_last.pt and checkpoint_best.pt."""

# Every Config field is a `stm train` flag named after it (tests/test_config.py fails otherwise);
# the only renames are below. Parsed values of None mean "not given".
_RENAMED = {("model", "name"): "model"}
_MAP = {_RENAMED.get((sec, f.name), f.name): (sec, f.name)   # flag dest -> (section, field)
        for sec, klass in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))
        for f in fields(klass)}


def _steps(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 30,40,45, got '{s}'")


def _key_value(s: str) -> tuple[str, object]:
    """`--block cmm_reduction=8`: a BlockSpec field (or where / stages) and a YAML value."""
    import yaml

    key, eq, value = s.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE like cmm_reduction=8, got '{s}'")
    try:
        return key.strip(), safe_load(value)   # the alias and depth limits of config files
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value in '{s}'") from None


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (paper 4.2 recipe; CPU, GPU, torchrun/DDP)",
                       description="Train a model with the paper's recipe (section 4.2) as defaults.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    B = argparse.BooleanOptionalAction
    p.add_argument("--config", help="YAML file with sections model/data/train (flags override it)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="registry variant: tsn tsm cstm cmm stm stm-concat stm-stage2 ... (default stm)")
    g.add_argument("--frames", type=int, help="T, segments per clip (default 8)")
    g.add_argument("--num-classes", type=int, help="0 (default on the command line) = from the dataset; "
                   "another value that disagrees with the dataset is an error")
    g.add_argument("--width-mult", type=float, help="channel multiplier (0.25 for CPU proxies; default 1)")
    g.add_argument("--dropout", type=float, help="dropout before fc (default 0.5)")
    g.add_argument("--pretrained", help="ImageNet ResNet-50 weights: a state-dict path or 'torchvision'")
    g.add_argument("--block", type=_key_value, action="append", metavar="FIELD=VALUE",
                   help="ablation knob, repeatable: a BlockSpec field of the variant (cmm_reduction=8, "
                        "fusion=concat, cstm=ordinary, ...) or where=first / stages=[3,4]")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="ssv1 ssv2 jester kinetics400 ucf101 hmdb51 list proxy-temporal proxy-scene")
    g.add_argument("--data-root", help="dataset folder")
    g.add_argument("--split", type=int, help="UCF-101 / HMDB-51 split (1-3)")
    g.add_argument("--list-file", help="TSM list file for --dataset list")
    g.add_argument("--val-list-file", help="validation list for --dataset list")
    g.add_argument("--decoder", choices=["auto", "decord", "pyav"], help="video decoder (default auto)")
    g.add_argument("--flow-root", help="optical flow fields for --model st-resnet (from `stm data flow`)")
    g.add_argument("--flow-stack", type=int, help="L, flow fields stacked per frame (default 10)")
    g.add_argument("--input-size", type=int, help="network input side (default 224)")
    g.add_argument("--scale-size", type=int, help="shorter side before cropping (0 = input*256/224)")
    g.add_argument("--flip", action=B, default=None, help="horizontal flip (default per dataset)")
    g.add_argument("--num-workers", type=int, help="data loader workers per process (default 2)")
    g.add_argument("--test-clips", type=int, help="recorded in the run's config only: per-epoch validation is "
                   "1 clip x 1 crop; `stm evaluate --clips` sets the test views")
    g.add_argument("--test-crops", type=int, choices=[1, 3], help="recorded only, like --test-clips (`stm evaluate --crops`)")
    g.add_argument("--proxy-videos", type=int, help=f"proxy datasets: clips generated (default {DataConfig.proxy_videos}; 20%% val; "
                   "the book's tables use 1000)")
    g.add_argument("--proxy-classes", type=int, help="proxy datasets: classes (default 10)")
    g.add_argument("--proxy-frames", type=int, help="proxy datasets: frames per clip (default 16)")
    g.add_argument("--proxy-resolution", type=int, help="proxy datasets: frame side in px (default 64)")
    g.add_argument("--proxy-seed", type=int, help="proxy datasets: generator seed (default 0)")
    g.add_argument("--proxy-val-clips", type=int, help="proxy datasets: validation clips (default 0 = a fifth)")
    g.add_argument("--proxy-cache", help="proxy datasets: cache folder (default ~/.cache/stm/proxy)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="default 50")
    g.add_argument("--batch-size", type=int, help="GLOBAL batch over all processes (default 64)")
    g.add_argument("--lr", type=float, help=LR_HELP)
    g.add_argument("--lr-scale", action=B, default=None, help="read --lr as the lr at batch 64 and scale it linearly (a choice for other "
                   "recipes; the paper keeps 0.01 at batch 64 and 32)")
    g.add_argument("--lr-steps", type=_steps, help="epochs where lr x0.1 (default 30,40,45 at 50 epochs; "
                   "for another --epochs the same fractions, e.g. 8 epochs -> 5,6,7)")
    g.add_argument("--lr-schedule", choices=["step", "cosine"], help="default step (the paper)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up (default 0)")
    g.add_argument("--momentum", type=float, help="default 0.9")
    g.add_argument("--weight-decay", type=float, help="default 5e-4 (not on BN and biases)")
    g.add_argument("--clip-grad", type=float, help="gradient norm clip (default 20; 0 = off)")
    g.add_argument("--fc-lr-mult", type=float, help="fc weight lr multiplier, fc bias twice it (default: 5 "
                   "with --pretrained, TSM's fine-tuning rule; 1 from scratch)")
    g = p.add_argument_group("hardware and run")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision (default none)")
    g.add_argument("--channels-last", action=B, default=None)
    g.add_argument("--compile", action=B, default=None, help="torch.compile the model")
    g.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile mode with --compile (default 'default'; reduce-overhead: CUDA graphs)")
    g.add_argument("--sync-bn", action=B, default=None, help="SyncBatchNorm under DDP on GPUs (default off: per-GPU BN as the paper)")
    g.add_argument("--device", help="auto (default) | cpu | cuda")
    g.add_argument("--deterministic", action=B, default=None, help="torch deterministic algorithms")
    g.add_argument("--seed", type=int)
    g.add_argument("--out", help="run folder (default runs/train)")
    g.add_argument("--resume", action=B, default=None,
                   help="continue the run in --out from checkpoint_last.pt; refused when there is none, unless "
                        "--config or the folder's config.yaml gives the full run")
    g.add_argument("--resume-or-start", action="store_true",
                   help="resume if --out holds a checkpoint, else start the run as configured (restart loops)")
    g.add_argument("--max-skipped", type=float, help="stop when more than this share of an epoch's clips fail "
                   "to load (default 0.1; 1 = never)")
    g.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (smoke runs)")
    g.add_argument("--checkpoint-every-steps", type=int, help="also checkpoint mid-epoch every N steps")
    g.add_argument("--tensorboard", action=B, default=None, help="TensorBoard events when installed (default on)")
    g.add_argument("--progress", action=B, default=None, help="progress bar (default on, terminals only)")
    p.set_defaults(func=cmd_train)


def config_from_args(args) -> Config:
    """Defaults < YAML < explicit flags (`--block` entries are merged into the YAML's block);
    num_classes and lr_steps, when set nowhere, follow the dataset and the epoch count."""
    given = {k for k in _MAP if getattr(args, k, None) is not None}
    yaml_path = args.config
    if yaml_path is None and args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
        yaml_path = Path(args.out) / "config.yaml"  # resuming: the run's own config
    from_yaml: dict = {}
    if yaml_path:
        import yaml

        try:
            cfg = load_yaml(yaml_path)
            from_yaml = safe_load(Path(yaml_path).read_text()) or {}
        except yaml.YAMLError as e:  # one line naming the file and line, not a traceback
            mark = getattr(e, "problem_mark", None)
            where = f"{yaml_path}:{mark.line + 1}" if mark else str(yaml_path)
            raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{yaml_path}: not UTF-8 text (byte {e.start})") from None
        except (TypeError, AttributeError) as e:  # e.g. `model: 3`
            raise ValueError(f"{yaml_path}: expected sections model/data/train, each a mapping of options "
                             f"({type(e).__name__}: {e})") from None
    else:
        cfg = Config()
    in_yaml = lambda sec, k: k in (from_yaml.get(sec) or {})  # noqa: E731
    if not in_yaml("model", "num_classes"):
        cfg = cfg.update("model", num_classes=0)  # not given anywhere: the dataset decides
    for k in given:
        sec, field = _MAP[k]
        value = getattr(args, k)
        if k == "block":
            value = {**cfg.model.block, **dict(value)}
        cfg = cfg.update(sec, **{field: value})
    if "lr_steps" not in given and not in_yaml("train", "lr_steps"):
        from stm_lib.engine.optim import paper_lr_steps

        cfg = cfg.update("train", lr_steps=paper_lr_steps(cfg.train.epochs))
    from stm_lib.models.registry import resolve_variant

    resolve_variant(cfg.model.name, cfg.model.block)  # a bad name or block knob: one error, before any work
    return cfg


def cmd_train(args) -> int:
    from stm_lib.engine.train import NonFiniteLossError, train

    if args.resume_or_start:
        args.resume = True
    cfg = config_from_args(args)
    _check_resumable(args, Path(cfg.train.out))
    try:
        out = train(cfg, command=shlex.join(["stm"] + sys.argv[1:]))
    except NonFiniteLossError as e:
        print(f"stm train: error: {e}", file=sys.stderr)
        return 3
    except OSError as e:   # stm_lib.cli prints a full disk or read-only --out in one line; say what is kept
        from stm_lib.engine.checkpoint import LAST

        last = Path(cfg.train.out) / LAST
        if last.is_file():
            e.add_note(f"{last} still holds the last good checkpoint: free space (or fix the folder), then --resume")
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {out}")
    return 0


def _check_resumable(args, out: Path) -> None:
    """`--resume` on a folder without a checkpoint (a typo) must not start a full-size run made
    of defaults. It may start when the run is fully described: --config, the folder's own
    config.yaml (killed before its first checkpoint), or an explicit --resume-or-start."""
    from stm_lib.engine.checkpoint import LAST

    if not args.resume or args.resume_or_start or (out / LAST).is_file():
        return
    if args.config or (out / "config.yaml").is_file():
        return
    what = "does not exist" if not out.exists() else f"holds no {LAST}"
    raise ValueError(f"--resume: {out} {what}, so there is nothing to resume (is the folder right?); "
                     "to start a new run there use --resume-or-start, or give the run's --config")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="test a trained run (1x1 or N-clip x 3-crop)",
                       description="Evaluate a run folder. 1 clip x 1 crop = Table 9 protocol; "
                                   "--clips 10 --crops 3 = the accuracy tables (softmax averaged).")
    p.add_argument("--run", required=True, help="run folder written by `stm train --out`")
    p.add_argument("--clips", type=int, default=1, help="temporal clips per video (paper tables: 10)")
    p.add_argument("--crops", type=int, default=1, choices=[1, 3], help="1 centre crop or 3 crops")
    p.add_argument("--split", default="val")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a path")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, help="videos per batch (default train batch / views)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--data-root", help="override the run's dataset folder")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--json", action="store_true", help="last line of output: a JSON object")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from stm_lib.engine.evaluate import dumps_line, evaluate, format_result

    r = evaluate(args.run, clips=args.clips, crops=args.crops, split=args.split, device=args.device,
                 checkpoint=args.checkpoint, batch_size=args.batch_size, num_workers=args.num_workers,
                 data_root=args.data_root, amp=args.amp, progress=not args.json)
    print(format_result(r))
    if args.json:
        print(dumps_line(r))
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes for a video file",
                       description="Classify one video file (or frames folder) with a trained run.")
    p.add_argument("video")
    p.add_argument("--run", required=True, help="run folder written by `stm train --out`")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--clips", type=int, default=1)
    p.add_argument("--crops", type=int, default=1, choices=[1, 3])
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="last line of output: a JSON object")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from stm_lib.engine.evaluate import dumps_line, predict

    top = predict(args.video, args.run, topk=args.topk, clips=args.clips, crops=args.crops,
                  device=args.device, checkpoint=args.checkpoint)
    for i, (name, p) in enumerate(top, 1):
        print(f"{i}. {name}  {p:.4f}")
    if args.json:
        print(dumps_line({"video": str(args.video), "top": [{"class": n, "prob": p} for n, p in top]}))
    return 0


def register(subparsers) -> None:
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_predict(subparsers)
