"""Shared fixtures: paths to the official compatibility vectors copied into tests/data."""

from __future__ import annotations

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(REPO, "tests", "data", "official")
with open(os.path.join(OFFICIAL, "manifest.json")) as manifest:
    MANIFEST = json.load(manifest)["models"]


def official_path(*parts: str) -> str:
    return os.path.join(OFFICIAL, *parts)


@pytest.fixture
def python() -> str:
    return sys.executable
