"""Shared test fixtures. Tests never read ../shared: every file they need is committed in the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"          # small structure files (edge cases), compressed
DEMO_DIR = REPO / "data" / "demo"            # bundled demo structures + dataset built from them


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    return TEST_DATA


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO_DIR
