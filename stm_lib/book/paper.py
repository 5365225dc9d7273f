"""The paper's own figures, typed once from Jiang et al., ICCV 2019 (Tables 1-9). Nothing else in
the project types a number by hand: every measured value comes from a run in `runs/`.

Each row: `id` (unique in its table), `setting` (as printed in the paper), `model` (a registry
variant when this project can train it, else None = another method), `frames`, and the paper's
columns prefixed `paper_`. Accuracies are percentages, params in millions, FLOPs in G.
"""
from __future__ import annotations

CAPTIONS = {
    "1": "Performance of the STM on the Something-Something v1 and v2 datasets compared with the state-of-the-art methods.",
    "2": "Performance of the STM on the Jester compared with the state-of-the-art methods.",
    "3": "Performance of the STM on the Kinetics-400 dataset compared with the state-of-the-art methods.",
    "4": "Performance of the STM on UCF-101 and HMDB-51 compared with the state-of-the-art methods.",
    "5": "Impact of two modules: Comparison between CSTM, CMM and STM.",
    "6": "Fusion of two modules: Summation fusion is better.",
    "7": "Location and number of STM block.",
    "8": "Type of temporal convolution in CSTM: Channel-wise temporal convolution yields better performance.",
    "9": "Accuracy and model complexity of STM and other state-of-the-art methods on Something-Something V1 "
         "dataset. Single crop STM beats all competing methods with 62 videos per second with 8 frames as "
         "input. Measured on a single NVIDIA GTX 1080TI GPU.",
}


def _rows(keys: tuple[str, ...], data: list[tuple]) -> list[dict]:
    return [dict(zip(keys, values, strict=True)) for values in data]


_T1 = ("id", "setting", "backbone", "pretrain", "model", "frames", "paper_top1", "paper_top5", "paper_test_top1",
       "paper_v2_top1", "paper_v2_top5", "paper_v2_test_top1", "paper_v2_test_top5")

