"""Tied spatial-weight regions of TVA: locations that share one attentional weight.

``regions`` is a partition of the ``N`` display locations, given as a string of 1-based
ranges (``"1-3,4-6"``: the left and the right half) or as lists of 0-based locations; the
weight of each location is the weight of its region (e.g. a hemifield model; Bundesen 1990,
spatial weights ``w_x``).
"""

from __future__ import annotations

import torch


def _parse_regions(regions, num: int):
    """``(regions, index)``: the regions as lists of 0-based locations and the region of each
    location ``(N,)`` (None without regions).

    Raises:
        ValueError: not a partition of ``0..N-1``, or a malformed range string.
    """
    if regions is None:
        return [[j] for j in range(num)], None
    if isinstance(regions, str):
        parsed = []
        for part in regions.split(","):
            bounds = part.strip().split("-")
            try:
                lo, hi = int(bounds[0]), int(bounds[-1])
            except ValueError:
                raise ValueError(
                    f"regions must look like '1-3,4-6' (1-based locations), got {regions!r}"
                ) from None
            if len(bounds) > 2 or lo > hi:
                raise ValueError(f"bad region {part!r} in regions {regions!r}")
            parsed.append(list(range(lo - 1, hi)))
        regions = parsed
    regions = [[int(j) for j in r] for r in regions]
    flat = sorted(j for r in regions for j in r)
    if flat != list(range(num)) or any(len(r) == 0 for r in regions):
        raise ValueError(
            f"regions must split the locations 0..{num - 1} into non-empty disjoint groups, "
            f"got {regions}"
        )
    index = torch.empty(num, dtype=torch.long)
    for i, r in enumerate(regions):
        index[r] = i
    return regions, index
