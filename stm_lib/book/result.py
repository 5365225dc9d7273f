"""The one `results.json` schema: what a table's run measured, typed and versioned.

A `Result` is written by `runner.run` (through `stm reproduce`) and read by `report` and `stm book`;
every page renders from it alone. Measured metrics are stored per training seed; their mean and
sample std are derived (and written beside them for readers of the JSON):

    "top1_seeds": [41.0, 43.5, 42.0], "top1": 42.17, "top1_std": 1.26

`from_json` refuses an unknown schema version, a missing or unknown field, a status or verdict
outside its vocabulary, and a stored mean or std that does not follow from its seeds (they may be
left out: they are derived), with one line naming the problem. Accuracies are percentages; the paper's values are kept as the paper printed them
("72.0", "23.88") so a page shows the paper's precision.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stm_lib.book import stats

SCHEMA = "stm-result"
VERSION = 2                   # 1: the dict-of-dicts written by book/experiments.py (book/migrate.py)
STATUSES = ("exact", "proxy", "smoke", "full", "not_run")
VERDICTS = stats.VERDICTS


class SchemaError(ValueError):
    """results.json does not follow this schema (the message names the file and the field)."""


@dataclass
class SeedRun:
    """One training run of a row: one seed (and, for Table 4, one part: "ucf101", "pretrain")."""
    seed: int
    run: str                               # run folder, relative to results.json (or a cache path)
    part: str = ""                         # "" = the table's one dataset
    epochs: int = 0
    val_top1: list[float] = field(default_factory=list)     # per epoch, percent (plots re-render from it)
    train_loss: list[float] = field(default_factory=list)   # per epoch
    converged: bool | None = None          # stats.CONVERGENCE_RULE on val_top1; None: not checked
    config: dict | None = None             # the resolved Config.to_dict() of this run
    wall_time_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)   # this seed's values (row metric names)
    cache: str | None = None               # run-cache key (runner.cache_key): one run serves every table
    commit: str | None = None              # git commit that trained it (a cached run may predate this result)
    trained_on: str | None = None          # the GPU's name, or "CPU (<model>)": from the run's run.json


@dataclass
class Complexity:
    """Params and FLOPs of the row's model at `setting` (Tables 8, 9: the paper's scale)."""
    params: int
    flops: int
    setting: dict = field(default_factory=dict)   # frames, input_size, num_classes, width_mult

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def flops_g(self) -> float:
        return self.flops / 1e9


@dataclass
class Speed:
    """Forward-pass throughput (Table 9 protocol), measured in one process for every model."""
    videos_per_s: float
    device: str
    ratio_vs_tsn: float | None = None
    ratio_vs_tsm: float | None = None
    setting: dict = field(default_factory=dict)   # batch_size, input_size, width_mult, warmup, repeats


@dataclass
class Row:
    id: str                                # unique in its table
    setting: str                           # as printed in the paper
    model: str | None                      # registry variant; None = another method (not run)
    frames: int | str | None               # the paper's frames ("92+92" for two-stream)
    status: str                            # one of STATUSES (the accuracy's); see `reason`
    reason: str = ""                       # why not_run ("other method", "budget (16 frames)") or a note
    run_frames: int | None = None          # frames as run here
    info: dict = field(default_factory=dict)       # other paper columns: backbone, pretrain, stage, blocks
    paper: dict[str, str] = field(default_factory=dict)   # metric -> the paper's printed value
    seeds: dict[str, list[float]] = field(default_factory=dict)   # metric -> one value per seed
    n_val: dict[str, int] = field(default_factory=dict)   # metric -> validation clips it was measured on
    runs: list[SeedRun] = field(default_factory=list)
    complexity: Complexity | None = None
    speed: Speed | None = None
    reference: bool = False                # added by this project (e.g. a speed reference), not a paper row

    # ---- derived values ----------------------------------------------------------------------
    def value(self, metric: str) -> float | None:
        """Measured mean over seeds (params_m / flops_g / videos_per_s come from their records)."""
        if metric in self.seeds:
            return stats.mean(self.seeds[metric])
        if metric in ("params_m", "flops_g") and self.complexity:
            return getattr(self.complexity, metric)
        if metric == "videos_per_s" and self.speed:
            return self.speed.videos_per_s
        return None

    def std(self, metric: str) -> float | None:
        return stats.std(self.seeds.get(metric, []))

    def get(self, key: str):
        """The raw value behind a `Table.columns` key: "paper:<metric>" (the paper's string), a
        measured metric (mean over seeds), params_m / flops_g / videos_per_s, ratio_vs_tsm /
        ratio_vs_tsn, a Row field, or an `info` column (backbone, pretrain, stage, blocks)."""
        if key.startswith("paper:"):
            return self.paper.get(key.removeprefix("paper:"))
        v = self.value(key)
        if v is not None:
            return v
        if key.startswith("ratio_vs_") and self.speed:
            return getattr(self.speed, key, None)
        if key in _ROW_SIMPLE and key not in ("info", "paper", "n_val"):
            return getattr(self, key)
        return self.info.get(key)

    def paper_value(self, metric: str) -> float | None:
        s = self.paper.get(metric)
        return None if s is None else float(s)

    def exact(self, metric: str) -> bool | None:
        """Measured equals the paper's at the paper's printed precision (None: nothing to compare)."""
        p, m = self.paper.get(metric), self.value(metric)
        if p is None or m is None:
            return None
        decimals = len(p.split(".")[1]) if "." in p else 0
        return round(m, decimals) == round(float(p), decimals)

    def curves(self, part: str = "") -> list[SeedRun]:
        return [r for r in self.runs if r.part == part]

    def devices(self, metric: str) -> list[str]:
        """What trained the runs behind `metric` (sorted, distinct; "unknown" where not recorded)."""
        return sorted({r.trained_on or "unknown" for r in self.runs if metric in r.metrics}) or ["unknown"]

    def failed(self, metric: str, chance: float | None) -> list[bool]:
        """stats.FAILURE_RULE on each seed of `metric` (derived, never stored as truth)."""
        return stats.failed(self.seeds.get(metric, []), self.n_val.get(metric), chance)

    def failures(self, metric: str, chance: float | None) -> dict | None:
        """{"k": failed runs, "n": runs, "ci": Clopper-Pearson 95% of k / n}; None if not trained."""
        flags = self.failed(metric, chance)
        if not flags:
            return None
        k = sum(flags)
        return {"k": k, "n": len(flags), "ci": [round(x, 4) for x in stats.clopper_pearson(k, len(flags))]}


@dataclass
class Claim:
    """One ordering the paper draws from the table: `better` beats `worse` on `metric`."""
    better: str
    worse: str
    metric: str
    paper: list[str | None]                # the paper's printed values [better, worse]
    measured: list[float | None]           # means over seeds [better, worse]
    verdict: str                           # one of VERDICTS
    why: str                               # stats.Comparison.why, or "not measured"
    diff: float | None = None
    se_diff: float | None = None
    n_seeds: list[int] = field(default_factory=lambda: [0, 0])
    n_val: int | None = None
    chance: float | None = None
    df: float | None = None                # Welch-Satterthwaite
    p: float | None = None                 # Welch, two-sided
    p_adj: float | None = None             # Holm over the informative claims of this results.json
    ci: list[float] | None = None          # 95% CI of diff (Welch)
    mdd: float | None = None               # minimum detectable difference, 80% power, alpha 0.05
    devices: list[list[str]] | None = None  # what trained each side's runs ([better], [worse])


@dataclass
class Result:
    table: str                             # "1".."9", "figure1"
    profile: str                           # smoke | proxy | full
    title: str
    caption: str | None
    rows: list[Row]
    claims: list[Claim] = field(default_factory=list)
    settings: dict = field(default_factory=dict)      # what a reader needs to judge the numbers
    seeds: list[int] = field(default_factory=list)    # training seeds of every trained row
    chance: dict[str, float] = field(default_factory=dict)   # metric -> chance top-1 (%) of its data
    convergence_rule: str = stats.CONVERGENCE_RULE
    figures: list[str] = field(default_factory=list)  # paths relative to results.json
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)         # table-specific data (Figure 1's maps, speed setting)
    provenance: dict = field(default_factory=dict)    # stm_lib.provenance.record(...)
    test: str = stats.TEST
    failure_rule: str = stats.FAILURE_RULE
    uninformative_rule: str = stats.UNINFORMATIVE
    schema: str = SCHEMA
    version: int = VERSION

    def row(self, rid: str) -> Row:
        for r in self.rows:
            if r.id == rid:
                return r
        raise KeyError(f"table {self.table} has no row {rid!r}; rows: {', '.join(r.id for r in self.rows)}")

    def metrics(self) -> list[str]:
        """Measured per-seed metrics present in any row, in first-seen order."""
        return list(dict.fromkeys(m for r in self.rows for m in r.seeds))

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"schema": self.schema, "version": self.version}
        for f in dataclasses.fields(self):
            if f.name in ("schema", "version"):
                continue
            v = getattr(self, f.name)
            d[f.name] = [_row_dict(r, self.chance) for r in v] if f.name == "rows" else _plain(v)
        return d

    def recompute_claims(self) -> "Result":
        """Every claim derived again from the rows' per-seed values (the stored numbers and verdicts
        are for readers of the JSON; the book believes only what it derives)."""
        by_id = {r.id: r for r in self.rows}
        pairs = [(c.better, c.worse, c.metric) for c in self.claims if c.better in by_id and c.worse in by_id]
        self.claims = make_claims(by_id, pairs, self.chance)
        return self

    def to_json(self) -> str:
        """Indented JSON with each flat list on one line (per-seed values are easy to edit)."""
        return _one_line_lists(json.dumps(self.to_dict(), indent=1, allow_nan=False)) + "\n"

    def save(self, path: str | Path) -> Path:
        from stm_lib.io import atomic_write_text

        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict, where: str = "results.json") -> "Result":
        if not isinstance(d, dict):
            raise SchemaError(f"{where}: expected a JSON object")
        if d.get("schema") != SCHEMA or d.get("version") != VERSION:
            hint = " (schema 1, from book/experiments.py: convert it with python -m stm_lib.book.migrate)" \
                if "version" not in d and "rows" in d else ""
            raise SchemaError(f"{where}: schema {d.get('schema')!r} version {d.get('version')!r}; this code reads "
                              f"{SCHEMA!r} version {VERSION}{hint}")
        kw = _fields(cls, d, where, skip=("rows", "claims"))
        kw["rows"] = [_row_from(r, f"{where}: rows[{i}]") for i, r in enumerate(_list(d, "rows", where))]
        kw["claims"] = [_claim_from(c, f"{where}: claims[{i}]") for i, c in enumerate(_list(d, "claims", where))]
        try:
            return cls(**kw).recompute_claims()
        except (ValueError, TypeError, KeyError, ArithmeticError) as e:
            raise SchemaError(f"{where}: its claims cannot be derived from its rows ({e})") from None

    @classmethod
    def from_json(cls, text: str, where: str = "results.json") -> "Result":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{where}:{e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_dict(d, where)

    @classmethod
    def load(cls, path: str | Path) -> "Result":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        return cls.from_json(path.read_text(), str(path))


# ---- helpers ------------------------------------------------------------------------------------

def make_claims(by_id: dict[str, Row], pairs: list[tuple[str, str, str]], chance: dict[str, float]) -> list[Claim]:
    """The claims (better, worse, metric) of one results.json, tested together: each by
    `stats.compare`, then Holm over the informative ones (`stats.adjust`)."""
    out = [_claim(by_id[a], by_id[b], m, chance.get(m)) for a, b, m in pairs]
    cmps = stats.adjust([c for _, c in out])
    claims = []
    for (c, _), cmp in zip(out, cmps):
        if cmp is not None:
            c.verdict, c.why, c.diff, c.se_diff, c.n_seeds = cmp.verdict, cmp.why, cmp.diff, cmp.se_diff, \
                list(cmp.n_seeds)
            c.df, c.p, c.p_adj, c.mdd = cmp.df, cmp.p, cmp.p_adj, cmp.mdd
            c.ci = list(cmp.ci) if cmp.ci else None
        claims.append(c)
    return claims


def _claim(better: Row, worse: Row, metric: str, chance: float | None) -> tuple[Claim, "stats.Comparison | None"]:
    pa, pb = better.paper.get(metric), worse.paper.get(metric)
    a, b = better.seeds.get(metric), worse.seeds.get(metric)
    c = Claim(better.id, worse.id, metric, [pa, pb], [better.value(metric), worse.value(metric)],
              "not resolved", "not measured", chance=chance)
    if not a or not b:
        return c, None
    n = min(x for x in (better.n_val.get(metric), worse.n_val.get(metric)) if x is not None) \
        if better.n_val.get(metric) or worse.n_val.get(metric) else None
    c.n_val = n
    c.devices = [better.devices(metric), worse.devices(metric)]
    return c, stats.compare(a, b, n, chance)


def paper_text(v) -> str | None:
    """A paper value as printed: 72.0 -> "72.0", 23.88 -> "23.88" (paper.py types them at the
    paper's precision, and repr keeps it)."""
    if v is None:
        return None
    return repr(float(v)) if not isinstance(v, str) else v


_ROW_SIMPLE = ("id", "setting", "model", "frames", "status", "reason", "run_frames", "info", "paper", "n_val",
               "reference")


def _row_dict(r: Row, chance: dict[str, float] | None = None) -> dict:
    d = {k: _plain(getattr(r, k)) for k in _ROW_SIMPLE}
    for m, xs in r.seeds.items():   # flat keys: the must-show names them
        d[f"{m}_seeds"] = [float(x) for x in xs]
        d[m] = stats.mean(xs)
        d[f"{m}_std"] = stats.std(xs)
        if "top1" in m:   # derived, for readers of the JSON: recomputed on load
            c = (chance or {}).get(m)
            d[f"{m}_failed"] = r.failed(m, c)
            d[f"{m}_failures"] = r.failures(m, c)
    d["runs"] = [_plain(s) for s in r.runs]
    d["complexity"] = _plain(r.complexity)
    d["speed"] = _plain(r.speed)
    return d


def _row_from(d: dict, where: str) -> Row:
    if not isinstance(d, dict):
        raise SchemaError(f"{where}: expected an object")
    where = f"{where} ({str(d.get('id', '?'))[:40]})"
    metrics = [k[: -len("_seeds")] for k in d if k.endswith("_seeds")]
    seeds = {}
    for m in metrics:
        xs = d[f"{m}_seeds"]
        if not isinstance(xs, list) or not xs or not all(stats.finite(x) for x in xs):
            raise SchemaError(f"{where}: {m}_seeds must be a non-empty list of finite numbers, got "
                              f"{json.dumps(xs, default=str)[:80]}")
        if ("top1" in m or "top5" in m) and not all(0 <= x <= 100 for x in xs):
            raise SchemaError(f"{where}: {m}_seeds: accuracies must be percentages in [0, 100], got {xs!r}")
        for key, want in ((m, stats.mean(xs)), (f"{m}_std", stats.std(xs))):
            if key not in d:   # derived: may be left out
                continue
            got = d[key]
            if (got is None) != (want is None) or (want is not None and not (stats.finite(got) and math.isclose(
                    got, want, rel_tol=1e-6, abs_tol=1e-6))):
                raise SchemaError(f"{where}: {key} = {got!r} does not match {m}_seeds {xs!r} (expected {want!r}); "
                                  f"{m} and {m}_std are derived from {m}_seeds: edit the per-seed values and "
                                  f"update or delete {m} and {m}_std")
        seeds[m] = [float(x) for x in xs]
    derived = {f"{m}{s}" for m in metrics for s in ("", "_seeds", "_std", "_failed", "_failures")}
    rest = {k: v for k, v in d.items() if k not in derived}
    kw = _fields(Row, rest, where, skip=("seeds", "runs", "complexity", "speed"))
    kw["seeds"] = seeds
    kw["runs"] = [SeedRun(**_fields(SeedRun, s, f"{where}: runs[{i}]")) for i, s in enumerate(_list(rest, "runs", where))
                  ] if "runs" in rest else []
    for key, klass in (("complexity", Complexity), ("speed", Speed)):
        v = rest.get(key)
        kw[key] = None if v is None else klass(**_fields(klass, v, f"{where}: {key}"))
    if kw["status"] not in STATUSES:
        raise SchemaError(f"{where}: status {kw['status']!r} is not one of {', '.join(STATUSES)}")
    return Row(**kw)


def _claim_from(d: dict, where: str) -> Claim:
    c = Claim(**_fields(Claim, d, where))
    if c.verdict not in VERDICTS:
        raise SchemaError(f"{where}: verdict {c.verdict!r} is not one of {', '.join(VERDICTS)}")
    return c


def _fields(klass, d: dict, where: str, skip: tuple = ()) -> dict:
    """The dataclass fields of `klass` from `d`: every field without a default must be present (a
    field added later with a default may be absent in older files); no unknown keys."""
    if not isinstance(d, dict):
        raise SchemaError(f"{where}: expected an object, got {type(d).__name__}")
    fs = [f for f in dataclasses.fields(klass) if f.name not in skip]
    unknown = set(d) - {f.name for f in dataclasses.fields(klass)} - set(skip)
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {sorted(unknown)}")
    required = {f.name for f in fs if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    out = {f.name: _need(d, f.name, where) for f in fs if f.name in required or f.name in d}
    for f in fs:
        if f.name in out:
            _typed(out[f.name], str(f.type), where, f.name)
    return out


def _split(t: str, sep: str) -> list[str]:
    """`t` split at `sep` outside brackets ("list[str | None] | None" -> two parts)."""
    out, depth, cur = [], 0, ""
    for ch in t:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def _fits(v, t: str) -> bool:
    """Whether JSON value `v` is of the annotation `t` (a field's type as written in this file;
    a class name is checked by its own `_fields`)."""
    alts = _split(t, "|")
    for a in alts:
        base, _, inner = a.partition("[")
        inner = inner[:-1]
        if a == "None" and v is None or a == "Any":
            return True
        if base == "int" and isinstance(v, int) and not isinstance(v, bool):
            return True
        if base == "float" and stats.finite(v):
            return True
        if base == "str" and isinstance(v, str) or base == "bool" and isinstance(v, bool):
            return True
        if base == "list" and isinstance(v, list) and (not inner or all(_fits(x, inner) for x in v)):
            return True
        if base == "dict" and isinstance(v, dict) and (not inner or all(_fits(x, _split(inner, ",")[1]) for x in v.values())):
            return True
        if base not in ("None", "Any", "int", "float", "str", "bool", "list", "dict"):
            return True   # a dataclass: checked field by field where it is built
    return False


def _typed(v, t: str, where: str, name: str) -> None:
    if not _fits(v, t):
        shown = json.dumps(v, default=str)
        raise SchemaError(f"{where}: {name}: expected {t}, "
                          f"got {shown[:80]}{'...' if len(shown) > 80 else ''}")
    if name == "n_val" and not all(x > 0 for x in (v.values() if isinstance(v, dict) else [v] if v else [1])):
        raise SchemaError(f"{where}: n_val: validation clips must be positive integers, got {json.dumps(v)[:80]}")
    if name == "val_top1" and not all(0 <= x <= 100 for x in v):
        raise SchemaError(f"{where}: val_top1: accuracies must be percentages in [0, 100], got {json.dumps(v)[:80]}")


def _need(d: dict, key: str, where: str):
    if key not in d:
        raise SchemaError(f"{where}: missing field {key!r}")
    return d[key]


def _list(d: dict, key: str, where: str) -> list:
    v = _need(d, key, where)
    if not isinstance(v, list):
        raise SchemaError(f"{where}: {key} must be a list")
    return v


def _one_line_lists(text: str) -> str:
    def join(m):
        try:
            return json.dumps(json.loads(m.group(0)))
        except ValueError:   # a bracket inside a string: leave it as it is
            return m.group(0)

    return re.sub(r"\[[^\[\]{}]*\]", join, text)


def _plain(v: Any):
    """JSON-ready copy: dataclasses -> dicts, tuples -> lists, numpy scalars -> Python numbers."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
