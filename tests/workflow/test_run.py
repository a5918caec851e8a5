"""``zarrport run`` with real commands (virtualize, catalog): runs, freshness, re-runs after
a change, --force/--only/--dry-run/--json, failures that stop the run and resume."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from clirun import run_main
from zarrport.testing.samples import write_cmip6_archive

PIPELINE = """
version: 1
vars:
  root: out
  title: first
matrix:
  variable: [tas, pr]
stages:
  - name: refs
    run: virtualize
    with:
      args: ["archive/${variable}_*.nc"]
      output: ${root}/${variable}.json
      concat-dim: time
      overwrite: true
  - name: stac
    run: catalog
    with:
      args: ${stages.refs.output}
      catalog-dir: ${root}/stac-${variable}
      title: ${title}
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    for variable in ("tas", "pr"):
        write_cmip6_archive(root, years=range(2015, 2017), nlat=4, nlon=6, variable=variable)
    return root


@pytest.fixture
def work(tmp_path, archive, monkeypatch) -> Path:
    shutil.copytree(archive, tmp_path / "archive")
    (tmp_path / "p.yaml").write_text(textwrap.dedent(PIPELINE).lstrip())
    monkeypatch.chdir(tmp_path)
    return tmp_path


zp = run_main


def headers(out: str) -> dict[str, str]:
    """'== [i/n] ID: ...' lines -> id -> 'ran' or 'skipped'."""
    got = {}
    for line in out.splitlines():
        if line.startswith("== ["):
            ident, rest = line.split("] ", 1)[1].split(": ", 1)
            got[ident] = "skipped" if rest.startswith("skipped") else "ran"
    return got


ALL = ["refs[variable=tas]", "refs[variable=pr]", "stac[variable=tas]", "stac[variable=pr]"]


def test_run_skip_rerun(work, capsys):
    code, out, err = zp(capsys, "run", "p.yaml")
    assert code == 0, err
    assert headers(out) == dict.fromkeys(ALL, "ran")
    assert "wrote out/tas.json" in out or "tas.json (json" in out  # the stage's own output
    for v in ("tas", "pr"):
        assert (work / "out" / f"{v}.json").is_file()
        assert (work / "out" / f"stac-{v}" / "catalog.json").is_file()
    record = json.loads((work / "out" / "tas.json.zarrport-run.json").read_text())
    archive_files = sorted(f"archive/{p.name}" for p in (work / "archive").glob("tas_*.nc"))
    assert [i["path"] for i in record["inputs"]] == archive_files
    assert record["command"] == ["zarrport", "virtualize", "archive/tas_*.nc", "--output",
                                 "out/tas.json", "--concat-dim", "time", "--overwrite"]
    assert record["stage"] == "refs" and record["matrix"] == {"variable": "tas"}
    catalog = json.loads((work / "out" / "stac-tas" / "catalog.json").read_text())
    assert catalog["title"] == "first"

    # nothing changed: every instance is skipped, outputs untouched
    mtime = (work / "out" / "tas.json").stat().st_mtime_ns
    code, out, _ = zp(capsys, "run", "p.yaml")
    assert code == 0 and headers(out) == dict.fromkeys(ALL, "skipped")
    assert (work / "out" / "tas.json").stat().st_mtime_ns == mtime

    # a pr file changes: pr's chain reruns, tas's stays
    pr_file = next((work / "archive").glob("pr_*2016*.nc"))
    os.utime(pr_file)  # now: after the run above
    code, out, _ = zp(capsys, "run", "p.yaml", "--dry-run")
    assert code == 0 and "2 to run, 2 fresh" in out
    assert f"[2] refs[variable=pr]: run (input archive/{pr_file.name} changed)" in out
    assert "[4] stac[variable=pr]: run (upstream refs[variable=pr] runs)" in out
    assert "    zarrport virtualize 'archive/pr_*.nc' --output out/pr.json" in out
    code, out, _ = zp(capsys, "run", "p.yaml")
    assert headers(out) == {ALL[0]: "skipped", ALL[1]: "ran", ALL[2]: "skipped",
                            ALL[3]: "ran"}

    # a new parameter for one stage: only that stage's instances rerun
    code, out, _ = zp(capsys, "run", "p.yaml", "--set", "title=second")
    assert headers(out) == {ALL[0]: "skipped", ALL[1]: "skipped", ALL[2]: "ran",
                            ALL[3]: "ran"}
    catalog = json.loads((work / "out" / "stac-pr" / "catalog.json").read_text())
    assert catalog["title"] == "second"

    # --force --only: that stage only, fresh or not
    code, out, _ = zp(capsys, "run", "p.yaml", "--set", "title=second", "--force", "--only",
                      "refs")
    assert headers(out) == {ALL[0]: "ran", ALL[1]: "ran"}
    # and the catalogs are stale now (their input is newer): the plan says so, as JSON
    code, out, _ = zp(capsys, "run", "p.yaml", "--set", "title=second", "--dry-run", "--json")
    plan = json.loads(out)
    assert [s["action"] for s in plan["stages"]] == ["skip", "skip", "run", "run"]
    assert plan["stages"][2]["reason"] == "input out/tas.json changed"
    assert plan["stages"][2]["inputs"] == ["out/tas.json"]
    assert plan["stages"][0]["needs"] == [] and plan["stages"][2]["needs"] == [ALL[0]]

    # a deleted output reruns its stage
    shutil.rmtree(work / "out" / "stac-tas")
    code, out, _ = zp(capsys, "run", "p.yaml", "--set", "title=second", "--json")
    summary = json.loads(out)
    assert summary["ran"] == 2 and summary["skipped"] == 2
    assert (work / "out" / "stac-tas" / "catalog.json").is_file()

    # an output older than its (recorded, unchanged) input: stale
    old = (work / "out" / "tas.json").stat().st_mtime_ns - 10**9
    for p in [work / "out" / "stac-tas", *(work / "out" / "stac-tas").rglob("*")]:
        os.utime(p, ns=(old, old))
    code, out, _ = zp(capsys, "run", "p.yaml", "--set", "title=second", "--dry-run")
    assert ("[3] stac[variable=tas]: run (input out/tas.json is newer than output "
            "out/stac-tas)") in out


