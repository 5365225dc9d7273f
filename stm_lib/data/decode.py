"""Read chosen frames of one clip as uint8 RGB arrays `(K, H, W, 3)`.

A clip is either a folder of frame images (Something-Something v1, Jester, the proxies; any
naming that sorts in time order: `00001.jpg`, `img_00001.jpg`) or a video file. Videos go
through decord, the fastest reader measured here, with PyAV as a per-file fallback (decord
rejects or misreads some SSv2 webm files; notes/book-facts.md). Every failure is a
`DecodeError` or `FileNotFoundError` whose message names the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv")
BACKENDS = ("auto", "decord", "pyav")

# PyAV must be loaded before decord: decord bundles its own FFmpeg 4.1 libraries, and whichever
# loads first wins the shared symbols (decord first breaks PyAV's libvpx encoder, for one).
try:  # a requirement; missing only in a bare environment that reads frame folders (a bare GPU machine)
    import av  # noqa: E402
except ImportError:  # pragma: no cover - depends on the environment
    av = None

try:  # decord is optional (pyproject extra `video`)
    import decord as _decord
except Exception:  # pragma: no cover - depends on the environment
    _decord = None


class DecodeError(ValueError):
    """A clip exists but cannot be read (empty, truncated, corrupt). The message names the file."""


def resolve(path: str | os.PathLike) -> Path:
    """The media path to open: the path itself, or, for an annotation that names a video whose
    frames were extracted instead (`abc.webm` -> `abc/`), the frame folder."""
    p = Path(path)
    if p.exists():
        return p
    if p.suffix.lower() in VIDEO_EXTS and p.with_suffix("").is_dir():
        return p.with_suffix("")
    raise FileNotFoundError(f"missing clip: {p} does not exist")


def open_clip(path: str | os.PathLike, backend: str = "auto", min_side: int = 0):
    """An object with `.num_frames`, `.read(indices)` and `.path` for a frame folder or video."""
    p = resolve(path)
    if p.is_dir():
        return FrameFolder(p, min_side=min_side)
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoder backend {backend!r}; choose from {BACKENDS}")
    if p.stat().st_size == 0:
        raise DecodeError(f"{p}: empty file (0 bytes)")
    errors = []
    order = {"auto": ("decord", "pyav"), "decord": ("decord",), "pyav": ("pyav",)}[backend]
    for name in order:
        if name == "decord" and _decord is None:
            errors.append("decord: not installed")
            continue
        try:
            return DecordVideo(p) if name == "decord" else PyAVVideo(p)
        except Exception as e:  # decord raises plain RuntimeError / DECORDError
            errors.append(f"{name}: {_short(e)}")
    raise DecodeError(f"{p}: cannot decode video ({'; '.join(errors)})")


def read_clip(path, choose: Callable[[int], np.ndarray], backend: str = "auto", min_side: int = 0):
    """Open a clip, let `choose(num_frames)` pick frame indices, read them.

    Returns `(frames uint8 (K, H, W, 3), indices)`. If decord opens a video but fails while
    reading it, the same indices are retried with PyAV before giving up.
    """
    clip = open_clip(path, backend, min_side)
    idx = np.asarray(choose(clip.num_frames), dtype=np.int64)
    try:
        return clip.read(idx), idx
    except DecodeError:
        if not isinstance(clip, DecordVideo) or backend != "auto":
            raise
    clip = PyAVVideo(clip.path)
    if clip.num_frames <= int(idx.max()):
        idx = np.asarray(choose(clip.num_frames), dtype=np.int64)
    return clip.read(idx), idx


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


class FrameFolder:
    """A folder of frame images, frame i = the i-th file in sorted name order."""

    def __init__(self, path: Path, min_side: int = 0):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"missing clip: frame folder {self.path} does not exist")
        self.files = sorted(n for n in os.listdir(self.path) if n.lower().endswith(IMAGE_EXTS))
        if not self.files:
            raise DecodeError(f"{self.path}: no frame images in folder")
        self.num_frames = len(self.files)
        self.min_side = min_side

    def read(self, indices) -> np.ndarray:
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in np.asarray(indices).tolist():
            if i not in cache:
                cache[i] = self._load(self.files[i])
            out.append(cache[i])
        try:
            return np.stack(out)
        except ValueError:
            sizes = sorted({a.shape for a in out})
            raise DecodeError(f"{self.path}: frames differ in size {sizes}") from None

    def _load(self, name: str) -> np.ndarray:
        f = self.path / name
        try:
            with Image.open(f) as im:
                if self.min_side and im.format == "JPEG":
                    # DCT-domain downscale by 1/2, 1/4, 1/8 while the shorter side stays >= min_side
                    w, h = im.size
                    r = self.min_side / min(w, h)
                    im.draft("RGB", (max(1, int(w * r + 0.5)), max(1, int(h * r + 0.5))))
                return np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DecodeError(f"{f}: cannot read frame image ({_short(e)})") from None


class DecordVideo:
    """decord reader: random access by frame index (seeks to key frames)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._vr = _decord.VideoReader(str(path), num_threads=1)
        self.num_frames = len(self._vr)
        if self.num_frames <= 0:
            raise DecodeError(f"{path}: video has no frames")

    def read(self, indices) -> np.ndarray:
        try:
            return self._vr.get_batch(np.asarray(indices).tolist()).asnumpy()
        except Exception as e:
            raise DecodeError(f"{self.path}: decord failed reading frames ({_short(e)})") from None


class PyAVVideo:
    """PyAV reader: decodes in order up to the last frame asked for."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if av is None:
            raise DecodeError(f"{path}: PyAV is not installed (make setup installs requirements.lock)")
        self._av = av
        self._all: list[np.ndarray] | None = None
        try:
            with av.open(str(path)) as c:
                if not c.streams.video:
                    raise DecodeError(f"{path}: no video stream")
                n = c.streams.video[0].frames
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"{path}: {_short(e)}") from None
        if n <= 0:  # webm carries no frame count: decode once and keep the frames
            self._all = self._decode(None)
            n = len(self._all)
        self.num_frames = n
        if n <= 0:
            raise DecodeError(f"{path}: video has no decodable frames")

    def _decode(self, wanted: set[int] | None) -> list[np.ndarray] | dict[int, np.ndarray]:
        last = max(wanted) if wanted else None
        frames: dict[int, np.ndarray] = {}
        try:
            with self._av.open(str(self.path)) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                for i, fr in enumerate(c.decode(s)):
                    if wanted is None or i in wanted:
                        frames[i] = fr.to_ndarray(format="rgb24")
                    if last is not None and i >= last:
                        break
        except Exception as e:
            raise DecodeError(f"{self.path}: {_short(e)}") from None
        return list(frames.values()) if wanted is None else frames

    def read(self, indices) -> np.ndarray:
        idx = np.asarray(indices).tolist()
        if self._all is not None:
            got = dict(enumerate(self._all))
        else:
            got = self._decode(set(idx))
        missing = [i for i in idx if i not in got]
        if missing:
            raise DecodeError(
                f"{self.path}: truncated video: frame {missing[0]} of {self.num_frames} could not be decoded")
        return np.stack([got[i] for i in idx])


def expected_frames(path: str | os.PathLike) -> int:
    """Frame count the container header promises (frame count, else duration x rate); 0 if
    unknown. `stm data check` compares it with what decodes to catch truncated files."""
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            if s.frames > 0:
                return int(s.frames)
            if c.duration and s.average_rate:
                return int(round(c.duration / 1_000_000 * float(s.average_rate)))
    except Exception:
        return 0
    return 0
