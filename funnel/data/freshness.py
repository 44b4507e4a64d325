"""Tag dates as fractional years, clipped so bogus dates (Last.fm's 1956) cannot dominate."""

from __future__ import annotations

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600


def robust_years(stamps: np.ndarray) -> tuple[np.ndarray, float]:
    """Fractional years of ``stamps`` (datetime64) clipped into their plausible range.

    The range is the 1st-99th percentile, narrowed further to three interquartile ranges
    beyond the quartiles, so even a few percent of bogus dates cannot stretch it.

    Returns
    -------
    years : numpy.ndarray
        Clipped years; NaN where the stamp is NaT.
    latest : float
        The upper end of the range, the "now" of the data.
    """
    stamps = np.asarray(stamps).astype("datetime64[s]")
    valid = ~np.isnat(stamps)
    years = np.full(len(stamps), np.nan)
    if not valid.any():
        return years, 0.0
    raw = stamps[valid].astype(np.int64) / SECONDS_PER_YEAR + 1970.0
    q01, q25, q75, q99 = np.percentile(raw, [1, 25, 75, 99])
    spread = q75 - q25
    lo, hi = max(q01, q25 - 3 * spread), min(q99, q75 + 3 * spread)
    years[valid] = np.clip(raw, lo, hi)
    return years, float(hi)
