"""Tests of the JapaneseVowels loader (shipped UCI/UEA data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesattn.data.japanese_vowels import SequenceSplit, load_japanese_vowels


@pytest.fixture(scope="module")
def data():
    return load_japanese_vowels()


def test_shapes_and_split_sizes(data):
    assert data.num_classes == 9 and data.num_features == 12
    assert data.train.x.shape == (270, 26, 12) and data.test.x.shape == (370, 29, 12)
    assert len(data.train) == 270 and len(data.test) == 370
    assert data.train.x.dtype == torch.float32
    assert data.train.padding_mask.dtype == torch.bool


def test_published_class_counts_and_lengths(data):
    # Kudo et al. (1999) / UCI: 30 training utterances per speaker; test counts per speaker
    assert torch.bincount(data.train.y).tolist() == [30] * 9
    assert torch.bincount(data.test.y).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    lengths = torch.cat([data.train.lengths, data.test.lengths])
    assert int(lengths.min()) == 7 and int(lengths.max()) == 29


def test_padding_mask_matches_lengths_and_zeros(data):
    for split in (data.train, data.test):
        T = split.x.shape[1]
        expect = torch.arange(T)[None, :] >= split.lengths[:, None]
        assert torch.equal(split.padding_mask, expect)
        assert split.x[split.padding_mask].abs().max() == 0
        assert torch.isfinite(split.x).all()
        # LPC cepstra are never exactly zero on a real frame
        assert (split.x[~split.padding_mask].abs().sum(-1) > 0).all()


def test_values_match_the_file(data):
    from importlib import resources

    with resources.as_file(resources.files("bayesattn.data") / "japanese_vowels.npz") as path:
        raw = np.load(path)
        X, y = raw["X_test"], raw["y_test"]
    n, t = 123, 4
    assert np.allclose(data.test.x[n, t].numpy(), X[n, :, t], atol=1e-6)
    assert data.test.y[n] == y[n] - 1


def test_standardisation(data):
    mean, std = data.train.feature_mean_std()
    tr = data.train.standardized(mean, std)
    frames = tr.x[~tr.padding_mask].double()
    assert torch.allclose(frames.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(frames.std(0), torch.ones(12, dtype=torch.float64), atol=1e-5)
    assert tr.x[tr.padding_mask].abs().max() == 0
    with pytest.raises(ValueError, match="std"):
        data.train.standardized(mean, -std)
    with pytest.raises(ValueError, match="mean"):
        data.train.standardized(mean[:3], std)


def test_dtype_argument():
    assert load_japanese_vowels(dtype=torch.float64).train.x.dtype == torch.float64
    with pytest.raises(TypeError, match="dtype"):
        load_japanese_vowels(dtype=torch.int64)


def test_constant_feature_rejected():
    x = torch.ones(2, 3, 1)
    split = SequenceSplit(x, torch.zeros(2, 3, dtype=torch.bool), torch.tensor([3, 3]),
                          torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="constant"):
        split.feature_mean_std()
