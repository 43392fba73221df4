"""One SAE trained data-parallel over the ranks of a job: each rank takes its share of every batch, the gradients are
averaged before the optimizer sees them, and every rank ends with the same weights.

The global batch of step ``t`` is the one a single process would train on (the same rows in the same order, from the
same seeded shuffle); rank ``r`` of ``W`` takes rows ``[r B/W, (r+1) B/W)`` of it (:func:`shard_batches`). The loss of
Eq. 3 is a mean over the batch's tokens, so the mean of the ranks' gradients is the gradient of the global batch:

* **gradients**: each parameter's gradient is all-reduced (summed, divided by ``W``) the moment backward has
  accumulated it (``register_post_accumulate_grad_hook``), before SAELens clips the gradient norm at 1.0 and Adam
  steps, so the clipping, Adam's moments and the unit-norm renormalisation see the global gradient on every rank;
* **firing statistics**: after every optimizer step the steps-since-fired counts are reduced with ``MIN`` (a feature
  that fired on any rank fired in the global batch), so TopK's auxiliary loss sees the same dead features as a single
  process; the firing counts are summed once at the end (:func:`total_firing_frequency`);
* **losses**: the loss window read back every few steps is averaged over ranks (:func:`mean_over_ranks`), so the loss
  curve, the NaN check and the progress bar are the global batch's;
* **start**: the parameters and buffers are broadcast from rank 0 before the first step (:func:`broadcast_state`).

What differs from the single process is the order of floating-point sums: a rank sums its ``B/W`` rows, the
all-reduce sums the ``W`` partial means. On float32 that moves the last bits of a step's gradient, and training
carries such differences on (``tests/distributed/test_data_parallel.py`` states the tolerance it measures). BatchTopK
is refused: it keeps the ``k B`` largest activations of the whole batch, which no rank sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from sae_lens import SAETrainer

from saetrack.distributed.ranks import Ranks

__all__ = [
    "any_over_ranks",
    "average_gradients",
    "broadcast_state",
    "check_data_parallel",
    "data_parallel_step",
    "mean_over_ranks",
    "shard_batches",
    "total_firing_frequency",
]


def check_data_parallel(architecture: str, batch_size: int, ranks: Ranks) -> None:
    """Refuse what data-parallel training cannot do exactly: a batch that does not split evenly over the ranks, and
    BatchTopK (its selection is over the whole batch). One ``ValueError`` naming the fix; one rank passes anything."""
    if not ranks.distributed:
        return
    if batch_size % ranks.world_size:
        raise ValueError(
            f"chain.batch_size = {batch_size} does not split over {ranks.world_size} ranks: use a multiple of the "
            "number of ranks, so every rank trains on the same share of each batch."
        )
    if architecture == "batchtopk":
        raise ValueError(
            "chain.architecture = 'batchtopk' cannot train data-parallel: it keeps the k x batch largest activations "
            "of the whole batch, which no rank sees. Use 'topk' (per token) or one rank."
        )


def shard_batches(batches: Iterator[torch.Tensor], ranks: Ranks) -> Iterator[torch.Tensor]:
    """This rank's rows of each global batch (:meth:`Ranks.shard`), as new contiguous tensors."""
    for batch in batches:
        yield batch[ranks.shard(batch.shape[0])].contiguous()


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` averaged over the ranks (all-reduced in place and returned); unchanged with one rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def any_over_ranks(flag: torch.Tensor) -> bool:
    """Whether the boolean ``flag`` (a 0-d tensor) is true on any rank (one all-reduce ``MAX``; a host sync)."""
    value = flag.to(torch.int32).reshape(1)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def average_gradients(parameters: Sequence[torch.Tensor]) -> None:
    """Every parameter's gradient replaced by its mean over the ranks, in one all-reduce of all gradients laid end to
    end (after ``backward``, before the optimizer step: what DDP does, in one bucket).

    A parameter without a gradient on a rank counts as zero there; it has a gradient afterwards when it had one on some
    rank (as in one process training the whole global batch) and stays without one when it had none on any rank, so
    Adam treats it alike on every rank and as a single process would.
    """
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
    has_grad = torch.tensor([p.grad is not None for p in parameters], dtype=grads[0].dtype, device=grads[0].device)
    flat = mean_over_ranks(torch.cat([*(g.reshape(-1) for g in grads), has_grad]))
    # read back (a host sync) only when this rank lacks a gradient: else every parameter has one afterwards
    missing = any(p.grad is None for p in parameters)
    present = flat[-len(parameters) :].tolist() if missing else [1.0] * len(parameters)
    offset = 0
    for parameter, share in zip(parameters, present, strict=True):
        size = parameter.numel()
        parameter.grad = _laid_out_like(parameter, flat[offset : offset + size]) if share > 0 else None
        offset += size


def _laid_out_like(parameter: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` (the parameter's elements in logical order) as a gradient with the parameter's strides: a view when
    the parameter is contiguous, else a copy. Fused Adam reads a gradient in the parameter's memory order, so a
    contiguous gradient of a permuted parameter (the crosscoder's ``W_enc``) would update the wrong elements."""
    if parameter.is_contiguous():
        return values.view_as(parameter)
    return torch.empty_like(parameter).copy_(values.view(parameter.shape))


def broadcast_state(module: torch.nn.Module) -> None:
    """Every parameter and buffer of ``module`` replaced by rank 0's, so all ranks start from the same SAE."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def _average_gradient(parameter: torch.Tensor) -> None:
    """The hook run when backward has accumulated ``parameter.grad``: replace it by its mean over the ranks."""
    assert parameter.grad is not None
    mean_over_ranks(parameter.grad)


@contextlib.contextmanager
def data_parallel_step(trainer: SAETrainer[Any, Any]) -> Iterator[None]:
    """Within the block, every step of ``trainer`` is the global batch's step (module doc): gradients averaged as
    backward makes them, the steps-since-fired counts reduced after each optimizer step. Hooks removed on exit."""
    parameters = [p for p in trainer.sae.parameters() if p.requires_grad]
    handles = [p.register_post_accumulate_grad_hook(_average_gradient) for p in parameters]

    def share_firing(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        dist.all_reduce(trainer.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)

    handles.append(trainer.optimizer.register_step_post_hook(share_firing))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def total_firing_frequency(trainer: SAETrainer[Any, Any]) -> torch.Tensor:
    """Each feature's firing frequency over all ranks' training tokens: the summed firing counts over the summed
    token counts (SAELens' ``feature_sparsity`` of the global batches)."""
    counts = trainer.act_freq_scores.detach().clone()
    tokens = torch.tensor([float(trainer.n_frac_active_samples)], dtype=counts.dtype, device=counts.device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        dist.all_reduce(tokens, op=dist.ReduceOp.SUM)
    return counts / tokens