PAPER: dict[str, list[dict]] = {
    # Table 1: SSv1 val top-1/top-5 and test top-1; SSv2 val top-1/top-5 and test top-1/top-5.
    "1": _rows(_T1, [
        ("s3d-g", "S3D-G", "Inception", "ImageNet", None, "64", 48.2, 78.7, 42.0, None, None, None, None),
        ("eco-8", "ECO", "BNInception+3D ResNet-18", "Kinetics", None, "8", 39.6, None, None, None, None, None, None),
        ("eco-16", "ECO", "BNInception+3D ResNet-18", "Kinetics", None, "16", 41.4, None, None, None, None, None, None),
        ("eco-en-lite", "ECO_EN Lite", "BNInception+3D ResNet-18", "Kinetics", None, "92", 46.4, None, 42.3,
         None, None, None, None),
        ("eco-en-lite-2s", "ECO_EN Lite Two-Stream", "BNInception+3D ResNet-18", "Kinetics", None, "92+92", 49.5,
         None, 43.9, None, None, None, None),
        ("i3d", "I3D", "3D ResNet-50", "Kinetics", None, "32", 41.6, 72.2, None, None, None, None, None),
        ("i3d-gcn", "I3D+GCN", "3D ResNet-50", "Kinetics", None, "32", 43.4, 75.1, None, None, None, None, None),
        ("tsn-8", "TSN", "ResNet-50", "Kinetics", "tsn", 8, 19.7, 46.6, None, 27.8, 57.6, None, None),
        ("tsn-16", "TSN", "ResNet-50", "Kinetics", "tsn", 16, 19.9, 47.3, None, 30.0, 60.5, None, None),
        ("trn-ms", "TRN Multiscale", "BNInception", "ImageNet", None, "8", 34.4, None, 33.6, 48.8, 77.64, 50.9, 79.3),
        ("trn-2s", "TRN Two-Stream", "BNInception", "ImageNet", None, "8+8", 42.0, None, 40.7, 55.5, 83.1, 56.2, 83.2),
        ("mfnet-c101", "MFNet-C101", "ResNet-101", "Scratch", None, "10", 43.9, 73.1, 37.5, None, None, None, None),
        # TSM 8 frames is not in Table 1; its SSv1 top-1 comes from Table 9 (single centre crop)
        ("tsm-8", "TSM (Table 9 row)", "ResNet-50", "Kinetics", "tsm", 8, 43.8, None, None, None, None, None, None),
        ("tsm-16", "TSM", "ResNet-50", "Kinetics", "tsm", 16, 44.8, 74.5, None, 58.7, 84.8, 59.9, 85.9),
        ("tsm-2s", "TSM Two-Stream", "ResNet-50", "Kinetics", None, "16+8", 49.6, 79.0, 46.1, 63.5, 88.6, 63.7, 89.5),
        ("stm-8", "STM", "ResNet-50", "ImageNet", "stm", 8, 49.2, 79.3, None, 62.3, 88.8, 61.3, 88.4),
        ("stm-16", "STM", "ResNet-50", "ImageNet", "stm", 16, 50.7, 80.4, 43.1, 64.2, 89.8, 63.5, 89.6),
    ]),
    "2": _rows(("id", "setting", "backbone", "model", "frames", "paper_top1", "paper_top5"), [
        ("tsn-8", "TSN", "ResNet-50", "tsn", 8, 81.0, 99.0),
        ("tsn-16", "TSN", "ResNet-50", "tsn", 16, 82.3, 99.2),
        ("trn-ms", "TRN-Multiscale", "BNInception", None, "8", 95.3, None),
        ("mfnet-c50", "MFNet-C50", "ResNet-50", None, "7", 96.1, 99.7),
        ("tsm-8", "TSM", "ResNet-50", "tsm", 8, 94.4, 99.7),
        ("tsm-16", "TSM", "ResNet-50", "tsm", 16, 95.3, 99.8),
        ("stm-8", "STM", "ResNet-50", "stm", 8, 96.6, 99.9),
        ("stm-16", "STM", "ResNet-50", "stm", 16, 96.7, 99.9),
    ]),
    "3": _rows(("id", "setting", "backbone", "model", "frames", "paper_top1", "paper_top5"), [
        ("stc", "STC", "ResNext101", None, None, 68.7, 88.5),
        ("artnet", "ARTNet", "ResNet-18", None, None, 69.2, 88.3),
        ("eco", "ECO", "BNInception+3D ResNet-18", None, None, 70.7, 89.4),
        ("s3d", "S3D", "Inception", None, None, 72.2, 90.6),
        ("i3d-rgb", "I3D RGB", "3D Inception-v1", None, None, 71.1, 89.3),
        ("i3d-2s", "I3D Two-Stream", "3D Inception-v1", None, None, 74.2, 91.3),
        ("stnet", "StNet", "ResNet-101", None, None, 71.4, None),
        ("disentangling", "Disentangling", "BNInception", None, None, 71.5, 89.9),
        ("r2plus1d-rgb", "R(2+1)D RGB", "ResNet-34", None, None, 72.0, 90.0),
        ("r2plus1d-2s", "R(2+1)D Two-Stream", "ResNet-34", None, None, 73.9, 90.9),
        ("tsm", "TSM", "ResNet-50", "tsm", 8, 72.5, 90.7),
        ("tsn-rgb", "TSN RGB", "BNInception", None, None, 69.1, 88.7),
        ("tsn-2s", "TSN Two-Stream", "BNInception", None, None, 73.9, 91.1),
        # not in the paper's Table 3: the ResNet-50 TSN baseline of this project, for reference
        ("tsn", "TSN (ResNet-50, this project's baseline)", "ResNet-50", "tsn", 8, None, None),
        # the paper trains STM on Kinetics with 16 frames (section 4.4)
        ("stm", "STM", "ResNet-50", "stm", 16, 73.7, 91.6),
    ]),
    "4": _rows(("id", "setting", "backbone", "pretrain", "model", "frames", "paper_top1_ucf101",
                "paper_top1_hmdb51"), [
        ("c3d", "C3D", "3D VGG-11", "Sports-1M", None, None, 82.3, 51.6),
        ("stc", "STC", "ResNet101", "Kinetics", None, None, 93.7, 66.8),
        ("artnet", "ARTNet with TSN", "3D ResNet-18", "Kinetics", None, None, 94.3, 70.9),
        ("eco", "ECO", "BNInception+3D ResNet-18", "Kinetics", None, None, 94.8, 72.4),
        ("i3d-rgb", "I3D RGB", "3D Inception-v1", "ImageNet+Kinetics", None, None, 95.1, 74.3),
        ("i3d-2s", "I3D two-stream", "3D Inception-v1", "ImageNet+Kinetics", None, None, 98.0, 80.7),
        ("tsn", "TSN", "ResNet-50", "ImageNet", "tsn", 8, 86.2, 54.7),
        ("tsn-rgb", "TSN RGB", "BNInception", "ImageNet+Kinetics", None, None, 91.1, None),
        ("tsn-2s", "TSN two-Stream", "BNInception", "ImageNet+Kinetics", None, None, 97.0, None),
        ("tsm", "TSM", "ResNet-50", "ImageNet+Kinetics", "tsm", 8, 94.5, 70.7),
        ("stnet", "StNet", "ResNet50", "ImageNet+Kinetics", None, None, 93.5, None),
        ("disentangling", "Disentangling", "BNInception", "ImageNet+Kinetics", None, None, 95.9, None),
        ("stm", "STM", "ResNet-50", "ImageNet+Kinetics", "stm", 16, 96.2, 72.2),
    ]),
    "5": _rows(("id", "setting", "model", "frames", "paper_top1", "paper_top5"), [
        ("tsn", "TSN", "tsn", 8, 19.7, 46.6),
        ("cstm", "CSTM", "cstm", 8, 47.7, 77.9),
        ("cmm", "CMM", "cmm", 8, 44.1, 74.8),
        ("stm", "STM", "stm", 8, 49.2, 79.3),
    ]),
    "6": _rows(("id", "setting", "model", "frames", "paper_top1", "paper_top5"), [
        ("tsn", "TSN", "tsn", 8, 19.7, 46.6),
        ("stm", "Summation", "stm", 8, 49.2, 79.3),
        ("stm-concat", "Concatenation", "stm-concat", 8, 41.8, 73.2),
    ]),
    "7": _rows(("id", "setting", "stage", "blocks", "model", "frames", "paper_top1", "paper_top5"), [
        # the TSN reference (no STM block) is Table 5's first row
        ("tsn", "TSN (Table 5 row)", "-", 0, "tsn", 8, 19.7, 46.6),
        ("stm-stage2", "stage 2, 1 block", "2", 1, "stm-stage2", 8, 38.7, 70.1),
        ("stm-stage3", "stage 3, 1 block", "3", 1, "stm-stage3", 8, 40.6, 71.6),
        ("stm-stage4", "stage 4, 1 block", "4", 1, "stm-stage4", 8, 41.5, 72.6),
        ("stm-stage5", "stage 5, 1 block", "5", 1, "stm-stage5", 8, 41.5, 71.8),
        ("stm-first4", "stages 2-5, 4 blocks", "2-5", 4, "stm-first4", 8, 47.9, 78.1),
        ("stm", "stages 2-5, 16 blocks", "2-5", 16, "stm", 8, 49.2, 79.3),
    ]),
    "8": _rows(("id", "setting", "model", "frames", "paper_top1", "paper_params_m", "paper_flops_g"), [
        ("cstm", "Channel-wise", "cstm", 8, 47.7, 23.88, 32.93),
        ("cstm-ordinary", "Ordinary", "cstm-ordinary", 8, 46.9, 27.64, 40.59),
    ]),
    "9": _rows(("id", "setting", "model", "frames", "paper_flops_g", "paper_params_m", "paper_videos_per_s",
                "paper_top1"), [
        ("i3d", "I3D", None, 64, 306.0, 28.0, 6.4, 41.6),
        ("eco", "ECO", None, 16, 64.0, 47.5, 46.3, 41.4),
        ("tsm-8", "TSM", "tsm", 8, 32.9, 23.9, 80.4, 43.8),
        ("tsm-16", "TSM", "tsm", 16, 65.8, 23.9, 40.6, 44.8),   # params printed once for both rows
        ("stm-8", "STM", "stm", 8, 33.3, 24.0, 62.0, 47.5),
        ("stm-16", "STM", "stm", 16, 66.5, 24.0, 32.0, 49.8),
    ]),
}

