"""Pipeline files: schema errors with line and key, substitution, matrices, and the command
line each stage instance gets (nothing runs here)."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest

from zarrport.errors import InvalidArgumentError
from zarrport.workflow import load_pipeline


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def error(path: Path, sets: tuple[str, ...] = ()) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        load_pipeline(path, sets)
    return str(info.value)


BASE = """
version: 1
vars:
  root: /data/out
  years: {start: 2015, end: 2018}
  label: "${root}/x"
matrix:
  variable: [tas, pr]
stages:
  - name: refs
    run: batch
    with:
      args: ["/data/archive/*.nc"]
      output: ${root}/refs
      collection_by: "{variable}_{years}.nc"
      stac: ${root}/stac
  - name: copy
    run: convert
    matrix: {codec: [zstd, gzip]}
    with:
      source: ${stages.refs.output}
      --output: ${root}/${variable}-${codec}.zarr
      variables: ${variable}
      codec: ${codec}
      select: ["time=${years.start}:${years.end}", "lat=-10:10"]
      validate: true
      shards: false
      storage-option: {anon: true, endpoint_url: "http://127.0.0.1:9"}
  - name: stac
    run: catalog
    needs: [refs]
    with:
      args: "${stages.refs.output}"
      catalog_dir: ${root}/catalog
      title: "$${root} is ${env.ZP_TEST_TITLE} ${label}"
