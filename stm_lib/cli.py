"""The `stm` command. Each feature module contributes its own sub-commands through a
`register(subparsers)` function, so this file only wires them together."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add sub-commands, in the order `stm --help` lists them.
COMMAND_MODULES = [
    "stm_lib.profile",
    "stm_lib.bench",
    "stm_lib.engine.cli",
    "stm_lib.pretrain",
    "stm_lib.reproduce",
    "stm_lib.runpack",
    "stm_lib.data.cli",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stm", description="STM and 2D-CNN temporal modules: models, data, training, the reproducibility book.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as e:  # user errors: one clear line, exit 2
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"stm {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:   # a full disk, a read-only --out: one line naming the file, exit 1
        from stm_lib.io import RESOURCE_ERRNOS

        if e.errno not in RESOURCE_ERRNOS:
            raise
        notes = "".join(f"; {n}" for n in getattr(e, "__notes__", []))
        print(f"stm {args.command}: error: {e.filename or 'a file'}: {e.strerror}{notes}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