# The orderings the paper's text draws from each table: (a, b) means "a beats b" on top-1.
CLAIMS: dict[str, list[tuple[str, str]]] = {
    "1": [("stm-8", "tsn-8"), ("stm-8", "tsm-8"), ("tsm-8", "tsn-8")],
    "2": [("stm-8", "tsn-8"), ("stm-8", "tsm-8"), ("tsm-8", "tsn-8")],
    "3": [("stm", "tsm")],
    "4": [("stm", "tsm"), ("stm", "tsn")],
    "5": [("cstm", "tsn"), ("cmm", "tsn"), ("stm", "cstm"), ("stm", "cmm"), ("cstm", "cmm")],
    "6": [("stm", "stm-concat"), ("stm-concat", "tsn")],
    "7": [("stm-stage2", "tsn"), ("stm-stage5", "stm-stage2"), ("stm-first4", "stm-stage5"), ("stm", "stm-first4")],
    "8": [("cstm", "cstm-ordinary")],
    "9": [("stm-8", "tsm-8")],
}

def paper_rows(table: str) -> list[dict]:
    """A fresh copy of the paper's rows of `table` ("1".."9")."""
    if table not in PAPER:
        raise ValueError(f"unknown table {table!r}; the paper has tables {', '.join(PAPER)}")
    return [dict(r) for r in PAPER[table]]
