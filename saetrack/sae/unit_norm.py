"""The unit-norm decoder constraint of Eq. 5, in one place.

With ``ChainConfig.decoder_norm = "unit"`` the paper's SAE keeps every decoder row ``W_dec[i]`` at unit L2 norm and
uses the plain L1 penalty (Eq. 5). SAELens 6 has no such option, so the constraint is kept here, as the original
SAELens (and the paper's fork of it) kept it:

1. rows are rescaled to unit norm before a training forward pass, unless ``W_dec`` is unchanged since the last
   rescaling (:meth:`UnitNormDecoder.ensure_normalized`);
2. the gradient component parallel to each row is removed during the backward pass — on SAELens' autograd path by a
   hook on ``W_dec`` (:meth:`UnitNormDecoder.attach_gradient_projection`, :func:`project_gradient`), on the fused
   training step (:mod:`saetrack.sae.step`) inside its backward (:func:`project_gradient_unit_rows_`, the fast path
   for rows already of unit norm);
3. rows are rescaled again after every optimizer step (:meth:`UnitNormDecoder.after_optimizer_step`), so the saved
   weights are exactly unit-norm.

:class:`saetrack.sae.model.SAETrackSAE` owns one :class:`UnitNormDecoder`; nothing else touches the constraint.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

__all__ = [
    "UnitNormDecoder",
    "normalize_rows_",
    "project_gradient",
    "project_gradient_unit_rows_",
    "rows_unit_norm",
]


@torch.no_grad()
def normalize_rows_(w_dec: torch.Tensor) -> None:
    """Rescale every row of ``w_dec`` (``[d_sae, d_in]``) to unit L2 norm in place (rows of norm 0 stay 0)."""
    norms = w_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    w_dec.div_(norms)


@torch.no_grad()
def rows_unit_norm(w_dec: torch.Tensor, tol: float = 1e-5) -> bool:
    """Whether every row of ``w_dec`` has unit L2 norm to within ``tol``."""
    return bool(((w_dec.norm(dim=1) - 1).abs() <= tol).all())


def project_gradient(grad: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """``grad`` with each row's component along the corresponding (normalised) row of ``w_dec`` removed.

    The tangent-space projection of Eq. 5's constraint: ``g_i - (g_i . u_i) u_i`` with ``u_i = w_i / ||w_i||``.
    """
    direction = w_dec.detach()
    direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-12)
    parallel = (grad * direction).sum(dim=1, keepdim=True)
    return grad - parallel * direction


def project_gradient_unit_rows_(grad: torch.Tensor, w_dec: torch.Tensor) -> None:
    """In place, the projection of :func:`project_gradient` for rows ``w_dec`` already of unit norm (two passes)."""
    along = torch.linalg.vecdot(grad, w_dec)
    grad.addcmul_(along[:, None], w_dec, value=-1.0)


class UnitNormDecoder:
    """Eq. 5's constraint on one SAE's ``W_dec``: rescaling, gradient projection, rescaling after optimizer steps.

    Methods take the SAE's current ``W_dec`` (``load_state_dict(assign=True)`` may replace the parameter). The
    object remembers which tensor version it last rescaled, so a forward pass right after an optimizer step that
    already rescaled does no extra work, and which parameter carries the projection hook.
    """

    def __init__(self) -> None:
        self._normalized: tuple[Any, int] | None = None
        self._projected: Any = None

    def normalize_(self, w_dec: torch.Tensor) -> None:
        """Rescale the rows of ``w_dec`` to unit norm now and remember the tensor version."""
        normalize_rows_(w_dec)
        self._normalized = (weakref.ref(w_dec), w_dec._version)

    def is_normalized(self, w_dec: torch.Tensor) -> bool:
        """Whether ``w_dec`` is unchanged (same tensor, no in-place write) since :meth:`normalize_`."""
        last = self._normalized
        return last is not None and last[0]() is w_dec and last[1] == w_dec._version

    def ensure_normalized(self, w_dec: torch.Tensor) -> None:
        """Rescale the rows unless they are unchanged since the last rescaling (step 1 of the module docstring)."""
        if not self.is_normalized(w_dec):
            self.normalize_(w_dec)

    def has_gradient_projection(self, w_dec: torch.Tensor) -> bool:
        """Whether the parameter ``w_dec`` carries the projection hook."""
        return self._projected is not None and self._projected() is w_dec

    def attach_gradient_projection(self, w_dec: torch.Tensor) -> None:
        """Attach (once per ``W_dec`` parameter) the hook applying :func:`project_gradient` to its gradient."""
        if self.has_gradient_projection(w_dec):
            return
        w_dec.register_hook(lambda grad: project_gradient(grad, w_dec))
        self._projected = weakref.ref(w_dec)

    def after_optimizer_steps(self, optimizer: torch.optim.Optimizer, sae: Any) -> None:
        """Rescale ``sae.W_dec`` now and after every step of ``optimizer`` (step 3 of the module docstring)."""
        self.normalize_(sae.W_dec)
        optimizer.register_step_post_hook(lambda _optimizer, _args, _kwargs: self.normalize_(sae.W_dec))
