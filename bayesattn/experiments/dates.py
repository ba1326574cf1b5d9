"""Written dates to ISO 8601: an offline transduction task for encoder-decoder attention.

Each example is a date between 1 January 1900 and 31 December 2099 written in one of
:data:`FORMATS` (English names from Python's :mod:`calendar` module, lower case), e.g.
``"thursday, 3 march 2011"``, ``"the 3rd of mar 2011"``, ``"march 3, 2011"``, paired with its
ISO form ``"2011-03-03"``. The day, month and year appear in different orders in the
formats, so a decoder must find each in the source (the long-range alignment that attention
provides; D2L chapter 11 uses translation for the same purpose). The data are generated with a
seeded :class:`numpy.random.Generator`; the splits hold distinct dates.

Tokens are characters. Source vocabulary: ``<pad>``, then the characters of
:data:`SOURCE_CHARS`; target vocabulary: ``<pad>``, ``<bos>``, then ``0-9`` and ``-``. Every
target has exactly 10 characters, so decoding runs 10 steps (no end token is needed).
"""

from __future__ import annotations

import calendar
import datetime
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FORMATS", "SOURCE_CHARS", "TARGET_CHARS", "DateSplit", "write_date", "make_dates",
           "decode_target", "decode_source"]

#: characters of the written dates
SOURCE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 ,./"
#: characters of the ISO dates
TARGET_CHARS = "0123456789-"
PAD, BOS = 0, 1
TARGET_LENGTH = 10
#: the written forms (str.format fields: weekday, wd (3 letters), day, ordinal, month, mon
#: (3 letters), mm, dd, year)
FORMATS = (
    "{weekday}, {day} {month} {year}",
    "{day} {month} {year}",
    "{month} {day}, {year}",
    "{wd} {day} {mon} {year}",
    "the {ordinal} of {month} {year}",
    "{weekday} the {ordinal} of {mon}, {year}",
    "{dd}.{mm}.{year}",
    "{mon} {day} {year}",
)
_FIRST = datetime.date(1900, 1, 1).toordinal()
_LAST = datetime.date(2099, 12, 31).toordinal()


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def write_date(date: datetime.date, form: int) -> str:
    """``date`` written in ``FORMATS[form]`` (lower case English names from :mod:`calendar`).

    Raises:
        IndexError: ``form`` outside ``range(len(FORMATS))``.
    """
    weekday = calendar.day_name[date.weekday()].lower()
    month = calendar.month_name[date.month].lower()
    return FORMATS[form].format(
        weekday=weekday, wd=weekday[:3], day=date.day, ordinal=_ordinal(date.day), month=month,
        mon=month[:3], mm=f"{date.month:02d}", dd=f"{date.day:02d}", year=date.year,
    )


@dataclass
class DateSplit:
    """One split, as padded index tensors.

    Attributes:
        source: ``(N, S)`` int64 source tokens, padded with 0 on the right.
        source_padding_mask: ``(N, S)`` bool, True at padding.
        target: ``(N, 10)`` int64 target tokens.
        written, iso: the strings.
    """

    source: torch.Tensor
    source_padding_mask: torch.Tensor
    target: torch.Tensor
    written: list[str]
    iso: list[str]

    def __len__(self) -> int:
        return len(self.iso)


def _encode(written: list[str], iso: list[str]) -> DateSplit:
    src_index = {c: i + 1 for i, c in enumerate(SOURCE_CHARS)}
    tgt_index = {c: i + 2 for i, c in enumerate(TARGET_CHARS)}
    S = max(len(w) for w in written)
    source = torch.zeros(len(written), S, dtype=torch.int64)
    for n, w in enumerate(written):
        source[n, : len(w)] = torch.tensor([src_index[c] for c in w])
    target = torch.tensor([[tgt_index[c] for c in s] for s in iso], dtype=torch.int64)
    return DateSplit(source, source == PAD, target, written, iso)


def make_dates(sizes=(8000, 1000, 1000), *, seed: int = 0) -> tuple[DateSplit, ...]:
    """Distinct random dates, each in a random format, split into ``len(sizes)`` parts.

    Args:
        sizes: examples per split (train, validation, test).
        seed: seeds the generator (dates and formats).

    Returns:
        one :class:`DateSplit` per size.

    Raises:
        ValueError: a non-positive size, or more dates asked for than the range holds.
    """
    total = sum(sizes)
    if any(s < 1 for s in sizes) or total > _LAST - _FIRST + 1:
        raise ValueError(f"sizes must be positive and sum to at most {_LAST - _FIRST + 1}")
    rng = np.random.default_rng(seed)
    days = rng.choice(_LAST - _FIRST + 1, size=total, replace=False) + _FIRST
    forms = rng.integers(len(FORMATS), size=total)
    dates = [datetime.date.fromordinal(int(d)) for d in days]
    written = [write_date(d, int(f)) for d, f in zip(dates, forms, strict=True)]
    iso = [d.isoformat() for d in dates]
    splits, start = [], 0
    for size in sizes:
        splits.append(_encode(written[start:start + size], iso[start:start + size]))
        start += size
    return tuple(splits)


def decode_target(tokens: torch.Tensor) -> list[str]:
    """Strings of target token rows ``(N, T)`` (padding and ``<bos>`` dropped)."""
    return ["".join(TARGET_CHARS[t - 2] for t in row.tolist() if t >= 2) for row in tokens]


def decode_source(tokens: torch.Tensor) -> list[str]:
    """Strings of source token rows ``(N, S)`` (padding dropped)."""
    return ["".join(SOURCE_CHARS[t - 1] for t in row.tolist() if t >= 1) for row in tokens]
