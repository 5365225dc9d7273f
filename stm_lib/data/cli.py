"""`stm data check | bench | make-proxy`."""
from __future__ import annotations

import json
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
    f.set_defaults(func=_flow)

    m = sub.add_parser("make-proxy", help="generate a proxy dataset in the Something-Something v1 layout")
    m.add_argument("--kind", required=True, choices=("temporal", "scene"))
    m.add_argument("--out", required=True, help="output folder (written atomically)")
    m.add_argument("--videos", type=int, default=1000)
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
    import numpy as np

    from stm_lib.data import decode, flow
    from stm_lib.data.check import annotation_lists
    from stm_lib.data.datasets import read_annotations

    root = _root(args.dataset, args.data_root, True)
    reader, lists = annotation_lists(args.dataset, args.val_list_file)
    samples = {}  # every clip of every fold once (HMDB-51's folds each leave some clips out)
    for _, split, fold in lists:
        if split in args.splits:
            _, ss = read_annotations(reader, root, split, fold, args.list_file, args.val_list_file)
            for s in ss[:args.limit] if args.limit else ss:
                samples.setdefault(s.id, s)
    t0 = time.perf_counter()
    res = flow.extract_dataset(list(samples.values()), args.out,
                               lambda s: decode.read_clip(s.path, lambda n: np.arange(n))[0],
                               max_side=args.max_side, progress=sys.stderr.isatty())
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


def _make_proxy(args) -> int:
    from stm_lib.data.proxy import make_proxy

    out = make_proxy(args.kind, args.out, args.videos, args.classes, args.frames, args.resolution, args.seed,
                     progress=sys.stderr.isatty())
    print(out)
    return 0
