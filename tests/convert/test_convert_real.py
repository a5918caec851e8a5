"""Every real sample file (``shared/data/real``: NetCDF-3, NetCDF-4/HDF5, GRIB written by
other tools) converts, with every value validated against the file's own reader, or is
refused in one line. No other exception, no output left looking complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from zarrport.convert.writer import convert, is_incomplete
from zarrport.errors import ZarrportError

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
FILES = sorted(p for kind in ("nc3", "nc4", "grib") for p in (REAL / kind).glob("*")
               if p.is_file() and p.suffix not in (".idx", ".md", ".txt", ".tsv")) \
    if REAL.exists() else []
#: what each refusal must say (the reason, not just "failed")
REFUSED = {
    "cfgrib_era5-levels-corrupted.grib": "corrupt",
    "eccodes_gridspec_icon.grib": "unsupported grid",
    "eccodes_gridspec_orca.grib": "unsupported grid",
    "eccodes_ifs_sh_ml_grib2.tmpl": "spectral",
    "kerchunk_hrrr.t11z.wrfsfcf12.grib2": "truncated",
    "kerchunk_NEONDSTowerTemperatureData.hdf5": "pass --group",
    "netcdfc_ref_groups.h5": "pass --group",
    "kerchunk_vlen2.h5": "--skip-unsupported",
    "netcdfc_dap4_test_opaque.nc": "--skip-unsupported",
    "netcdfc_dap4_test_atomic_array.nc": "duplicate",
    "netcdfc_ref_tst_dims.nc": "no data variables",
    "netcdfc_ref_tst_xplatform2_1.nc": "cannot be opened for conversion",
    "pyfive_new_style_groups.hdf5": "pass --group",
    "vz_test_ds_netcdf4_group.nc": "pass --group",
    "gribberish_nbm-asnow-prob-thresholds.grib2": "messages 1 (byte 0) and 2",
    "herbie_subset_20201214_hrrr.t00z.wrfsfcf12.grib2": "messages 1 (byte 0) and 2",
}


@pytest.mark.slow
@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_real_file_converts_validated_or_is_refused(path, tmp_path):
    out = tmp_path / "out.zarr"
    try:
        summary = convert(str(path), str(out), validate=True, workers=1, warn=lambda m: None)
    except ZarrportError as err:
        text = str(err)
        assert "\n" not in text and text
        if path.name in REFUSED:
            assert REFUSED[path.name] in text, text
        else:  # a refusal not listed here is a regression (or a new rule: list it)
            pytest.fail(f"refused: {text}")
        assert not out.exists() or is_incomplete("file://" + str(out)) is not None \
            or not (out / "zarr.json").exists()
        return
    assert path.name not in REFUSED, "converted a file that used to be refused: update REFUSED"
    assert summary["validated"]["values"] > 0
    assert is_incomplete("file://" + str(out)) is None
