"""Fixtures shared by several test files, built once per session (the suite's expensive parts).

- `proxy_cache`: one proxy cache folder. Proxies are cached under `<cache>/<kind>-<hash of their
  parameters>`, so every tiny run of the session (train, evaluate, resume, DDP) that asks for the
  same proxy generates it once.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def proxy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("proxy-cache")
