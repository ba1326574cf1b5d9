"""GP attention that propagates its predictive variance, in the spirit of SGPA.

Sparse Gaussian process attention (Chen & Li, ICLR 2023, "Calibrating Transformers via Sparse
Gaussian Processes", arXiv 2303.02444) reads each head's output as the posterior of a GP whose
inducing inputs are the keys and whose inducing outputs are the values, and passes a *sample*
of that posterior, not only its mean, to the next layer. Our layer keeps that idea with the
package's closed form (:func:`bayesattn.functional.gp_attention`, docs/design.md
"Least-squares attention"): per head, with a stationary kernel ``k`` of learnable lengthscale
``ell`` and noise ``ridge``::

    m(q)   = k(q, K) (k(K, K) + ridge I)^{-1} V                      (posterior mean)
    c(q)   = 1 - k(q, K) (k(K, K) + ridge I)^{-1} k(K, q)            (latent variance)
    head(q) = m(q) + amplitude * sqrt(c(q)) * eps,   eps ~ N(0, I_d)

``amplitude`` is the GP's prior standard deviation in units of the values (the mean does not
depend on it); it is a fixed hyperparameter (chosen on validation data), because a learned one
is driven to 0 by the likelihood alone. Differences from SGPA, stated: no variational
covariance of the inducing outputs (so no KL term), a shared isotropic lengthscale per layer,
and exact (not decoupled) inducing points.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional as Fn
from .._checks import check_choice, check_positive
from .attention import MultiheadAttention

__all__ = ["GPMultiheadAttention"]


class GPMultiheadAttention(MultiheadAttention):
    """Multi-head GP attention with sampled outputs (SGPA-style variance propagation).

    Each head computes :func:`bayesattn.functional.gp_attention` of its queries on its keys
    and values (mean and latent variance) and, with :attr:`sample` True, returns
    ``mean + amplitude * sqrt(variance) * eps`` with fresh standard-normal ``eps`` per output
    feature; with ``sample`` False the mean. Key padding is honoured exactly: each sequence
    regresses on its real keys only (``key_mask`` of
    :func:`bayesattn.functional.gp_attention`). Same constructor and
    forward as :class:`bayesattn.nn.MultiheadAttention` (``attention`` fixed); ``attn_mask``
    and ``is_causal`` are not supported (a GP regression per query set).

    Returned weights (``need_weights=True``) are the implied linear weights of the mean,
    ``k(q, K) (k(K, K) + ridge I)^{-1}`` (signed, rows need not sum to 1).

    Args:
        embed_dim, num_heads, dropout, bias, batch_first, device, dtype: as
            :class:`bayesattn.nn.MultiheadAttention` (``dropout`` acts only outside this
            module's GP regression: it is stored but the regression has no weights to drop).
        kernel: one of :data:`bayesattn.functional.GP_KERNELS`.
        lengthscale: initial lengthscale (default ``sqrt(d)``, the typical distance between
            projected unit-variance queries and keys); learnable (``log_lengthscale``).
        ridge: initial noise variance relative to the unit kernel amplitude; learnable
            (``log_ridge``).
        amplitude: prior sd of the GP in value units; scales the sampled noise.

    Raises:
        ValueError: unknown ``kernel``; non-positive ``lengthscale`` or ``ridge``; negative
            ``amplitude``; the errors of :class:`bayesattn.nn.MultiheadAttention`; in forward,
            an ``attn_mask`` or ``is_causal`` (only key padding is supported).
    """

    _EXTRA_PARAMETERS = ("log_lengthscale", "log_ridge")

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, device=None, dtype=None, *,
                 kernel: str = "rbf", lengthscale: float | None = None, ridge: float = 0.1,
                 amplitude: float = 1.0) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias, batch_first=batch_first,
                         device=device, dtype=dtype, attention="softmax")
        self.gp_kernel = check_choice("kernel", kernel, Fn.GP_KERNELS)
        ell = math.sqrt(self.head_dim) if lengthscale is None else lengthscale
        ell = check_positive("lengthscale", ell)
        ridge = check_positive("ridge", ridge)
        amplitude = check_positive("amplitude", amplitude, allow_zero=True)
        factory = {"device": device, "dtype": dtype}
        self.log_lengthscale = nn.Parameter(torch.tensor(math.log(ell), **factory))
        self.log_ridge = nn.Parameter(torch.tensor(math.log(ridge), **factory))
        self.amplitude = float(amplitude)
        self.sample = True

    @property
    def lengthscale(self) -> torch.Tensor:
        """Kernel lengthscale (0-dim tensor)."""
        return self.log_lengthscale.exp()

    def kl(self) -> torch.Tensor:
        """0: this layer has no variational parameters (see the module docstring)."""
        return self.log_ridge.new_zeros(())

    def attend(self, q, k, v, allowed, log_prior, key_valid, need_weights):
        """GP-attention mean and sampled output per head (keys masked by padding only).

        Shapes as :meth:`bayesattn.nn.MultiheadAttention.attend`.

        Raises:
            ValueError: a mask other than key padding.
        """
        if log_prior is not None or (allowed is not None and allowed.shape[-2] != 1):
            raise ValueError("GPMultiheadAttention supports key padding only (no attn_mask, "
                             "no is_causal, no float masks)")
        d, S = q.shape[-1], k.shape[-2]
        key_mask = allowed  # (N|1, H|1, 1, S) or None: the same keys for every query
        if need_weights:  # regress the identity too: mean = weights @ V
            eye = torch.eye(S, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], S, S)
            v = torch.cat([v, eye], -1)
        mean, var = Fn.gp_attention(q, k, v, kernel=self.gp_kernel, lengthscale=self.lengthscale,
                                    ridge=self.log_ridge.exp(), return_variance=True,
                                    key_mask=key_mask, validate_args=False)
        weights = None
        if need_weights:
            mean, weights = mean[..., :d], mean[..., d:]
        if self.sample and self.amplitude > 0:
            noise = torch.randn_like(mean)
            mean = mean + self.amplitude * var.clamp_min(0).sqrt().unsqueeze(-1) * noise
        return mean, weights
