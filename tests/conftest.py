"""Shared fixtures: one small synthetic MURA tree per test session (generation takes seconds)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_mura(tmp_path_factory):
    """A MURA-v1.1-shaped synthetic tree with ~4 patients per body part (read-only for tests)."""
    from mura_utils.synthetic import make_sample

    return make_sample(tmp_path_factory.mktemp("tiny_mura"), patients_per_part=4, seed=0)
