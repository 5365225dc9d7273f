"""Recompute every claim of every results.json from its stored seeds, without stm_lib: Welch's
two-sided test (scipy.stats.ttest_ind, equal_var=False), Holm within the file, the verdict rule,
and the chance and ceiling rules, compared with what the file stores. Exit 1 on any mismatch.

    python tools/check_claims.py [runs/]        # every runs/*/*/results.json

Independent of the library on purpose (issue 27: "recomputable from the seeds by an independent
script"): it reads the JSON as plain data and re-implements the rules from their statement.
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

from scipy import stats

ALPHA, CEILING = 0.05, 95.0


def recompute(doc: dict) -> list[tuple[str, float | None, float | None]]:
    """(verdict, p, adjusted p) for each stored claim, from the rows' `<metric>_seeds`."""
    rows = {r["id"]: r for r in doc["rows"]}
    out, ps = [], []
    for c in doc["claims"]:
        a = rows.get(c["better"], {}).get(f"{c['metric']}_seeds")
        b = rows.get(c["worse"], {}).get(f"{c['metric']}_seeds")
        if not a or not b:
            out.append(["not resolved", None, None])
            continue
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        n_val, chance = c.get("n_val"), c.get("chance")
        se0 = 100 * math.sqrt(chance / 100 * (1 - chance / 100) / n_val) if chance is not None and n_val else None
        if ma >= CEILING and mb >= CEILING:
            out.append(["uninformative", None, None])
        elif se0 is not None and abs(ma - chance) <= 2 * se0 and abs(mb - chance) <= 2 * se0:
            out.append(["uninformative", None, None])
        elif len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
            out.append(["not resolved", None, None])
        else:
            with warnings.catch_warnings():   # nearly identical seeds: a precision warning, not an error
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
            out.append(["pending", p, ma - mb])
            ps.append(len(out) - 1)
    m = len(ps)
    running = 0.0
    for rank, i in enumerate(sorted(ps, key=lambda i: out[i][1])):   # Holm, step-down
        running = max(running, min(1.0, (m - rank) * out[i][1]))
        diff = out[i][2]
        out[i] = ["not resolved" if running >= ALPHA else ("holds" if diff > 0 else "reversed"), out[i][1], running]
    return [tuple(x) for x in out]


def check(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    bad = []
    for c, (verdict, p, q) in zip(doc["claims"], recompute(doc)):
        name = f"{path}: {c['better']} > {c['worse']} ({c['metric']})"
        if c["verdict"] != verdict:
            bad.append(f"{name}: stored {c['verdict']!r}, recomputed {verdict!r}")
        for key, want in (("p", p), ("p_adj", q)):
            got = c.get(key)
            if (got is None) != (want is None) or (want is not None and not math.isclose(got, want, rel_tol=1e-6)):
                bad.append(f"{name}: stored {key} {got!r}, recomputed {want!r}")
    return bad


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("runs")
    files = [f for f in sorted(root.glob("*/*/results.json")) if json.loads(f.read_text()).get("schema") == "stm-result"]
    bad = [line for f in files for line in check(f)]
    for line in bad:
        print(line)
    print(f"{len(files)} results.json, {sum(len(json.loads(f.read_text())['claims']) for f in files)} claims: "
          f"{'all match' if not bad else f'{len(bad)} mismatches'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