"""


def test_expansion_and_command_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_TEST_TITLE", "mine")
    pipe = load_pipeline(write(tmp_path, BASE))
    ids = [i.id for i in pipe.instances]
    # the global matrix expands only stages that use ${variable}; stage matrices combine
    assert ids == ["refs", "copy[variable=tas,codec=zstd]", "copy[variable=tas,codec=gzip]",
                   "copy[variable=pr,codec=zstd]", "copy[variable=pr,codec=gzip]", "stac"]
    refs, copy_tas_gzip, stac = pipe.instances[0], pipe.instances[2], pipe.instances[5]
    assert refs.argv == ["/data/archive/*.nc", "--output", "/data/out/refs", "--collection-by",
                         "{variable}_{years}.nc", "--stac", "/data/out/stac"]
    assert copy_tas_gzip.argv == [
        "/data/out/refs", "--output", "/data/out/tas-gzip.zarr", "--variables", "tas",
        "--codec", "gzip", "--select", "time=2015:2018", "--select", "lat=-10:10",
        "--validate", "--storage-option", "anon=true", "--storage-option",
        "endpoint_url=http://127.0.0.1:9"]
    # $${...} is a literal, env and nested vars are substituted
    assert stac.argv == ["/data/out/refs", "--catalog-dir", "/data/out/catalog", "--title",
                         "${root} is mine /data/out/x"]
    assert stac.command_line == ("zarrport catalog /data/out/refs --catalog-dir "
                                 "/data/out/catalog --title '${root} is mine /data/out/x'")
    assert shlex.split(copy_tas_gzip.command_line)[1:] == ["convert", *copy_tas_gzip.argv]
    # outputs (for freshness), needs (default: the previous stage; explicit; references)
    assert refs.outputs == ["/data/out/refs", "/data/out/stac"]
    assert copy_tas_gzip.outputs == ["/data/out/tas-gzip.zarr"]
    assert copy_tas_gzip.needs == [0] and stac.needs == [0]
    assert copy_tas_gzip.args == ["/data/out/refs"]


def test_set_overrides_and_dask(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_TEST_TITLE", "t")
    path = write(tmp_path, BASE)
    pipe = load_pipeline(path, ["root=/o", "years.start=2016", "matrix.variable=tas",
                                "dask.scheduler=tcp://127.0.0.1:8786"])
    assert [i.id for i in pipe.instances][1:3] == ["copy[variable=tas,codec=zstd]",
                                                   "copy[variable=tas,codec=gzip]"]
    refs, copy = pipe.instances[0], pipe.instances[1]
    assert "time=2016:2018" in copy.argv and "/o/refs" in refs.argv
    # Dask-capable stages (batch, convert) get --scheduler; catalog does not
    assert refs.argv[-2:] == ["--scheduler", "tcp://127.0.0.1:8786"]
    assert copy.argv[-2:] == ["--scheduler", "tcp://127.0.0.1:8786"]
    assert "--scheduler" not in pipe.instances[-1].argv
    # the scheduler is where it runs, not what it computes: same parameters hash
    assert copy.hashed == load_pipeline(path, ["root=/o", "years.start=2016",
                                               "matrix.variable=tas"]).instances[1].hashed
    # without a scheduler, Dask stages share the run's local cluster (dask.workers and
    # dask.memory_limit size it): --scheduler is added when they run, not planned
    local = load_pipeline(path, ["dask.workers=3", "dask.memory_limit=2GB"])
    copy = local.instances[1]
    assert "--workers" not in copy.argv and "--scheduler" not in copy.argv
    assert copy.shared_dask and not local.instances[-1].shared_dask
    assert copy.run_argv("tcp://127.0.0.1:1") == [*copy.argv, "--scheduler", "tcp://127.0.0.1:1"]
    assert local.dask["workers"] == 3 and local.dask["memory_limit"] == "2GB"
    assert not pipe.instances[1].shared_dask  # it has its own scheduler
    for bad, needle in (("nope=1", "no vars.nope"), ("years.x=1", "vars.years has start, end"),
                        ("dask.x=1", "dask has scheduler"), ("matrix.x=1", "matrix keys are"),
                        ("novalue", "NAME=VALUE")):
        assert needle in error(path, (bad,))


def test_flags_spellings_and_secondary_switches(tmp_path):
    path = write(tmp_path, """
        version: 1
        stages:
          - name: v
            run: virtualize
            with:
              sources: [a.nc, b.nc]
              --output: out.json
              Concat_Dim: time
              drop: [x, y]
              skip-unsupported: true
              overwrite: false
              subchunk_mb: 8
          - name: c
            run: convert
            with: {args: [out.json], output: o.zarr, workers: 2}
    """)
    pipe = load_pipeline(path, ["dask.scheduler=tcp://127.0.0.1:9"])
    inst = pipe.instances[0]
    assert inst.argv == ["a.nc", "b.nc", "--output", "out.json", "--concat-dim", "time",
                         "--drop", "x", "--drop", "y", "--skip-unsupported", "--subchunk-mb",
                         "8"]
    # a stage with its own --workers keeps its own local pool: no pipeline scheduler
    assert pipe.instances[1].argv == ["out.json", "--output", "o.zarr", "--workers", "2"]
    assert not pipe.instances[1].shared_dask


@pytest.mark.parametrize("body, line, needles", [
    # unknown option: the file, the line, the key and the valid options
    ("""
     version: 1
     stages:
       - name: a
         run: catalog
         with:
           args: [x]
           catalog-dir: c
           colour: red
     """, 8, ["key stages.a.with.colour", "no option 'colour'", "valid: args, output, "
              "catalog-dir, title, storage-option, json"]),
    ("""
     version: 1
     stagez: []
     """, 2, ["key stagez", "unknown key (valid: version"]),
    ("""
     version: 1
     stages:
       - name: a
         run: catalog
         with: {args: [x], catalog-dir: "${nothing}/c"}
     """, 5, ["key stages.a.with.catalog-dir", "unknown name 'nothing'"]),
    ("""
     version: 1
     vars: {dirs: [a, b]}
     stages:
       - name: a
         run: catalog
         with:
           args: [x]
           catalog-dir: ${dirs}
     """, 8, ["key stages.a.with.catalog-dir", "takes one value, not a list"]),
    ("""
     version: 1
     vars: {dirs: [a, b]}
     stages:
       - name: a
         run: catalog
         with:
           args: [x]
           catalog-dir: "out/${dirs}"
     """, 8, ["${dirs} is a list"]),
    ("""
     version: 1
     stages:
       - name: a
         run: analyze exceedence
     """, 4, ["key stages.a.run", "no zarrport command 'analyze exceedence'",
              "analyze exceedance"]),
    ("""
     version: 1
     stages:
       - name: a
         run: convert
         with:
           args: [x]
           output: y.zarr
           level: high
     """, 8, ["key stages.a.with.level", "zarrport convert", "'high' is not a valid integer"]),
    ("""
     version: 1
     stages:
       - name: a
         run: virtualize
         with: {args: [x]}
     """, 5, ["zarrport virtualize", "Missing option '-o' / '--output'"]),
    ("""
     version: 1
     matrix: {v: [tas, pr]}
     stages:
       - name: a
         run: catalog
         with: {args: [x], catalog-dir: out}
         matrix: {scenario: [ssp245]}
     """, 7, ["key stages.a.matrix.scenario", "no ${scenario}"]),
    ("""
     version: 1
     matrix: {v: [tas, pr]}
     stages:
       - name: a
         run: catalog
         with: {args: ["${v}"], catalog-dir: out}
     """, 6, ["both write out", "use the matrix keys (v)"]),
    ("""
     version: 1
     stages:
       - name: a
         run: catalog
         with: {args: [x], catalog-dir: out, title: "${stages.b.output}"}
       - name: b
         run: catalog
         with: {args: [x], catalog-dir: out2}
     """, 5, ["only an earlier stage's options"]),
    ("""
     version: 1
     stages:
       - name: a
         run: catalog
         needs: [b]
         with: {args: [x], catalog-dir: out}
     """, 5, ["key stages.a.needs", "'b' is not an earlier stage"]),
    ("""
     version: 1
     stages:
       - name: a
         run: catalog
         with: {args: [x], catalog-dir: out, bad: [unclosed}
     """, 5, ["not valid YAML"]),
    ("""
     version: 2
     stages: []
     """, 1, ["key version", "not a version this zarrport reads"]),
    ("""
     version: 1
     stages:
       - name: a
         run: catalog
         with: {args: [x, y], catalog-dir: out}
     """, 5, ["key stages.a.with.args", "1 more argument(s)"]),
    ("""
     version: 1
     vars: {a: "${b}", b: "${a}"}
     stages:
       - name: s
         run: catalog
         with: {args: ["${a}"], catalog-dir: out}
     """, 2, ["refers to itself"]),
])
def test_errors_name_line_and_key(tmp_path, body, line, needles):
    path = write(tmp_path, body)
    message = error(path)
    assert message.startswith(f"{path} line {line}") or f"{path} line {line}:" in message, message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_on_off_switches(tmp_path):
    """``--progress/--no-progress``: ``progress: false`` and ``no-progress: true`` both give
    the off switch; these stages' own Dask options keep the pipeline's scheduler out."""
    path = write(tmp_path, """
        version: 1
        stages:
          - name: a
            run: analyze normals
            with: {args: [r], variable: tas, start-year: 2015, end-year: 2016, output: a.nc,
                   progress: false, workers: 1}
          - name: b
            run: analyze normals
            with: {args: [r], variable: tas, start-year: 2015, end-year: 2016, output: b.nc,
                   no-progress: true, memory_limit: 1GB}
          - name: c
            run: analyze normals
            with: {args: [r], variable: tas, start-year: 2015, end-year: 2016, output: c.nc,
                   progress: true}
    """)
    a, b, c = load_pipeline(path, ["dask.scheduler=tcp://127.0.0.1:9"]).instances
    assert a.argv[-3:] == ["--no-progress", "--workers", "1"]
    assert b.argv[-3:] == ["--no-progress", "--memory-limit", "1GB"]
    assert c.argv[-3:] == ["--progress", "--scheduler", "tcp://127.0.0.1:9"]


def test_builtins_aliases_and_matrix_through_vars(tmp_path):
    path = write(tmp_path, """
        version: 1
        vars:
          collection: ${variable}_day
        matrix: {variable: [tas, pr]}
        dask: {scheduler: tcp://127.0.0.1:7}
        stages:
          - name: x
            run: analyze exceedance
            with: {repo: "${pipeline.dir}/g.icechunk", out: "${variable}.nc"}
          - name: y
            run: catalog
            with:
              args: ["${stages.x.output}", ]
              catalog-dir: ${stages.x.repo}-${collection}
              title: ${dask.scheduler}
    """)
    pipe = load_pipeline(path)
    assert [i.id for i in pipe.instances] == ["x[variable=tas]", "x[variable=pr]",
                                              "y[variable=tas]", "y[variable=pr]"]
    y_pr = pipe.instances[3]
    here = str(tmp_path.resolve())
    # the stage used ${collection} (a var using ${variable}) and x's output (per variable)
    assert y_pr.argv == ["pr.nc", "--catalog-dir", f"{here}/g.icechunk-pr_day", "--title",
                         "tcp://127.0.0.1:7"]
    assert y_pr.needs == [1]
