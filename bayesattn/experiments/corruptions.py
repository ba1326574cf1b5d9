"""Corruptions of padded multivariate sequences at five severities (a distribution shift).

In the manner of ImageNet-C (Hendrycks & Dietterich, ICLR 2019): each corruption has five
severities and is applied to the (standardised) test utterances; models are trained on clean
data only. The inputs are :class:`bayesattn.data.japanese_vowels.SequenceSplit` with features
standardised by the training statistics, so noise levels and gains are in training standard
deviations. Every corruption is drawn from a ``torch.Generator`` seeded by the caller, so all
models see the same corrupted data.

==================  ==========================================================================
``gaussian_noise``  ``x + sigma z`` on real frames, ``sigma`` = 0.1, 0.25, 0.5, 0.75, 1.0
``dropped_channels`` ``k`` of the ``F`` channels (per utterance, at random) set to 0 (the
                    training mean), ``k / F`` = 1/12, 2/12, 4/12, 6/12, 8/12 (rounded)
``time_warp``       resampled by linear interpolation at a random speed ``a^u``,
                    ``u ~ U(-1, 1)``, ``a`` = 1.2, 1.4, 1.7, 2.0, 2.5, then a random window of
                    a fraction 0.9, 0.8, 0.65, 0.5, 0.35 of the frames kept (truncation);
                    at least 3 frames remain
``channel_scale``   each channel multiplied by ``exp(s z_c)`` per utterance,
                    ``s`` = 0.1, 0.25, 0.5, 0.75, 1.0
==================  ==========================================================================
"""

from __future__ import annotations

import math

import torch

from ..data.japanese_vowels import SequenceSplit

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

#: Corruption names, in table order.
CORRUPTIONS = ("gaussian_noise", "dropped_channels", "time_warp", "channel_scale")
#: Severities 1..5.
SEVERITIES = (1, 2, 3, 4, 5)

_NOISE = (0.1, 0.25, 0.5, 0.75, 1.0)
_DROP = (1 / 12, 2 / 12, 4 / 12, 6 / 12, 8 / 12)
_SPEED = (1.2, 1.4, 1.7, 2.0, 2.5)
_KEEP = (0.9, 0.8, 0.65, 0.5, 0.35)
_SCALE = (0.1, 0.25, 0.5, 0.75, 1.0)
_MIN_FRAMES = 3


def corrupt(split: SequenceSplit, name: str, severity: int, *, seed: int = 0) -> SequenceSplit:
    """The corrupted copy of ``split`` (see the module docstring for the definitions).

    Args:
        split: padded sequences ``x (N, T, F)`` (zeros after each end), ``padding_mask``,
            ``lengths``, ``y``.
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        seed: seeds the random draws.

    Returns:
        a new :class:`SequenceSplit` (labels unchanged; ``time_warp`` changes lengths and may
        change ``T``).

    Raises:
        ValueError: unknown ``name``; ``severity`` not in 1..5.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    gen = torch.Generator().manual_seed(seed * 1009 + CORRUPTIONS.index(name) * 10 + severity)
    x, pm = split.x, split.padding_mask
    keep = (~pm).unsqueeze(-1).to(x.dtype)
    N, T, F = x.shape
    s = severity - 1
    if name == "gaussian_noise":
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return SequenceSplit(x + _NOISE[s] * z * keep, pm, split.lengths, split.y)
    if name == "channel_scale":
        gain = torch.exp(_SCALE[s] * torch.randn(N, 1, F, generator=gen, dtype=x.dtype))
        return SequenceSplit(x * gain, pm, split.lengths, split.y)
    if name == "dropped_channels":
        k = max(1, round(_DROP[s] * F))
        ranks = torch.rand(N, F, generator=gen).argsort(-1).argsort(-1)
        kept = (ranks >= k).to(x.dtype).unsqueeze(1)  # (N, 1, F)
        return SequenceSplit(x * kept, pm, split.lengths, split.y)
    return _time_warp(split, _SPEED[s], _KEEP[s], gen)


def _time_warp(split: SequenceSplit, speed: float, keep_fraction: float, gen) -> SequenceSplit:
    x, lengths = split.x, split.lengths
    N, _, F = x.shape
    u = torch.rand(N, generator=gen) * 2 - 1
    factors = torch.exp(u * math.log(speed))  # > 1: faster (fewer frames)
    seqs = []
    for n in range(N):
        L = int(lengths[n])
        new_len = max(_MIN_FRAMES, round(L / float(factors[n])))
        pos = torch.linspace(0, L - 1, new_len, dtype=x.dtype)
        lo = pos.floor().long().clamp(max=L - 1)
        hi = (lo + 1).clamp(max=L - 1)
        w = (pos - lo.to(x.dtype)).unsqueeze(-1)
        warped = x[n, lo] * (1 - w) + x[n, hi] * w
        kept = max(_MIN_FRAMES, min(new_len, round(keep_fraction * new_len)))
        start = int(torch.randint(0, new_len - kept + 1, (1,), generator=gen))
        seqs.append(warped[start:start + kept])
    new_lengths = torch.tensor([len(q) for q in seqs], dtype=torch.long)
    T = int(new_lengths.max())
    out = x.new_zeros(N, T, F)
    for n, q in enumerate(seqs):
        out[n, :len(q)] = q
    pm = torch.arange(T).unsqueeze(0) >= new_lengths.unsqueeze(1)
    return SequenceSplit(out, pm, new_lengths, split.y)
