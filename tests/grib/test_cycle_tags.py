"""``grib ingest`` tags every cycle: the repository opened at a cycle's tag holds that cycle
and those before it, with the values eccodes decodes from that cycle's files."""

from __future__ import annotations

from pathlib import Path

import eccodes
import numpy as np
import pytest

from zarrport.errors import SourceNotFoundError
from zarrport.grib.ingest import ingest_cycle
from zarrport.history import commits
from zarrport.open import open_dataset
from zarrport.testing.grib_synthetic import make_gefs_cycle

STEPS = (0, 6, 12)
CYCLES = ("2025010100", "2025010106", "2025010112")
HOUR = np.timedelta64(1, "h")


def _eccodes_tp(root: Path, cycle: str, member: int, step: int, lat: np.ndarray,
                lon: np.ndarray) -> np.ndarray:
    """APCP of one member and step, decoded by eccodes and put on (lat, lon) by eccodes'
    own per-point coordinates."""
    day, hh = cycle[:8], cycle[8:]
    name = f"{'gec' if member == 0 else 'gep'}{member:02d}.t{hh}z.pgrb2s.0p25.f{step:03d}"
    with open(root / f"gefs.{day}" / hh / "atmos" / "pgrb2sp25" / name, "rb") as f:
        while (h := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                if eccodes.codes_get(h, "shortName") != "tp":
                    continue
                vals = eccodes.codes_get_values(h).astype(np.float64)
                if eccodes.codes_get(h, "bitmapPresent"):
                    vals[eccodes.codes_get_array(h, "bitmap") == 0] = np.nan
                lats = eccodes.codes_get_array(h, "latitudes")
                lons = (eccodes.codes_get_array(h, "longitudes") + 180.0) % 360.0 - 180.0
            finally:
                eccodes.codes_release(h)
            out = np.full((lat.size, lon.size), np.nan)
            out[np.searchsorted(lat, lats), np.searchsorted(lon, lons)] = vals
            return out
    raise AssertionError(f"no tp in {name}")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("gefs-tags")
    repo = str(root / "gefs.icechunk")
    for k, cycle in enumerate(CYCLES):
        make_gefs_cycle(root, cycle, members=2, steps=STEPS, seed=k)
        result = ingest_cycle("gefs", f"file://{root}/gefs.{cycle[:8]}/{cycle[8:]}", repo)
        assert result.tag == f"cycle-{cycle}"
    return root, repo


@pytest.mark.parametrize("k", range(len(CYCLES)))
def test_a_cycle_tag_reads_that_cycle(ingested, k):
    root, repo = ingested
    cycle = CYCLES[k]
    with open_dataset(repo, tag=f"cycle-{cycle}", accumulate=False) as ds:
        # the repository as it was when the cycle landed: this cycle and the ones before
        inits = [str(t)[:13] for t in ds["init_time"].values]
        assert inits == [f"{c[:4]}-{c[4:6]}-{c[6:8]}T{c[8:]}" for c in CYCLES[:k + 1]]
        lat, lon = ds["latitude"].values, ds["longitude"].values
        checked = 0
        for m in range(2):
            for step in STEPS[1:]:  # GEFS has no APCP at step 0
                got = ds["tp"].sel(member=m, step=step * HOUR).isel(init_time=k).values
                want = _eccodes_tp(root, cycle, m, step, lat, lon).astype(got.dtype)
                np.testing.assert_array_equal(got, want, err_msg=f"{cycle} m{m} f{step}")
                checked += 1
        assert checked == 4
    # cycles differ (different seeds): a tag that read another cycle would fail above
    if k:
        with open_dataset(repo, tag=f"cycle-{CYCLES[k - 1]}", accumulate=False) as before, \
                open_dataset(repo, tag=f"cycle-{cycle}", accumulate=False) as now:
            assert not np.array_equal(before["tp"].isel(init_time=k - 1).values,
                                      now["tp"].isel(init_time=k).values, equal_nan=True)


def test_history_shows_each_cycle_tag(ingested):
    _root, repo = ingested
    listed = commits(repo)
    assert [c.tags for c in listed] == [[f"cycle-{c}"] for c in reversed(CYCLES)] + [[]]
    with pytest.raises(SourceNotFoundError, match="cycle-2025010100, cycle-2025010106"):
        open_dataset(repo, tag="cycle-2025010118")


def test_fast_reader_reads_forecast_cycles_as_zarr_does(ingested, monkeypatch):
    """GRIB messages are decoded by zarrport's Icechunk reader in the reading (Dask)
    thread; every variable equals what xarray's Zarr engine reads from the same store."""
    from zarrport import icechunk_read

    decoded = []
    original = icechunk_read._Reader._decode

    def counting(self, raw):
        decoded.append(self.path)
        return original(self, raw)

    monkeypatch.setattr(icechunk_read._Reader, "_decode", counting)
    _root, repo = ingested
    fast = open_dataset(repo, accumulate=False)
    std = open_dataset(repo, accumulate=False, engine="zarr")
    assert set(fast.variables) == set(std.variables)
    for name in std.variables:
        a, b = fast[name].values, std[name].values
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert "tp" in decoded  # the messages went through zarrport's reader
