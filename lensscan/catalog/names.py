"""IAU-style object names from positions: ``JHHMMSS.ss+DDMMSS.s``.

The IAU's recommendation for names built from coordinates is to *truncate* (never round) every
field, so that a name never points to a position the object does not have (an object at
RA 09:59:59.996 is ``J095959.99``, not ``J100000.00``). RA is in hours, minutes and seconds
to 0.01 s; Dec in degrees, arcminutes and arcseconds to 0.1", signed (``+`` for the northern
hemisphere and the equator, ``-`` south of it, so ``-000012.3`` keeps its sign).
"""

from __future__ import annotations

import numpy as np

#: A hair above float64 resolution at these magnitudes (~1e-9 of a unit): a position that is
#: exactly on a boundary (RA 09:59:59.81 written as 149.99920833333333) truncates to it
#: instead of one unit below it through the float product.
_EPS = 1e-6


def iau_names(ra: np.ndarray, dec: np.ndarray, prefix: str = "") -> list[str | None]:
    """Names of positions (degrees, ICRS/J2000), ``None`` where RA or Dec is null or NaN.

    Parameters
    ----------
    ra, dec : array-like of float, degrees
        RA in [0, 360), Dec in [-90, 90]; ``None`` and NaN give ``None``.
    prefix : str
        Survey or catalogue acronym put before the name with a space, as the IAU asks
        (``"LENSSCAN"`` -> ``"LENSSCAN J095959.81+021200.3"``); empty for the bare name.

    Returns
    -------
    list of str or None
    """
    ra = np.asarray([np.nan if v is None else v for v in np.asarray(ra, dtype=object)], float)
    dec = np.asarray([np.nan if v is None else v for v in np.asarray(dec, dtype=object)], float)
    ok = np.isfinite(ra) & np.isfinite(dec)
    # RA in hundredths of a second of time, Dec in tenths of an arcsecond, truncated
    ra_cs = np.floor(np.where(ok, np.mod(ra, 360.0), 0.0) * 24000.0 + _EPS)
    ra_cs = np.minimum(ra_cs, 24 * 360000 - 1).astype(np.int64)  # 359.9999999999 -> 23:59:59.99
    dec_ds = np.floor(np.abs(np.where(ok, dec, 0.0)) * 36000.0 + _EPS)
    dec_ds = np.minimum(dec_ds, 90 * 36000).astype(np.int64)
    lead = f"{prefix} " if prefix else ""
    out: list[str | None] = []
    for good, r, d, south in zip(ok, ra_cs, dec_ds, dec < 0, strict=True):
        if not good:
            out.append(None)
            continue
        h, rem = divmod(int(r), 360000)
        m, rem = divmod(rem, 6000)
        s, cs = divmod(rem, 100)
        deg, rem = divmod(int(d), 36000)
        am, rem = divmod(rem, 600)
        asec, ds = divmod(rem, 10)
        sign = "-" if south else "+"
        out.append(f"{lead}J{h:02d}{m:02d}{s:02d}.{cs:02d}{sign}{deg:02d}{am:02d}{asec:02d}.{ds}")
    return out
