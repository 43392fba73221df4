"""The step loop of :func:`~saetrack.sae.training.train_sae` without host syncs, and Adam's state between links.

Host syncs. A CUDA step queues its kernels and returns; anything that reads a value back (``.item()``, ``float()``,
``bool()`` of a tensor, ``.tolist()``, ``.cpu()``) waits for the queue to drain. :func:`run_steps` reads nothing back
on most steps: each step's three losses are copied, on the device, into a window of rows (:class:`LossWindow`), and
the window is read back in one transfer every :func:`check_every` steps (a multiple of ``log_every``, at least
:data:`MIN_CHECK_STEPS`) and after the last step. The NaN/inf check and the loss curve are done on that host copy
(:func:`read_losses`): a non-finite loss raises :class:`NonFiniteLossError` naming its exact step (up to a window of
steps later than it happened). SAELens' ``SAETrainer.step`` itself (sae-lens 6.54.12: the training forward and
backward, its firing statistics, ``clip_grad_norm_`` at 1.0, Adam, the schedulers) reads nothing back either: it runs
through on the meta device, where any data-dependent operation (``nonzero``, ``.item()``) fails
(``tests/sae/test_loop.py``), and the Python-level reads of whole training runs are counted per step in
``tests/sae/test_training_syncs.py``. A step's ``[batch, d_sae]`` outputs are let go before the next step starts.

Adam's state. :func:`host_optimizer_state` copies it to the host at the end of a link (only when the caller keeps it,
``ChainConfig.optimizer_policy="carry"``), so the next link's training does not hold the previous moments on the
device; :func:`carry_moments` copies them back to the parameters' device.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from sae_lens import SAETrainer
from tqdm import tqdm

__all__ = [
    "MIN_CHECK_STEPS",
    "LossWindow",
    "NonFiniteLossError",
    "carry_moments",
    "check_every",
    "host_optimizer_state",
    "penalty_loss",
    "read_losses",
    "run_steps",
]


log = logging.getLogger(__name__)

#: Fewest steps between two reads of the losses back to the host (:func:`check_every`).
MIN_CHECK_STEPS = 32


class NonFiniteLossError(FloatingPointError):
    """The SAE training loss became NaN or infinite; ``step`` and ``n_tokens`` say when."""

    def __init__(self, step: int, n_tokens: int, losses: dict[str, float]) -> None:
        self.step = step
        self.n_tokens = n_tokens
        self.losses = losses
        shown = ", ".join(f"{k}={v}" for k, v in losses.items())
        super().__init__(f"non-finite SAE loss at step {step} after {n_tokens} training tokens ({shown}).")


# ----------------------------------------------------------------------------------------------
# Adam's state between links
# ----------------------------------------------------------------------------------------------


def host_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A copy of ``optimizer.state_dict()`` on the host: every state tensor copied to the CPU, nothing shared."""
    state = optimizer.state_dict()
    return {
        "state": {
            index: {key: _host_copy(value) for key, value in entry.items()} for index, entry in state["state"].items()
        },
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


def _host_copy(value: Any) -> Any:
    """A tensor copied to the CPU (a new tensor even when it is there already); anything else deep-copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    return copy.deepcopy(value)


def _device_copy(key: str, value: Any, device: torch.device) -> Any:
    """A copy of one Adam state entry for parameters on ``device``: moments moved there, ``step`` left to the
    optimizer's own placement policy (fused Adam keeps it on the device, the others on the CPU)."""
    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    if key == "step":
        return value.clone()
    return value.to(device, copy=True)


def carry_moments(optimizer: torch.optim.Optimizer, previous: dict[str, Any]) -> None:
    """Load the per-parameter Adam state of ``previous`` into ``optimizer``, keeping its own lr and schedule.

    The state (on the host, or anywhere) is copied to the parameters' device; ``previous`` is left untouched.
    """
    current = optimizer.state_dict()
    n_params = len(current["param_groups"][0]["params"])
    prev_groups = previous.get("param_groups", [])
    if len(prev_groups) != 1 or len(prev_groups[0]["params"]) != n_params:
        raise ValueError(
            f"optimizer_state does not fit this SAE: it has {len(prev_groups)} group(s) with "
            f"{[len(g['params']) for g in prev_groups]} parameters, the SAE has one group of {n_params}."
        )
    device = optimizer.param_groups[0]["params"][0].device
    current["state"] = {
        index: {key: _device_copy(key, value, device) for key, value in entry.items()}
        for index, entry in previous["state"].items()
    }
    optimizer.load_state_dict(current)


# ----------------------------------------------------------------------------------------------
# The step loop
# ----------------------------------------------------------------------------------------------


def check_every(log_every: int, n_steps: int) -> int:
    """Steps between two reads of the losses back to the host: the least multiple of ``log_every`` that is at least
    :data:`MIN_CHECK_STEPS` (never more than ``n_steps``, the last step always reads)."""
    return max(1, min(n_steps, log_every * math.ceil(MIN_CHECK_STEPS / log_every)))


class LossWindow:
    """Each step's ``(mse_loss, l1_loss, loss)`` kept on the device, a window of steps at a time, read back at once.

    Rows are float64, so float32 (or float64) losses are held exactly; :meth:`add` queues one stack and one copy on
    the losses' device and never waits for it.
    """

    def __init__(
        self, steps: int, device: torch.device, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.rows = torch.empty((steps, 3), dtype=torch.float64, device=device)
        self.first_step, self.n = 1, 0
        self.reduce = reduce

    def add(self, mse_loss: torch.Tensor, l1_loss: torch.Tensor, loss: torch.Tensor) -> None:
        """Record the next step's losses (detached; no host sync)."""
        self.rows[self.n].copy_(torch.stack([mse_loss.detach(), l1_loss.detach(), loss.detach()]))
        self.n += 1

    def read(self) -> tuple[int, list[list[float]]]:
        """``(first step, rows)`` of the window as Python floats (one host sync), then start the next window; with
        ``reduce`` (data-parallel training: the mean over ranks) the rows pass through it first."""
        window = self.rows[: self.n]
        first, rows = self.first_step, (window if self.reduce is None else self.reduce(window.clone())).tolist()
        self.first_step, self.n = first + self.n, 0
        return first, rows


def read_losses(
    window: LossWindow,
    pending: list[tuple[int, int, float]],
    curve: dict[str, list[float]],
    batch_size: int,
) -> dict[str, float]:
    """Read the window back: raise :class:`NonFiniteLossError` at its first non-finite loss, else append the log
    points ``pending`` (``(step, tokens, lr)``) to ``curve``; returns the last point's losses (for the progress bar)."""
    first, rows = window.read()
    for offset, (mse, l1, total) in enumerate(rows):
        if not math.isfinite(total):
            step = first + offset
            raise NonFiniteLossError(step, step * batch_size, {"mse_loss": mse, "l1_loss": l1})
    point: dict[str, float] = {}
    for step, tokens, lr in pending:
        mse, l1, total = rows[step - first]
        point = {"mse_loss": mse, "l1_loss": l1, "loss": total}
        curve["step"].append(step)
        curve["tokens"].append(tokens)
        for key, value in point.items():
            curve[key].append(value)
        curve["lr"].append(lr)
    pending.clear()
    return point


def penalty_loss(losses: dict[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """The loss curve's ``l1_loss`` column: the L1 term of Eq. 3 (``losses["l1_loss"]``), or for another architecture
    the sum of its terms beyond the reconstruction (JumpReLU's L0 penalty, TopK's auxiliary loss); zero if none."""
    if "l1_loss" in losses:
        return losses["l1_loss"]
    terms = [value for key, value in losses.items() if key != "mse_loss"]
    return torch.stack(terms).sum() if terms else torch.zeros_like(loss)


def run_steps(
    trainer: SAETrainer[Any, Any],
    data: Iterator[torch.Tensor],
    *,
    n_steps: int,
    batch_size: int,
    log_every: int,
    bar: tqdm,  # type: ignore[type-arg]
    desc: str,
    reduce_losses: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, list[float]]:
    """The step loop of :func:`train_sae`: ``n_steps`` SAELens steps of ``batch_size`` tokens (the global batch when
    the trainer sees a rank's share of it); the loss curve (module docstring: host syncs). ``reduce_losses``: applied
    to each window of losses before it is read (data-parallel training: the mean over ranks)."""
    curve: dict[str, list[float]] = {k: [] for k in ("step", "tokens", "mse_loss", "l1_loss", "loss", "lr")}
    every = check_every(log_every, n_steps)
    window = LossWindow(every, trainer.sae.W_dec.device, reduce_losses)
    pending: list[tuple[int, int, float]] = []
    for step in range(1, n_steps + 1):
        lr_now = trainer.optimizer.param_groups[0]["lr"]
        out = trainer.step(next(data))
        trainer.n_training_steps += 1
        window.add(out.losses["mse_loss"], penalty_loss(out.losses, out.loss), out.loss)
        del out  # the step's [batch, d_sae] outputs are not kept into the next step
        if step == 1 or step % log_every == 0 or step == n_steps:
            pending.append((step, step * batch_size, lr_now))
        if step % every == 0 or step == n_steps:
            point = read_losses(window, pending, curve, batch_size)
            bar.set_postfix(point, refresh=False)
            log.debug("%s step %d tokens %d %s", desc, step, step * batch_size, point)
        bar.update(batch_size)
    return curve
