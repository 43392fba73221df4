"""The sync-free step loop's bookkeeping (loss window, NaN check, log points) and Adam's state between links."""

from __future__ import annotations

import math

import pytest
import torch

from saetrack.sae.loop import (
    MIN_CHECK_STEPS,
    LossWindow,
    NonFiniteLossError,
    carry_moments,
    check_every,
    host_optimizer_state,
    read_losses,
)
from saetrack.sae.model import build_sae
from saetrack.sae.training import sae_trainer
from tests.sae.helpers import D_IN, DeviceRecorder, chain_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_every_is_a_multiple_of_log_every_of_at_least_the_minimum() -> None:
    assert MIN_CHECK_STEPS == 32
    assert check_every(1, 1000) == 32 and check_every(5, 1000) == 35 and check_every(25, 1000) == 50
    assert check_every(100, 1000) == 100 and check_every(1, 10) == 10 and check_every(7, 1) == 1


def _window(losses: list[tuple[float, float]]) -> LossWindow:
    window = LossWindow(len(losses), torch.device("cpu"))
    for mse, l1 in losses:
        mse_t, l1_t = torch.tensor(mse), torch.tensor(l1)
        window.add(mse_t, l1_t, mse_t + l1_t)
    return window


def test_loss_window_reads_exact_float32_values_and_starts_over() -> None:
    window = _window([(0.1, 0.2), (0.3, 0.4)])
    first, rows = window.read()
    assert first == 1 and rows[0] == [
        float(torch.tensor(0.1)),
        float(torch.tensor(0.2)),
        float(torch.tensor(0.1) + 0.2),
    ]
    assert rows[1][2] == float(torch.tensor(0.3) + torch.tensor(0.4))
    window.add(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0))
    assert window.read() == (3, [[1.0, 2.0, 3.0]])


def test_read_losses_records_log_points_and_names_the_first_bad_step() -> None:
    curve: dict[str, list[float]] = {k: [] for k in ("step", "tokens", "mse_loss", "l1_loss", "loss", "lr")}
    pending = [(1, 10, 0.5), (3, 30, 1.0)]
    point = read_losses(_window([(1.0, 0.5), (2.0, 0.5), (3.0, 0.25)]), pending, curve, batch_size=10)
    assert curve == {"step": [1, 3], "tokens": [10, 30], "mse_loss": [1.0, 3.0], "l1_loss": [0.5, 0.25],
                     "loss": [1.5, 3.25], "lr": [0.5, 1.0]}  # fmt: skip
    assert point == {"mse_loss": 3.0, "l1_loss": 0.25, "loss": 3.25} and pending == []
    bad = _window([(1.0, 0.5), (math.nan, 0.5), (math.inf, 0.5)])
    bad.first_step = 41  # a later window
    with pytest.raises(NonFiniteLossError, match=r"step 42 after 420 training tokens") as info:
        read_losses(bad, [(41, 410, 0.1)], curve, batch_size=10)
    assert info.value.step == 42 and math.isnan(info.value.losses["mse_loss"]) and len(curve["step"]) == 2


def _trained_optimizer(device: str = "cpu") -> torch.optim.Optimizer:
    sae = build_sae(D_IN, chain_config(), seed=0).to(device)
    batches = iter([torch.randn(8, D_IN, generator=torch.Generator().manual_seed(i)).to(device) for i in range(3)])
    trainer = sae_trainer(sae, batches, n_steps=3, batch_size=8, lr=1e-3, warmup_steps=0)
    for batch in batches:
        trainer.step(batch)
    return trainer.optimizer


def test_host_optimizer_state_is_a_cpu_copy_sharing_nothing() -> None:
    optimizer = _trained_optimizer()
    state = host_optimizer_state(optimizer)
    live = optimizer.state_dict()["state"]
    assert state["param_groups"] == optimizer.state_dict()["param_groups"]
    for index, entry in state["state"].items():
        for key, value in entry.items():
            assert value.device.type == "cpu" and torch.equal(value, live[index][key])
            assert value.data_ptr() != live[index][key].data_ptr()


def test_carry_moments_copies_a_host_state_to_the_parameters_device_and_leaves_it_untouched() -> None:
    previous = host_optimizer_state(_trained_optimizer())
    snapshot = {i: {k: v.clone() for k, v in e.items()} for i, e in previous["state"].items()}
    sae = build_sae(D_IN, chain_config(), seed=1).to("meta")
    optimizer = sae_trainer(sae, iter([]), n_steps=1, batch_size=8, lr=1e-4, warmup_steps=0).optimizer
    carry_moments(optimizer, previous)
    for param in optimizer.param_groups[0]["params"]:
        state = optimizer.state[param]
        assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta"
        assert state["step"].device.type == "cpu"  # non-fused Adam keeps its step count on the host
    assert optimizer.param_groups[0]["lr"] == 1e-4
    cpu = sae_trainer(build_sae(D_IN, chain_config(), seed=1), iter([]), n_steps=1, batch_size=8, lr=1e-4,
                      warmup_steps=0).optimizer  # fmt: skip
    carry_moments(cpu, previous)
    for param in cpu.param_groups[0]["params"]:
        cpu.state[param]["exp_avg"].add_(1.0)  # training the next link must not write into the previous state
    assert all(torch.equal(v, snapshot[i][k]) for i, e in previous["state"].items() for k, v in e.items())


@pytest.mark.parametrize("decoder_norm", ["unit", "weighted"])
def test_sae_lens_step_runs_on_the_meta_device(decoder_norm: str) -> None:
    """SAELens' step as train_sae runs it (forward, statistics, clipping, Adam, schedules) with the loss window's
    copies: no data-dependent operation (those fail on meta) and no tensor off the device but Adam's step counts."""
    sae = build_sae(D_IN, chain_config(decoder_norm=decoder_norm), seed=0).to("meta")
    batches = iter([torch.empty(32, D_IN, device="meta") for _ in range(3)])
    trainer = sae_trainer(sae, batches, n_steps=3, batch_size=32, lr=1e-3, warmup_steps=1)
    window = LossWindow(3, torch.device("meta"))
    with DeviceRecorder() as recorder:
        for batch in batches:
            out = trainer.step(batch)
            trainer.n_training_steps += 1
            window.add(out.losses["mse_loss"], out.losses["l1_loss"], out.loss)
    off = recorder.off_device("meta")
    # non-fused Adam (meta has no fused kernel) counts steps in 0-dim CPU tensors; fused Adam keeps them on CUDA
    assert {op for op, _, _ in off} <= {"aten.lift_fresh.default", "aten.add_.Tensor"} and all(s == () for *_, s in off)
    assert len(off) == 4 + 3 * 4 and len(recorder.outputs) > 100
    assert all(p.device.type == "meta" for p in sae.parameters()) and window.rows.device.type == "meta"
    assert trainer.act_freq_scores.device.type == "meta" and trainer.n_forward_passes_since_fired.device.type == "meta"
    assert all(trainer.optimizer.state[p]["exp_avg"].device.type == "meta" for p in sae.parameters())