def test_failed_stage_stops_and_resumes(work, capsys):
    # pr has no files under this pattern: refs[pr] fails after refs[tas] completed
    code, out, err = zp(capsys, "run", "p.yaml", "--set", "root=o2", "--set",
                        "matrix.variable=tas,pr,zz")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 3 and len(lines) == 1, err  # not_found: the command's own exit status
    assert lines[0].startswith("zarrport: error: stage refs[variable=zz] (zarrport "
                               "virtualize): "), lines[0]
    assert "Traceback" not in err
    assert headers(out) == {"refs[variable=tas]": "ran", "refs[variable=pr]": "ran",
                            "refs[variable=zz]": "ran"}
    assert (work / "o2" / "tas.json.zarrport-run.json").exists()
    assert not (work / "o2" / "zz.json").exists()
    assert not (work / "o2" / "zz.json.zarrport-run.json").exists()
    assert not list((work / "o2").glob("stac-*"))  # later stages did not start
    # the archive gets its zz files: the same command resumes, completed stages skipped
    for p in (work / "archive").glob("tas_*.nc"):
        shutil.copy(p, work / "archive" / p.name.replace("tas_", "zz_"))
    code, out, err = zp(capsys, "run", "p.yaml", "--set", "root=o2", "--set",
                        "matrix.variable=tas,pr,zz")
    assert code == 0, err
    assert headers(out) == {"refs[variable=tas]": "skipped", "refs[variable=pr]": "skipped",
                            "refs[variable=zz]": "ran", "stac[variable=tas]": "ran",
                            "stac[variable=pr]": "ran", "stac[variable=zz]": "ran"}


@pytest.mark.parametrize("args, needles, status", [
    (["--set", "nope=1"], ["--set nope: p.yaml has no vars.nope"], 2),
    (["--only", "normals"], ["--only normals: no such stage", "stages: refs, stac"], 2),
    (["--set", "title=[a, b]"], ["p.yaml line 20, key stages.stac.with.title",
                                 "--title takes one value, not a list"], 2),
])
def test_bad_input_one_line_nothing_written(work, capsys, args, needles, status):
    code, out, err = zp(capsys, "run", "p.yaml", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == status and len(lines) == 1, err
    assert lines[0].startswith("zarrport: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (work / "out").exists()


def test_missing_pipeline_file(work, capsys):
    code, _, err = zp(capsys, "run", "missing.yaml")
    assert code == 3 and err.strip() == ("zarrport: error: pipeline file missing.yaml does "
                                         "not exist")
