"""Every paper figure typed in `stm_lib/book/paper.py` against the paper's own tables.

The truth is `tests/data/paper_tables.txt`, the table lines of the seed text copied verbatim (so
this runs without ../shared; when the seed is there, the copy itself is checked line by line).
Each row of paper.py must match its row of the printed table: the same method (and frame count,
or stage and block count), and its `paper_*` values equal to the table's last cells, in order,
"-" being None. Every printed row must be used by paper.py, so nothing is left out either.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "data" / "paper_tables.txt"
SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def paper_tables() -> dict[str, list[dict]]:
    """The figures under test: table -> rows (dicts with `setting`, `frames`, `paper_*`). The one
    place to re-point if paper.py's API changes."""
    from stm_lib.book.paper import PAPER

    return PAPER


def key(name: str) -> str:
    """'ECO _{EN Lite} [42]' and 'ECO_EN Lite' -> 'ecoenlite'."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"\[\d+\]", "", name).lower())


def number(cell: str):
    """'33.3G', '24.0M', '62.0 V/s', '49.2' -> float; '-' -> None."""
    cell = cell.strip()
    if cell == "-":
        return None
    return float(re.sub(r"\s*(G|M|V/s)$", "", cell))


def printed_tables() -> dict[str, dict]:
    """table -> {"header": cells, "rows": [{"method", "cells", "used"}]} from the fixture."""
    tables, t = {}, None
    for line in FIXTURE.read_text(encoding="utf-8").split("\n"):
        if line.startswith("#") and not line.startswith("## Table"):
            continue
        if line.startswith("## Table"):
            t = line.split()[2]
            tables[t] = {"header": None, "rows": []}
            continue
        if not line.strip():
            continue
        cells = line.split("\t")
        tab = tables[t]
        if tab["header"] is None:
            tab["header"] = cells
            continue
        if not cells[0] and not any(c.strip() for c in cells[1:5]) and "top-1" in line:
            continue                                                   # Table 1's second header line
        prev = tab["rows"][-1] if tab["rows"] else None
        if not cells[0] and prev is not None:                            # continues the method above
            merged = [c if c else p for c, p in zip(cells, prev["cells"])]  # merged cells (Table 9)
            tab["rows"].append({"method": prev["method"], "cells": cells[:1] + merged[1:]})
        else:
            tab["rows"].append({"method": cells[0], "cells": cells})
    t8 = tables["8"]                                                    # printed transposed
    names = t8["header"][1:]
    t8["rows"] = [{"method": n, "cells": [n] + [r["cells"][i + 1] for r in t8["rows"]]} for i, n in enumerate(names)]
    return tables


def locate(printed: dict, table: str, row: dict) -> tuple[str, dict]:
    """The printed row a paper.py row transcribes: by method name (and frames where the table has
    a Frame column; stage and blocks in Table 7). 'TSM (Table 9 row)' points to another table."""
    setting = row["setting"]
    m = re.search(r"\(Table (\d) row\)", setting)
    if m:
        table, setting = m.group(1), setting[:m.start()].strip()
    tab = printed[table]
    header = [key(h) for h in tab["header"]]
    hits = []
    for r in tab["rows"]:
        c = r["cells"]
        if header[0] == "stage" and "stage" in row:
            ok = row["stage"] == c[0] and str(row["blocks"]) == c[1]
        else:
            ok = key(r["method"]) == key(setting)
            if ok and "frame" in header and row.get("frames") is not None:
                ok = str(row["frames"]) == c[header.index("frame")]
        if ok:
            hits.append(r)
    assert len(hits) == 1, f"Table {table} row {row['id']} ({row['setting']}): {len(hits)} printed rows match"
    return table, hits[0]


def test_every_paper_figure_is_in_its_printed_row():
    printed = printed_tables()
    used, checked = set(), 0
    for table, rows in paper_tables().items():
        for row in rows:
            cols = [k for k in row if k.startswith("paper_")]
            values = [row[k] for k in cols]
            if all(v is None for v in values):
                continue                            # not in the paper (a project baseline row)
            src, hit = locate(printed, table, row)
            used.add((src, id(hit)))
            where = f"Table {table} row {row['id']}"
            if src != table:                        # borrowed row: its figures, in order, among the source's
                heads = [key(h) for h in printed[src]["header"]]
                nums = [number(c) for h, c in zip(heads[1:], hit["cells"][1:])
                        if h != "frame" and re.fullmatch(r"[\d.]+\s*(G|M|V/s)?", c.strip())]
                it = iter(nums)
                assert all(any(v == n for n in it) for v in values if v is not None), (where, values, nums)
            else:
                got = [number(c) for c in hit["cells"][-len(cols):]]
                assert values == got, f"{where}: paper.py {dict(zip(cols, values))}, printed {got}"
            checked += sum(v is not None for v in values)
    unused = [(t, r["method"], r["cells"][1:3]) for t, tab in printed.items() for r in tab["rows"]
              if (t, id(r)) not in used]
    assert unused == [], f"printed rows missing from paper.py: {unused}"
    # The tables print 180 figures; paper.py also repeats Table 9's merged params cell (2) and
    # borrows TSM's 43.8 (Table 9 -> 1) and TSN's 19.7 / 46.6 (Table 5 -> 7): 185 checked.
    assert checked == 180 + 2 + 3


def test_fixture_is_the_seed_text_verbatim():
    """The fixture's table lines are lines of the seed, in order (checked where ../shared exists;
    the fixture's own header names the seed lines)."""
    seeds = sorted(SEED.glob("001_*.txt")) if SEED.is_dir() else []
    blocks = re.findall(r"## Table (\d) \(seed lines (\d+)-(\d+)\)\n(.*?)(?=\n## Table|\Z)",
                        FIXTURE.read_text(encoding="utf-8"), re.S)
    assert [b[0] for b in blocks] == [str(i) for i in range(1, 10)]
    for _, a, b, body in blocks:
        assert len(body.rstrip("\n").split("\n")) == int(b) - int(a) + 1
    if seeds:
        seed = seeds[0].read_text(encoding="utf-8").split("\n")
        for _, a, b, body in blocks:
            assert body.rstrip("\n").split("\n") == seed[int(a) - 1:int(b)]


def test_a_mistyped_figure_is_caught(monkeypatch):
    """The check above can fail: one digit changed in paper.py's data is reported."""
    import copy

    import stm_lib.book.paper as paper

    bad = copy.deepcopy(paper_tables())
    bad["4"][-1]["paper_top1_hmdb51"] = 72.7
    monkeypatch.setattr(paper, "PAPER", bad)
    with pytest.raises(AssertionError, match="Table 4 row stm"):
        test_every_paper_figure_is_in_its_printed_row()
