"""`stm data check | bench | make-proxy` through the real command-line entry point."""
from __future__ import annotations

import json

from stm_lib.cli import main
from stm_lib.data.check import probe
from test_data import clip_array, make_ssv1, make_ucf101, write_frames, write_video


def test_check_clean_dataset(tmp_path, capsys):
    root = make_ssv1(tmp_path / "ss")
    assert main(["data", "check", "--dataset", "ssv1", "--data-root", str(root), "--min-frames", "8"]) == 0
    out = capsys.readouterr().out
    assert "split train: 4 clips, 3 classes" in out and "split val: 3 clips, 3 classes" in out
    assert "      2  Pushing something from left to right" in out and out.strip().endswith("OK")


def test_check_reports_missing_corrupt_short_by_id(tmp_path, capsys):
    root = make_ucf101(tmp_path / "ucf")
    vids = sorted((root / "UCF-101").rglob("*.avi"))
    vids[0].unlink()                                                  # missing
    vids[1].write_bytes(b"")                                          # empty
    good = vids[2].read_bytes()
    vids[2].write_bytes(good[: len(good) // 3])                       # truncated
    write_video(vids[3], clip_array(0, 5), "mpeg4")                   # too short for 8 frames
    rc = main(["data", "check", "--dataset", "ucf101", "--data-root", str(root), "--json", "--workers", "2"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 1 and rep["ok"] is False and rep["hard_errors"] == 3
    by_kind = {p["kind"]: p for p in rep["problems"]}
    assert by_kind["missing"]["id"] == vids[0].stem and "does not exist" in by_kind["missing"]["detail"]
    corrupt = {p["id"]: p["detail"] for p in rep["problems"] if p["kind"] == "corrupt"}
    assert "empty file" in corrupt[vids[1].stem] and vids[2].stem in corrupt
    assert by_kind["too-short"]["id"] == vids[3].stem and "5 frames" in by_kind["too-short"]["detail"]
    assert set(rep["splits"]) == {"train1", "val1", "train2", "val2", "train3", "val3"}


def test_check_reports_bad_annotation(tmp_path, capsys):
    root = make_ssv1(tmp_path / "ss")
    (root / "something-something-v1-validation.csv").write_text("1;2;3\n")
    assert main(["data", "check", "--dataset", "ssv1", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "annotation (1):" in out and "something-something-v1-validation.csv:1: expected 2 fields" in out


def test_check_missing_root_is_a_user_error(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "ssv1", "--data-root", str(tmp_path / "nope")]) == 2
    assert "data root not found" in capsys.readouterr().err


def test_check_proxy_without_root_uses_the_cache(tmp_path, capsys, monkeypatch):
    """No --data-root for a proxy: the cached default proxy is found (or generated) and checked."""
    from stm_lib.data import proxy

    asked = []

    def small_proxy(kind, cfg, progress=True):  # the default proxy is 1,000 clips: a small stand-in
        asked.append((kind, cfg.dataset))
        return proxy.make_proxy(kind, tmp_path / "cache" / kind, videos=10, frames=8, resolution=32, progress=False)

    monkeypatch.setattr(proxy, "ensure_proxy", small_proxy)
    assert main(["data", "check", "--dataset", "proxy-temporal", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert asked == [("temporal", "proxy-temporal")] and rep["ok"] is True
    assert rep["root"] == str(tmp_path / "cache" / "temporal")
    assert sum(s["clips"] for s in rep["splits"].values()) == 10


def test_probe_truncated_webm(tmp_path):
    """A cut webm still opens and decodes its first frames; the header gives it away."""
    p = write_video(tmp_path / "v.webm", clip_array(0, 24), "libvpx-vp9")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    status, n, detail = probe(p)
    assert status == "corrupt" and "truncated" in detail
    assert probe(write_frames(tmp_path / "f", clip_array(0, 10)))[0] == "ok"


def test_make_proxy_command(tmp_path, capsys):
    out = tmp_path / "px"
    assert main(["data", "make-proxy", "--kind", "temporal", "--out", str(out), "--videos", "10",
                 "--frames", "4", "--resolution", "32"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["data", "check", "--dataset", "ssv1", "--data-root", str(out), "--min-frames", "4"]) == 0
    assert main(["data", "make-proxy", "--kind", "temporal", "--out", str(out), "--classes", "7"]) == 2


def test_bench_command(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["data", "bench", "--clips", "2", "--clip-frames", "12", "--repeats", "2", "--workers", "0",
                 "--input-size", "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "jpeg" in text and "mp4" in text and "clips/s" in text
    res = json.loads(out.read_text())
    assert {r["format"] for r in res["results"]} >= {"jpeg", "mp4", "webm"}
    assert all(r["clips_per_s"] > 0 for r in res["results"])
    prov = res["provenance"]
    assert {"git", "command", "hardware", "versions", "wall_time_s"} <= set(prov)
    assert prov["versions"]["av"] and prov["hardware"]["cpu_count"]
