"""`stm data check | bench | flow | make-proxy | pipeline-bench`."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="datasets: check a dataset, benchmark loading, make a proxy")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    c = sub.add_parser("check", help="read every annotation, open every clip, report problems")
    c.add_argument("--dataset", required=True, help="ssv1 ssv2 jester kinetics400 ucf101 hmdb51 list proxy-temporal proxy-scene")
    c.add_argument("--data-root", help="the dataset's folder, in its official layout (proxies: default "
                   "the cached default proxy, generated if missing)")
    c.add_argument("--list-file", help="`list` dataset: train list (TSM lines 'folder num_frames label')")
    c.add_argument("--val-list-file", help="`list` dataset: validation list")
    c.add_argument("--workers", type=int, default=4, help="clips opened in parallel (threads)")
    c.add_argument("--min-frames", type=int, default=8, help="report clips shorter than this")
    c.add_argument("--decoder", default="auto", choices=("auto", "decord", "pyav"))
    c.add_argument("--full", action="store_true", help="decode every frame, not just first/middle/last")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=_check)

    b = sub.add_parser("bench", help="decoded clips/s for JPEG frames and video files")
    b.add_argument("--frames", type=int, default=8, help="frames sampled per clip (T)")
    b.add_argument("--input-size", type=int, default=224)
    b.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    b.add_argument("--clips", type=int, default=8, help="fixture clips per format")
    b.add_argument("--clip-frames", type=int, default=48, help="frames per fixture clip")
    b.add_argument("--repeats", type=int, default=3, help="passes over the fixture clips per measurement")
    b.add_argument("--train-rate", type=float, help="clips/s the trainer consumes (e.g. from `stm bench`): "
                   "report the workers each format needs to keep up")
    b.add_argument("--out", help="write results with provenance to this JSON file")
    b.set_defaults(func=_bench)

    f = sub.add_parser("flow", help="TV-L1 optical flow of every clip, for the two-stream ST-ResNet",
                       description="Writes <out>/<clip id>/flow_x_00001.jpg, flow_y_00001.jpg, ... (the "
                                   "TSN/mmaction layout; +-20 px in 8 bits). Clips already done are kept, so "
                                   "an interrupted run resumes. Then: stm train --model st-resnet --flow-root OUT")
    f.add_argument("--dataset", required=True, help="ssv1 ssv2 jester kinetics400 ucf101 hmdb51 list proxy-temporal proxy-scene")
    f.add_argument("--data-root", help="the dataset's folder (proxies: the cached default proxy)")
    f.add_argument("--out", required=True, help="flow root to write")
    f.add_argument("--splits", nargs="+", default=["train", "val"], choices=("train", "val"))
    f.add_argument("--list-file", help="`list` dataset: train list")
    f.add_argument("--val-list-file", help="`list` dataset: validation list")
    f.add_argument("--max-side", type=int, default=0, help="compute flow at most this many px wide (0: full size)")
    f.add_argument("--limit", type=int, default=0, help="only the first N clips of each annotation list (0: all)")
    f.add_argument("--jobs", type=int, default=0, help="clips extracted at a time, one core each (0: one per core)")
    f.set_defaults(func=_flow)

    pb = sub.add_parser("pipeline-bench", help="engine training clips/s over a bare forward/backward loop",
                        description="Alternates one short epoch of `stm train` with a bare forward + backward + SGD "
                                    "loop on the same model and an in-memory batch; prints both medians and their "
                                    "ratio (the pipeline efficiency; issue 10 asks >= 0.9). Defaults: the book's "
                                    "proxy setting.")
    pb.add_argument("--model", default="stm")
    pb.add_argument("--frames", type=int, default=8)
    pb.add_argument("--width-mult", type=float, default=0.25)
    pb.add_argument("--input-size", type=int, default=64)
    pb.add_argument("--batch-size", type=int, default=16)
    pb.add_argument("--num-workers", type=int, default=2, help="as --num-workers of stm train (decoded proxies "
                    "are always read in-process)")
    pb.add_argument("--proxy-videos", type=int, default=1000)
    pb.add_argument("--proxy-classes", type=int, default=10)
    pb.add_argument("--proxy-frames", type=int, default=16)
    pb.add_argument("--proxy-resolution", type=int, default=64)
    pb.add_argument("--proxy-cache", help="proxy cache folder (default ~/.cache/stm/proxy or $STM_PROXY_CACHE)")
    pb.add_argument("--steps", type=int, default=20, help="training steps per repeat")
    pb.add_argument("--repeats", type=int, default=3, help="engine/bare pairs (medians reported)")
    pb.add_argument("--side-by-side", action="store_true", help="also compare 1 run x 2 threads with 2 runs x 1 "
                    "thread (subprocesses, engine only)")
    pb.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
    pb.add_argument("--json", action="store_true", help="print the result as one JSON line")
    pb.add_argument("--out", help="write the result with provenance to this JSON file (e.g. runs/pipeline_bench/"
                    "proxy.json)")
    pb.set_defaults(func=_pipeline_bench)

    m = sub.add_parser("make-proxy", help="generate a proxy dataset in the Something-Something v1 layout")
    m.add_argument("--kind", required=True, choices=("temporal", "scene"))
    m.add_argument("--out", required=True, help="output folder (written atomically)")
    from stm_lib.config import DataConfig   # the count `stm train --dataset proxy-*` generates

    m.add_argument("--videos", type=int, default=DataConfig.proxy_videos)
    m.add_argument("--classes", type=int, default=10)
    m.add_argument("--frames", type=int, default=16)
    m.add_argument("--resolution", type=int, default=64)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=_make_proxy)


def _root(dataset: str, data_root, progress: bool):
    """--data-root, or for a proxy name without it the cached default proxy (what training uses)."""
    from stm_lib.data.datasets import PROXIES

    if data_root is None and dataset in PROXIES:
        from stm_lib.config import DataConfig
        from stm_lib.data import proxy

        return proxy.ensure_proxy(dataset.split("-", 1)[1], DataConfig(dataset=dataset), progress=progress)
    return data_root


def _check(args) -> int:
    from stm_lib.data.check import check_dataset, format_report, report_json

    root = _root(args.dataset, args.data_root, not args.json)
    rep = check_dataset(args.dataset, root, workers=args.workers, min_frames=args.min_frames,
                        list_file=args.list_file, val_list_file=args.val_list_file, backend=args.decoder,
                        full=args.full, progress=not args.json and sys.stderr.isatty())
    print(report_json(rep) if args.json else format_report(rep))
    return 0 if rep.hard_errors == 0 else 1


def _flow(args) -> int:
    from stm_lib.data import flow

    root = _root(args.dataset, args.data_root, True)
    t0 = time.perf_counter()
    res = flow.extract_listed(args.dataset, root, args.out, args.splits, args.list_file, args.val_list_file,
                              args.limit, args.max_side, progress=sys.stderr.isatty(),
                              jobs=args.jobs if args.jobs > 0 else (os.cpu_count() or 1))
    print(f"optical flow into {args.out}: {res['extracted']} clips extracted, {res['already_there']} already there, "
          f"{len(res['failed'])} failed ({time.perf_counter() - t0:.1f} s)")
    for vid, why in res["failed"]:
        print(f"  failed {vid}: {why}")
    return 0 if not res["failed"] else 1


def _bench(args) -> int:
    from stm_lib.data.bench import provenance, run_bench

    t0 = time.perf_counter()
    print(f"stm data bench: T={args.frames}, {args.input_size}x{args.input_size}, train transforms, batch 4")
    res = run_bench(args.frames, args.input_size, tuple(args.workers), args.clips, args.clip_frames, args.repeats,
                    train_rate=args.train_rate)
    if args.out:
        res["provenance"] = provenance(sys.argv[1:], time.perf_counter() - t0)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _pipeline_bench(args) -> int:
    from stm_lib import provenance as P
    from stm_lib.engine import pipeline_bench as pb

    if args.steps < 1 or args.repeats < 1:
        print("stm data pipeline-bench: --steps and --repeats must be at least 1", file=sys.stderr)
        return 2
    t0, start, git = time.time(), P.now(), P.git_state()
    cfg = pb.proxy_config(args.proxy_videos, args.proxy_classes, args.proxy_frames, args.proxy_resolution,
                          args.model, args.frames, args.width_mult, args.input_size, args.batch_size,
                          num_workers=args.num_workers, cache=args.proxy_cache)
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    res = pb.run(cfg, args.steps, args.repeats, log=log, engine_only=args.engine_only)
    if args.side_by_side and not args.engine_only:
        argv = [a for a in sys.argv[sys.argv.index("pipeline-bench") + 1:] if a not in ("--side-by-side", "--json")]
        if "--out" in argv:
            i = argv.index("--out")
            del argv[i:i + 2]
        res["side_by_side"] = pb.side_by_side(argv)
        for k, v in res["side_by_side"].items():
            log(f"side by side {k}: total {v['total_clips_per_s']:.2f} clips/s (each {v['clips_per_s_each']})")
    if args.json:
        print(json.dumps(res))
    elif not args.engine_only:
        print(f"engine {res['engine_clips_per_s']:.2f} clips/s, bare loop {res['bare_clips_per_s']:.2f} clips/s "
              f"(medians), ratio {res['ratio']:.3f} (median of {args.repeats} engine repeats, each over the "
              f"bare repeats around it; {res['torch_threads']} torch threads)")
    if args.out:
        params = {k: v for k, v in vars(args).items() if k != "func"}
        res["provenance"] = P.record(parameters=params, seed=0, start=start, seconds=time.time() - t0, git=git)
        from stm_lib.io import atomic_write_json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out), res)
        log(f"wrote {args.out}")
    return 0


def _make_proxy(args) -> int:
    from stm_lib.data.proxy import make_proxy

    out = make_proxy(args.kind, args.out, args.videos, args.classes, args.frames, args.resolution, args.seed,
                     progress=sys.stderr.isatty())
    print(out)
    return 0
