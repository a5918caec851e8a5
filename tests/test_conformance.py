"""Every real NetCDF file: identical through every format, or refused with a typed error."""

from __future__ import annotations

from pathlib import Path

import pytest

from zarrport.conformance import FORMATS, check_file, real_files

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FILES = real_files(REAL) if REAL.exists() else []


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_real_file(path, tmp_path):
    outcomes = [check_file(path, fmt, tmp_path) for fmt in FORMATS]
    for o in outcomes:
        assert o.acceptable, f"{o.file} [{o.format}]: {o.outcome}: {o.reason}"
        if o.outcome == "refused":
            assert o.reason  # a typed error with its reason
    # a file is refused in every format or in none: the decision does not depend on it,
    # except for misaligned combines (not applicable to single files)
    assert len({o.outcome for o in outcomes}) == 1
