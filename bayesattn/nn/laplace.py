"""Last-layer Laplace approximation for a classifier's linear read-out.

A Gaussian posterior over the weights and bias of the final linear layer only, centred at the
trained values, with precision ``G + tau I`` where ``G`` is the generalised Gauss-Newton
(equal to the Fisher for softmax cross-entropy) of the training loss in those weights and
``tau`` the prior precision; predictions use the linearised (GLM) predictive, exact in the
last layer because the logits are linear in its weights. Sources: Kristiadi, Hein & Hennig
(ICML 2020, "Being Bayesian, even just a bit, fixes overconfidence in ReLU networks");
Daxberger et al. (NeurIPS 2021, "Laplace Redux", last-layer + full GGN, prior precision by
validation); Immer, Korzepa & Bauer (AISTATS 2021, GLM predictive). Written here because
``laplace-torch`` pulls its own build of torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .training import check_sequence_data, iterate_minibatches

__all__ = ["LastLayerLaplace"]


class LastLayerLaplace:
    """Laplace posterior over ``head.weight (C, D)`` and ``head.bias (C,)`` of a classifier.

    With features ``phi~_n = [phi(x_n), 1]`` (the head's input and a 1 for the bias) and
    ``theta = vec(W~)`` (row-major ``C x (D + 1)``), the GGN of the summed cross-entropy is
    ``G = sum_n (diag(p_n) - p_n p_n^T) kron phi~_n phi~_n^T``; the posterior is
    ``N(theta_MAP, (G + tau I)^{-1})`` and the logits of ``x`` are Gaussian,
    ``f ~ N(f_MAP(x), J Sigma J^T)``, ``J = I_C kron phi~^T``.

    Args:
        model: classifier ``model(x, padding_mask) -> logits`` whose last operation is the
            linear layer ``head``.
        head: that ``nn.Linear`` (default ``model.head``).

    Raises:
        TypeError: ``head`` is not an ``nn.Linear`` with a bias.
    """

    def __init__(self, model: nn.Module, head: nn.Linear | None = None) -> None:
        head = model.head if head is None else head
        if not isinstance(head, nn.Linear) or head.bias is None:
            raise TypeError("head must be an nn.Linear with a bias")
        self.model, self.head = model, head
        self.ggn: torch.Tensor | None = None
        self.prior_precision: float = 1.0

    @torch.no_grad()
    def _features(self, x, padding_mask, batch_size=512):
        """``(phi~ (N, D + 1), logits (N, C))`` in eval mode, float64."""
        check_sequence_data(x, padding_mask)
        captured = []
        hook = self.head.register_forward_pre_hook(lambda _, inp: captured.append(inp[0]))
        was_training = self.model.training
        self.model.eval()
        try:
            logits = torch.cat([self.model(xb, pm) for _, xb, pm, _ in iterate_minibatches(
                x, padding_mask, None, batch_size, shuffle=False)])
        finally:
            hook.remove()
            self.model.train(was_training)
        phi = torch.cat(captured).double()
        return torch.cat([phi, torch.ones(len(phi), 1, dtype=phi.dtype)], -1), logits.double()

    def fit(self, x: torch.Tensor, padding_mask: torch.Tensor | None, y: torch.Tensor):
        """Accumulate the GGN ``G`` on the training data ``x (N, T, F)``; returns ``self``.

        Raises:
            TypeError, ValueError: malformed data.
        """
        check_sequence_data(x, padding_mask, y)
        phi, logits = self._features(x, padding_mask)
        p = logits.softmax(-1)
        lam = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (N, C, C)
        C, D1 = p.shape[1], phi.shape[1]
        self.ggn = torch.einsum("nab,ni,nj->aibj", lam, phi, phi).reshape(C * D1, C * D1)
        return self

    def _logit_moments(self, x, padding_mask, prior_precision):
        if self.ggn is None:
            raise RuntimeError("call fit() first")
        phi, f_map = self._features(x, padding_mask)
        N, D1 = phi.shape
        C = f_map.shape[1]
        precision = self.ggn + prior_precision * torch.eye(C * D1, dtype=torch.float64)
        chol = torch.linalg.cholesky(precision)
        # J_n^T (C D1, C): block c holds phi~_n in rows c*D1..(c+1)*D1 of column c
        jt = torch.zeros(C, D1, N, C, dtype=torch.float64)
        for c in range(C):
            jt[c, :, :, c] = phi.T
        a = torch.linalg.solve_triangular(chol, jt.reshape(C * D1, N * C), upper=False)
        a = a.reshape(C * D1, N, C)
        cov = torch.einsum("kna,knb->nab", a, a)  # J Sigma J^T, (N, C, C)
        return f_map, cov

    def predict(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None,
        *,
        num_samples: int = 64,
        prior_precision: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Monte-Carlo class probabilities ``(S, N, C)`` from the Gaussian logits.

        Args:
            x, padding_mask: inputs ``(N, T, F)``, ``(N, T)``.
            num_samples: draws ``S`` of the logits per input.
            prior_precision: ``tau`` (default :attr:`prior_precision`).
            generator: random numbers for the draws.

        Raises:
            RuntimeError: :meth:`fit` not called.
            ValueError: ``num_samples < 1`` or non-positive ``prior_precision``.
        """
        tau = self.prior_precision if prior_precision is None else prior_precision
        if not tau > 0:
            raise ValueError(f"prior_precision must be positive, got {tau}")
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        f_map, cov = self._logit_moments(x, padding_mask, float(tau))
        C = f_map.shape[1]
        chol = torch.linalg.cholesky(cov + 1e-10 * torch.eye(C, dtype=cov.dtype))
        eps = torch.randn(num_samples, *f_map.shape, dtype=f_map.dtype, generator=generator)
        f = f_map + torch.einsum("nab,snb->sna", chol, eps)
        return f.softmax(-1).float()

    def optimize_prior_precision(
        self,
        x_val: torch.Tensor,
        padding_mask_val: torch.Tensor | None,
        y_val: torch.Tensor,
        grid: Sequence[float] = tuple(10.0 ** k for k in range(-3, 5)),
        *,
        num_samples: int = 64,
        seed: int = 0,
    ) -> float:
        """Set :attr:`prior_precision` to the ``grid`` value with the lowest validation NLL.

        (Daxberger et al. 2021, section 3: prior precision by validation likelihood.) The
        same random draws (``seed``) are used for every grid value.

        Returns:
            the chosen ``tau``.

        Raises:
            RuntimeError: :meth:`fit` not called.
            ValueError: an empty ``grid`` or non-positive values.
        """
        if not grid or any(not g > 0 for g in grid):
            raise ValueError("grid must hold positive prior precisions")
        best, best_nll = None, float("inf")
        for tau in grid:
            probs = self.predict(x_val, padding_mask_val, num_samples=num_samples,
                                 prior_precision=float(tau),
                                 generator=torch.Generator().manual_seed(seed)).mean(0)
            nll = float(-probs.double().gather(-1, y_val.view(-1, 1)).clamp_min(1e-12).log()
                        .mean())
            if nll < best_nll:
                best, best_nll = float(tau), nll
        self.prior_precision = best
        return best
