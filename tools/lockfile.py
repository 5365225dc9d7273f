"""The lock and what is derived from it. `make lock` runs `uv pip compile` (pyproject.toml ->
requirements.lock, every distribution pinned with hashes), then this script:

    python tools/lockfile.py          stamp the lock with the digest of pyproject.toml's requirements
                                      and write environment.yml from the lock
    python tools/lockfile.py check    (run by .venv/bin/python in `make setup`) fail unless the
                                      installed distributions are exactly the lock's pins

Standard library only (it runs before any environment exists); `disagreements` imports
`packaging`, which the lock installs.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT, LOCK, ENVIRONMENT = ROOT / "pyproject.toml", ROOT / "requirements.lock", ROOT / "environment.yml"
DIGEST = "# pyproject-requirements-sha256: "
NOTE = "# Regenerate with `make lock` (it also writes environment.yml); never edit by hand."
PROJECT = "stm-lib"   # installed editable by `make setup`, never in the lock


def canon(name: str) -> str:
    """PEP 503 name: what pip freeze's `PyYAML` and the lock's `pyyaml` have in common."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path = PYPROJECT) -> dict:
    """Every requirement the lock is compiled from: runtime, all extras, the `setup` group, the
    build backend, and the Python version range."""
    doc = tomllib.loads(Path(pyproject).read_text())
    project = doc["project"]
    return {"requires-python": project.get("requires-python"),
            "dependencies": project.get("dependencies", []),
            "optional-dependencies": project.get("optional-dependencies", {}),
            "dependency-groups": doc.get("dependency-groups", {}),
            "build-system": doc.get("build-system", {}).get("requires", [])}


def digest(pyproject: Path = PYPROJECT) -> str:
    return hashlib.sha256(json.dumps(requirements(pyproject), sort_keys=True).encode()).hexdigest()


def read_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, sha256 hashes)} from a `name==version --hash=sha256:...` file."""
    pins = {}
    for entry in text.replace("\\\n", " ").splitlines():
        entry = entry.split(" #", 1)[0].strip()
        if entry and not entry.startswith("#"):
            spec, *options = entry.split()
            name, version = spec.split("==")
            pins[canon(name)] = (version, [o.removeprefix("--hash=sha256:") for o in options
                                           if o.startswith("--hash=sha256:")])
    return pins


def stamp(text: str, hexdigest: str) -> str:
    """The lock with its digest line after uv's header (replacing an older one)."""
    ours = [NOTE, DIGEST + hexdigest]
    lines = [line for line in text.splitlines() if line != NOTE and not line.startswith(DIGEST)]
    at = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join(lines[:at] + ours + lines[at:]) + "\n"


def environment_yml(text: str) -> str:
    """environment.yml for conda users: the lock's Python and its pins, without hashes (pip
    cannot hash-check the editable install of the package beside them; `make setup` does)."""
    python = re.search(r"--python-version (\S+)", text).group(1)
    pins = "\n".join(f"      - {name}=={version}" for name, (version, _) in read_lock(text).items())
    return (f"# Generated from requirements.lock by tools/lockfile.py (`make lock`); do not edit.\n"
            f"# Conda users: `conda env create -f environment.yml && conda activate stm` (Linux x86_64).\n"
            f"name: stm\nchannels: [conda-forge]\ndependencies:\n  - python={python}\n  - pip\n  - pip:\n"
            f"{pins}\n      - -e .\n")


def disagreements(pyproject: Path = PYPROJECT, lock_text: str | None = None) -> list[str]:
    """Why the lock does not answer pyproject.toml ([] when it does): a requirement missing or
    pinned outside its specifier, an entry without a hash, or a digest from another pyproject."""
    from packaging.requirements import Requirement

    text = LOCK.read_text() if lock_text is None else lock_text
    pins, req = read_lock(text), requirements(pyproject)
    problems = [f"{name}: no sha256 hash" for name, (_, hashes) in pins.items() if not hashes]
    wanted = (req["dependencies"] + req["build-system"] + [r for rs in req["optional-dependencies"].values() for r in rs]
              + [r for rs in req["dependency-groups"].values() for r in rs])
    for r in map(Requirement, wanted):
        version = pins.get(canon(r.name), (None,))[0]
        if version is None:
            problems.append(f"{r}: not in the lock")
        elif not r.specifier.contains(version, prereleases=True):
            problems.append(f"{r}: the lock pins {version}")
    found = re.search(re.escape(DIGEST) + r"(\w+)", text)
    if not found or found.group(1) != digest(pyproject):
        problems.append("pyproject.toml's requirements changed since the lock was made (run `make lock`)")
    return problems


def installed_differences(lock_text: str | None = None) -> list[str]:
    """Installed distributions of this interpreter that are not exactly the lock's pins, and
    pins not installed ([] when `pip freeze --all` equals the lock, the project aside)."""
    import importlib.metadata as md
    import sysconfig

    pins = read_lock(LOCK.read_text() if lock_text is None else lock_text)
    # the environment's own site-packages, as `pip freeze` in a fresh process sees them: not the
    # whole sys.path, which importing setuptools (torch's inductor does) extends with its
    # _vendor folder of dist-infos (zipp 3.23.0 beside the lock's 4.1.2, jaraco-*, ...)
    site = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    have = {canon(d.metadata["Name"]): d.version for d in md.distributions(path=site)}
    have.pop(PROJECT, None)
    return [f"{name}: installed {have.get(name)}, lock {pins.get(name, (None,))[0]}"
            for name in sorted(set(have) | set(pins)) if have.get(name) != pins.get(name, (None,))[0]]


def main(argv: list[str]) -> int:
    if argv == ["check"]:
        if diff := installed_differences():
            print(f"{sys.prefix} is not the lock (rm -rf .venv && make setup):\n  " + "\n  ".join(diff))
            return 1
        return 0
    LOCK.write_text(stamp(LOCK.read_text(), digest()))
    ENVIRONMENT.write_text(environment_yml(LOCK.read_text()))
    print(f"stamped {LOCK.name}, wrote {ENVIRONMENT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
