"""The JapaneseVowels multivariate time-series classification data set (UCI / UEA archive).

Nine male speakers each utter the Japanese vowel /ae/; every utterance is a sequence of 7-29
frames of 12 LPC cepstrum coefficients (sampling 10 kHz, frame length 25.6 ms, shift 6.4 ms).
The task is to tell the speaker from the utterance. The standard split has 270 training
utterances (30 per speaker) and 370 test utterances (24-88 per speaker).

Sources: Kudo, Toyama & Shimbo (1999), "Multidimensional curve classification using
passing-through regions", Pattern Recognition Letters 20(11-13):1103-1111; the UCI Machine
Learning Repository ("Japanese Vowels", CC BY 4.0); the UEA multivariate time-series archive
(Bagnall et al. 2018, arXiv 1811.00075). Shipped as ``bayesattn/data/japanese_vowels.npz``
(arrays ``X_train (270, 12, 26)``, ``X_test (370, 12, 29)`` right-padded with NaN,
``lengths_*`` in frames and ``y_*`` in 1..9) and read with :mod:`importlib.resources`, so
nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

__all__ = ["SequenceSplit", "JapaneseVowels", "load_japanese_vowels"]

_FILE = "japanese_vowels.npz"


@dataclass(frozen=True)
class SequenceSplit:
    """One split of a padded multivariate sequence data set.

    Attributes:
        x: ``(N, T, F)`` float features, right-padded with zeros after each sequence's end.
        padding_mask: ``(N, T)`` bool, True at padded frames (the ``key_padding_mask``
            convention of :class:`torch.nn.MultiheadAttention`).
        lengths: ``(N,)`` int64 number of real frames per sequence.
        y: ``(N,)`` int64 class index in ``0..C-1``.
    """

    x: torch.Tensor
    padding_mask: torch.Tensor
    lengths: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def feature_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation over the real (unpadded) frames, ``(F,)`` each.

        Raises:
            ValueError: a feature is constant over the real frames (std 0).
        """
        valid = ~self.padding_mask
        frames = self.x[valid]  # (n_frames, F)
        mean = frames.mean(0)
        std = frames.std(0)
        if bool((std == 0).any()):
            raise ValueError("a feature is constant over the real frames; cannot standardise")
        return mean, std

    def standardized(self, mean: torch.Tensor, std: torch.Tensor) -> SequenceSplit:
        """A copy with ``(x - mean) / std`` on real frames and padded frames kept at 0.

        Use the training split's :meth:`feature_mean_std` for both splits.

        Args:
            mean: ``(F,)``.
            std: ``(F,)``, positive.

        Raises:
            ValueError: ``mean`` or ``std`` not of shape ``(F,)``, or ``std`` not positive.
        """
        F = self.x.shape[-1]
        for name, t in (("mean", mean), ("std", std)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (F,):
                raise ValueError(f"{name} must be a tensor of shape ({F},)")
        if not bool((std > 0).all()):
            raise ValueError("std must be positive")
        x = (self.x - mean.to(self.x.dtype)) / std.to(self.x.dtype)
        x = x.masked_fill(self.padding_mask.unsqueeze(-1), 0.0)
        return SequenceSplit(x, self.padding_mask, self.lengths, self.y)


@dataclass(frozen=True)
class JapaneseVowels:
    """The JapaneseVowels data set: ``train`` (270 utterances) and ``test`` (370 utterances).

    Attributes:
        train: :class:`SequenceSplit` with ``x (270, 26, 12)``.
        test: :class:`SequenceSplit` with ``x (370, 29, 12)``.
        num_classes: 9 speakers.
        num_features: 12 LPC cepstrum coefficients per frame.
    """

    train: SequenceSplit
    test: SequenceSplit
    num_classes: int = 9
    num_features: int = 12


def _split(arrays, name: str, dtype: torch.dtype) -> SequenceSplit:
    X = arrays[f"X_{name}"]  # (N, F, T), NaN-padded
    lengths = arrays[f"lengths_{name}"].astype(np.int64)
    y = arrays[f"y_{name}"].astype(np.int64)
    N, _, T = X.shape
    if lengths.shape != (N,) or y.shape != (N,):
        raise ValueError(f"{_FILE}: lengths_{name} / y_{name} do not match X_{name}")
    padded = np.arange(T)[None, :] >= lengths[:, None]  # (N, T)
    nan_frames = np.isnan(X).any(axis=1)
    if not np.array_equal(nan_frames, padded):
        raise ValueError(f"{_FILE}: the NaN padding of X_{name} disagrees with lengths_{name}")
    x = np.nan_to_num(np.transpose(X, (0, 2, 1)), nan=0.0)
    return SequenceSplit(
        x=torch.as_tensor(x, dtype=dtype),
        padding_mask=torch.as_tensor(padded),
        lengths=torch.as_tensor(lengths),
        y=torch.as_tensor(y - 1),
    )


def load_japanese_vowels(*, dtype: torch.dtype = torch.float32) -> JapaneseVowels:
    """Load the shipped JapaneseVowels data set (UCI / UEA; Kudo, Toyama & Shimbo 1999).

    Returns padded tensors in ``(batch, time, features)`` layout::

        data = load_japanese_vowels()
        data.train.x             # (270, 26, 12) LPC cepstrum coefficients, 0 after the end
        data.train.padding_mask  # (270, 26) bool, True = padded frame
        data.train.lengths       # (270,) frames, 7..26
        data.train.y             # (270,) speaker 0..8 (the file's 1..9 minus one)
        data.test.x              # (370, 29, 12)

    Args:
        dtype: floating dtype of ``x`` (default float32).

    Returns:
        :class:`JapaneseVowels`.

    Raises:
        TypeError: ``dtype`` is not a floating-point dtype.
        ValueError: the shipped file is inconsistent (padding disagrees with the lengths).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    ref = resources.files("bayesattn.data").joinpath(_FILE)
    with resources.as_file(ref) as path, np.load(path) as arrays:
        train = _split(arrays, "train", dtype)
        test = _split(arrays, "test", dtype)
    return JapaneseVowels(train=train, test=test)
