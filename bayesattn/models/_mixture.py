"""The key-selection likelihood ``y_i ~ sum_j w_ij N(v_j, noise^2 I)``, evaluated in row chunks.

The weights ``w (L, S)`` of every query over every key are never held at once: the rows are
processed ``rows_per_chunk`` at a time, and under autograd each chunk is recomputed in the
backward pass (``torch.utils.checkpoint``), so one likelihood + gradient evaluation keeps
``O(rows_per_chunk * S + L)`` numbers instead of ``O(L * S)`` (docs/design.md, "Key-selection
models"). The mixture over keys is the marginal of ``z_i ~ Cat(w_i)``,
``y_i | z_i = j ~ N(v_j, noise^2 I)``; its log-density is
``logsumexp_j(log w_ij + log N(y_i; v_j, noise^2 I))``.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.utils.checkpoint import checkpoint

__all__ = ["KeyMixture", "rows_per_chunk"]

def rows_per_chunk(num_keys: int, itemsize: int, matrix_bytes: int) -> int:
    """Rows of one ``(rows, S)`` matrix of ``itemsize``-byte numbers in ``matrix_bytes`` (>= 1).

    One chunk holds about ``Ev + 8`` such matrices (the residuals ``y_i - v_j`` and a few
    temporaries: logits, log-weights, log-densities).
    """
    return max(1, int(matrix_bytes) // max(1, num_keys * itemsize))


class KeyMixture(dist.TorchDistribution):
    """``y_i ~ sum_j w_ij N(v_j, noise^2 I)`` for ``n`` rows; ``log w`` computed in row chunks.

    Batch shape ``(n,)``, event shape ``(Ev,)``. ``log_weights(sl)`` returns the normalised log
    weights ``(len(sl), S)`` of the rows in slice ``sl``; it is called once per chunk (twice
    under autograd: forward and recomputation in backward).

    Args:
        log_weights: ``slice -> (rows, S)`` log attention weights of those rows.
        value: ``(S, Ev)`` the values (component means).
        noise: scalar tensor, the component standard deviation (value units).
        num_rows: ``n``.
        chunk_rows: rows per chunk (see :func:`rows_per_chunk`).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)
    has_rsample = False

    def __init__(self, log_weights: Callable[[slice], torch.Tensor], value: torch.Tensor,
                 noise: torch.Tensor, num_rows: int, chunk_rows: int):
        self._log_weights_fn = log_weights
        self.value, self.noise = value, noise
        self.num_rows, self.chunk_rows = int(num_rows), max(1, int(chunk_rows))
        super().__init__(batch_shape=torch.Size([self.num_rows]),
                         event_shape=torch.Size([value.shape[1]]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        """Only the identity expansion (the rows are fixed by the data).

        Raises:
            NotImplementedError: any other ``batch_shape``.
        """
        if tuple(batch_shape) == tuple(self.batch_shape):
            return self
        raise NotImplementedError("KeyMixture cannot be expanded to a new batch shape")

    def log_weights(self, sl: slice) -> torch.Tensor:
        """Normalised log weights ``(rows, S)`` of the rows in ``sl``."""
        return self._log_weights_fn(sl)

    def chunks(self):
        """Row slices of at most ``chunk_rows`` rows covering ``0..n-1``."""
        for start in range(0, self.num_rows, self.chunk_rows):
            yield slice(start, min(self.num_rows, start + self.chunk_rows))

    def _chunk_log_prob(self, y, sl):
        log_w = self.log_weights(sl)
        comp = dist.Normal(self.value, self.noise).log_prob(y.unsqueeze(-2)).sum(-1)
        return torch.logsumexp(log_w + comp, dim=-1)

    def log_prob(self, value):
        """``log p(y_i)``, ``(n,)``, for ``value (n, Ev)``.

        Raises:
            ValueError: ``value`` is not ``(n, Ev)``.
        """
        shape = (*self.batch_shape, *self.event_shape)
        if tuple(value.shape) != shape:
            raise ValueError(f"KeyMixture.log_prob needs a value of shape {shape}, "
                             f"got {tuple(value.shape)}")
        recompute = torch.is_grad_enabled() and self.num_rows > self.chunk_rows
        out = []
        for sl in self.chunks():
            if recompute:
                out.append(checkpoint(self._chunk_log_prob, value[sl], sl, use_reentrant=False,
                                      preserve_rng_state=False))
            else:
                out.append(self._chunk_log_prob(value[sl], sl))
        return torch.cat(out)

    def sample(self, sample_shape=()):
        """Draws ``(*sample_shape, n, Ev)``: ``z_i ~ Cat(w_i)``, then ``v_z + noise * eps``."""
        with torch.no_grad():
            num = int(torch.Size(sample_shape).numel())
            draws = []
            for _ in range(num):
                rows = []
                for sl in self.chunks():
                    w = self.log_weights(sl).exp()
                    z = torch.multinomial(w, 1).squeeze(-1)
                    rows.append(self.value[z] + self.noise * torch.randn(
                        z.shape[0], self.value.shape[1], dtype=self.value.dtype,
                        device=self.value.device))
                draws.append(torch.cat(rows))
            return torch.stack(draws).reshape(*sample_shape, *self.batch_shape,
                                              *self.event_shape)
