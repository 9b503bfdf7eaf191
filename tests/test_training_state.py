"""TrainingState, the one resumable object: written into last.pt by state_dict, read back by load, it
continues exactly (weights, optimizer, schedule, EMA, every random stream, the bookkeeping), from this
version's layout and from the older one whose ``rng`` holds rank 0's states only."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from mura_utils.config import TrainConfig
from mura_utils.models.checkpoint import read_checkpoint, save_checkpoint
from mura_utils.training.state import RunCheckpoints, TrainingState, exponential_moving_average
from mura_utils.utils.runtime import Distributed

CPU = torch.device("cpu")


def toy_state(seed: int, ema_decay: float = 0.5) -> TrainingState:
    """A small network with BatchNorm and dropout, AdamW, one-cycle, a disabled scaler and an EMA."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5))
    model.append(torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=20)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    generators = {"shuffle": torch.Generator().manual_seed(seed), "augment": torch.Generator().manual_seed(seed + 1)}
    ema = exponential_moving_average(model, ema_decay)
    return TrainingState(model, optimizer, scheduler, scaler, ema, generators, CPU)


def train_steps(state: TrainingState, steps: int) -> None:
    """Steps that draw from every stream the state carries (dropout: torch; the rest by hand)."""
    state.model.train()
    for _ in range(steps):
        inputs = torch.randn(6, 4, generator=state.generators["augment"]) + float(np.random.rand()) + random.random()
        order = torch.randperm(6, generator=state.generators["shuffle"])
        state.optimizer_step(state.model(inputs[order]).square().mean())


def finish_epoch(state: TrainingState, epoch: int, score: float) -> bool:
    row = {"epoch": epoch, "train_loss": 1.0 / epoch}
    predictions = pd.DataFrame(  # two studies, one abnormal: a threshold is chosen on them
        {"study": ["a", "b"], "patient": ["p", "q"], "body_part": ["XR_HAND"] * 2, "label": [0, 1]}
        | {"probability": [0.2, 0.7]}
    )
    return state.record(row, score, {"study": {"auroc": score}}, predictions)


def save_last(state: TrainingState, path) -> None:
    run = RunCheckpoints(TrainConfig(model="custom_cnn"), 32, {"name": "toy"}, "/data")
    save_checkpoint(path, **run.contents(state.model, state, {"study": {}}, **state.state_dict(Distributed())))


def continuation(state: TrainingState) -> tuple[list, dict]:
    """Two more steps from ``state``, then the next draw of every stream and every weight (EMA too)."""
    train_steps(state, 2)
    draws = [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(), state.scheduler.get_last_lr()]
    draws += [torch.rand(2, generator=generator).tolist() for generator in state.generators.values()]
    weights = {**state.model.state_dict(), **{f"ema.{k}": v for k, v in state.ema.state_dict().items()}}
    return draws, weights


def assert_same(first: tuple[list, dict], second: tuple[list, dict]) -> None:
    assert first[0] == second[0], "random draws or learning rate differ"
    assert first[1].keys() == second[1].keys()
    assert all(torch.equal(first[1][name], second[1][name]) for name in first[1]), "weights differ"


def test_last_pt_round_trip_continues_exactly(tmp_path):
    straight = toy_state(seed=0)
    train_steps(straight, 3)
    assert finish_epoch(straight, 1, 0.6) and not finish_epoch(straight, 2, 0.5)
    save_last(straight, tmp_path / "last.pt")
    saved = read_checkpoint(tmp_path / "last.pt")
    assert len(saved["rng"]["ranks"]) == 1 and saved["epoch"] == 2 and saved["best_threshold"] == saved["threshold"]
    torch.load(tmp_path / "last.pt", weights_only=True)  # tensors and plain types only
    uninterrupted = continuation(straight)

    resumed = toy_state(seed=1)  # other weights and streams: load replaces them all
    resumed.load(tmp_path / "last.pt")
    assert (resumed.epoch, resumed.best_epoch, resumed.best_score, resumed.stale) == (2, 1, 0.6, 1)
    assert resumed.best_threshold == straight.best_threshold == 0.7 and resumed.history == straight.history
    assert resumed.best_metrics == {"study": {"auroc": 0.6}}
    assert_same(continuation(resumed), uninterrupted)


def test_the_older_rng_layout_loads_and_another_world_size_warns(tmp_path):
    state = toy_state(seed=0)
    train_steps(state, 2)
    finish_epoch(state, 1, 0.6)
    save_last(state, tmp_path / "last.pt")
    contents = torch.load(tmp_path / "last.pt", weights_only=True)
    older = {**contents, "rng": contents["rng"]["ranks"][0]}  # rank 0's states only, as older versions wrote
    torch.save(older, tmp_path / "older.pt")
    first, second = toy_state(seed=1), toy_state(seed=2)
    first.load(tmp_path / "last.pt")
    from_this_layout = continuation(first)
    second.load(tmp_path / "older.pt")
    assert_same(continuation(second), from_this_layout)

    torch.save({**contents, "rng": {"ranks": contents["rng"]["ranks"] * 2}}, tmp_path / "two_ranks.pt")
    with pytest.warns(UserWarning, match="another number of processes"):
        toy_state(seed=1).load(tmp_path / "two_ranks.pt")


def test_an_ema_run_refuses_a_last_pt_without_ema(tmp_path):
    state = toy_state(seed=0, ema_decay=0.0)
    assert state.ema is None and state.evaluated is state.model
    finish_epoch(state, 1, 0.6)
    save_last(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="no EMA state to resume"):
        toy_state(seed=0).load(tmp_path / "last.pt")
