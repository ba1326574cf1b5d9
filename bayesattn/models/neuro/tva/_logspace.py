"""Log-space helpers of the TVA likelihood that keep ``-inf`` (impossible reports) NaN-free."""

from __future__ import annotations

import math

import torch

_NEG_INF = -math.inf


def _safe_log(p: torch.Tensor) -> torch.Tensor:
    """``log p`` with ``log 0 = -inf`` and no NaN gradient at 0."""
    pos = p > 0
    return torch.where(pos, torch.log(torch.where(pos, p, torch.ones_like(p))), _NEG_INF)


def _safe_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` that returns ``-inf`` (with zero gradient) when every entry is ``-inf``."""
    m = x.amax(dim, keepdim=True)
    finite = torch.isfinite(m)
    m_safe = torch.where(finite, m, torch.zeros_like(m))
    s = torch.where(torch.isfinite(x), torch.exp(x - m_safe), torch.zeros_like(x)).sum(dim, True)
    out = torch.where(finite, m_safe + _safe_log(s), torch.full_like(m, _NEG_INF))
    return out.squeeze(dim)
