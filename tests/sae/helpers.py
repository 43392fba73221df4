"""SAEs, chain sections and training steps shared by the tests of saetrack.sae."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from saetrack.config import ChainConfig
from saetrack.sae.model import SAETrackSAE, build_sae

#: Input width of the SAEs of the model, io, training and recurrent-init tests.
D_IN = 16


def chain_config(**overrides: object) -> ChainConfig:
    """A unit-norm chain section (expansion 4, lambda 3e-3) with ``overrides``."""
    base = ChainConfig(schedule=(0, 1, 2), expansion_factor=4, l1_coefficient=3e-3, decoder_norm="unit")
    return dataclasses.replace(base, **overrides)


def randomise_biases(sae: SAETrackSAE, seed: int = 0) -> None:
    """Give ``sae`` random encoder and decoder biases (a fresh SAE has zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=gen))
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=gen))


#: Sizes of the float64 SAE of the fused-step tests.
STEP_D_IN, STEP_EXPANSION, STEP_BATCH, STEP_L1 = 12, 4, 40, 0.05


def float64_sae(decoder_norm: str, apply_b_dec: bool) -> SAETrackSAE:
    """A float64 SAE with random biases and, for Eq. 4, decoder rows of different norms."""
    chain = ChainConfig(
        schedule=(0,), expansion_factor=STEP_EXPANSION, l1_coefficient=STEP_L1, decoder_norm=decoder_norm
    )
    sae = build_sae(STEP_D_IN, dataclasses.replace(chain, apply_b_dec_to_input=apply_b_dec), seed=0, dtype="float64")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random biases and, for Eq. 4, decoder rows of different norms
        sae.b_enc.copy_(0.3 * torch.randn(sae.b_enc.shape, generator=gen, dtype=torch.float64))
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=gen, dtype=torch.float64))
        if decoder_norm == "weighted":
            sae.W_dec.mul_(torch.linspace(0.5, 2.0, sae.cfg.d_sae, dtype=torch.float64)[:, None])
    return sae


def float64_batch(seed: int = 2) -> torch.Tensor:
    """A seeded float64 batch of activations ``[STEP_BATCH, STEP_D_IN]``."""
    return 2 * torch.randn(STEP_BATCH, STEP_D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def forward_backward(sae: SAETrackSAE, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Losses and parameter gradients of one training forward/backward pass."""
    sae.zero_grad(set_to_none=True)
    step = TrainStepInput(sae_in=x, coefficients={"l1": STEP_L1}, dead_neuron_mask=None, n_training_steps=0,
                          is_logging_step=False)  # fmt: skip
    out = sae.training_forward_pass(step)
    out.loss.backward()
    values = {**{k: v.detach() for k, v in out.losses.items()}, "loss": out.loss.detach()}
    values |= {"feature_acts": out.feature_acts, "sae_out": out.sae_out, "hidden_pre": out.hidden_pre}
    return values, [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]


class DeviceRecorder(TorchDispatchMode):
    """Records ``(op, device, shape)`` of every tensor each dispatched operator returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[tuple[str, str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.outputs.append((str(func), leaf.device.type, tuple(leaf.shape)))
        return out

    def off_device(self, device_type: str) -> list[tuple[str, str, tuple[int, ...]]]:
        """The recorded outputs that are not on ``device_type``."""
        return [o for o in self.outputs if o[1] != device_type]


def meta_step_tensors(d_in: int = 6, d_sae: int = 24, batch: int = 5) -> tuple[torch.Tensor, ...]:
    """``(x, W_enc, b_enc, W_dec, b_dec, l1_weights)`` of float32 on the meta device, all requiring gradients."""
    shapes = ((batch, d_in), (d_in, d_sae), (d_sae,), (d_sae, d_in), (d_in,), (d_sae,))
    return tuple(torch.empty(shape, device="meta").requires_grad_(True) for shape in shapes)
