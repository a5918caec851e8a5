"""Freshness records: what a stage instance read and wrote, so a re-run can skip it.

After a stage instance succeeds, ``OUT.zarrport-run.json`` is written beside its first output
``OUT`` (a file or a directory): the hash of its parameters, its inputs (path, newest mtime,
size), its outputs, when it finished, how long it took and the zarrport version. The record
is removed before the instance runs again, so a failed run never leaves a record that
vouches for half-written outputs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarrport.workflow.spec import Instance

RECORD_SUFFIX = ".zarrport-run.json"
RECORD_VERSION = 1


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def record_path(inst: Instance) -> Path | None:
    """Where the instance's record goes: beside its first output (None: no local output)."""
    if not inst.outputs or any(is_remote(o) for o in inst.outputs):
        return None
    return Path(local(inst.outputs[0]).rstrip("/") + RECORD_SUFFIX)


def params_hash(inst: Instance) -> str:
    text = json.dumps({"run": list(inst.run), "argv": inst.hashed})
    return hashlib.sha256(text.encode()).hexdigest()


def stat_path(path: str) -> tuple[int, int] | None:
    """(newest mtime in ns, total size) of a file, or of everything inside a directory
    (records left out); None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return st.st_mtime_ns, st.st_size
    newest, size = st.st_mtime_ns, 0
    for root, dirs, files in os.walk(path):
        for name in dirs:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime_ns)
            except OSError:
                pass
        for name in files:
            if name.endswith(RECORD_SUFFIX):
                continue
            try:
                s = os.stat(os.path.join(root, name))
            except OSError:
                continue
            newest, size = max(newest, s.st_mtime_ns), size + s.st_size
    return newest, size


@dataclass
class Inputs:
    files: dict[str, tuple[int, int]]  # path -> (mtime_ns, size)
    remote: list[str]
    missing: list[str]


def expand_inputs(inst: Instance) -> Inputs:
    """The instance's inputs now: positional arguments with globs expanded, and option
    values naming an existing local path (outputs of the instance itself left out)."""
    outputs = {os.path.normpath(local(o)) for o in inst.outputs}
    files: dict[str, tuple[int, int]] = {}
    remote: list[str] = []
    missing: list[str] = []
    for value in inst.args:
        if is_remote(value):
            remote.append(value)
            continue
        path = local(value)
        matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
        found = [(m, stat_path(m)) for m in matches]
        found = [(m, st) for m, st in found if st is not None]
        if not found:
            missing.append(value)
        for m, st in found:
            if os.path.normpath(m) not in outputs:
                files[os.path.normpath(m)] = st
    for value in inst.inputs:
        if is_remote(value):
            continue
        norm = os.path.normpath(local(value))
        st = stat_path(norm)
        if st is not None and norm not in outputs:
            files[norm] = st
    return Inputs(files, remote, missing)


def read_record(inst: Instance) -> dict[str, Any] | None:
    path = record_path(inst)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("record") == RECORD_VERSION else None


def remove_record(inst: Instance) -> None:
    path = record_path(inst)
    if path is not None:
        path.unlink(missing_ok=True)


def write_record(inst: Instance, inputs: Inputs, seconds: float) -> Path | None:
    """Write the record atomically (temp sibling, then rename)."""
    import zarrport

    path = record_path(inst)
    if path is None:
        return None
    outputs = []
    for out in inst.outputs:
        st = stat_path(local(out))
        outputs.append({"path": out, "exists": st is not None,
                        "mtime_ns": st[0] if st else None, "size": st[1] if st else None})
    data = {
        "record": RECORD_VERSION,
        "stage": inst.stage,
        "instance": inst.id,
        "matrix": inst.matrix,
        "command": ["zarrport", *inst.run, *inst.argv],
        "params_hash": params_hash(inst),
        "inputs": [{"path": p, "mtime_ns": m, "size": s}
                   for p, (m, s) in sorted(inputs.files.items())],
        "outputs": outputs,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 3),
        "zarrport_version": zarrport.__version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path


def staleness(inst: Instance, produced: dict[str, str]) -> str | None:
    """Why the instance must run (None: it is fresh). ``produced`` maps outputs of instances
    that run (or ran) in this run to their ids."""
    path = record_path(inst)
    if path is None:
        if not inst.outputs:
            return "no outputs to check (always runs)"
        return "remote output: not tracked (always runs)"
    record = read_record(inst)
    if record is None:
        return f"no record ({path.name})"
    if record.get("params_hash") != params_hash(inst):
        return "parameters changed"
    outs: list[tuple[str, int]] = []
    for out in inst.outputs:
        st = stat_path(local(out))
        if st is None:
            return f"output {out} is missing"
        outs.append((out, st[0]))
    now = expand_inputs(inst)
    if now.remote:
        return f"remote input {now.remote[0]}: not tracked (always runs)"
    if now.missing:
        return f"no input matches {now.missing[0]}"
    for p in now.files:
        for out, producer in produced.items():
            o = os.path.normpath(local(out))
            if p == o or p.startswith(o + os.sep):
                return f"input {p} comes from {producer}, which runs"
    before = {r["path"]: (r["mtime_ns"], r["size"]) for r in record.get("inputs", [])}
    added = sorted(set(now.files) - set(before))
    removed = sorted(set(before) - set(now.files))
    if added or removed:
        what = ([f"+{a}" for a in added] + [f"-{r}" for r in removed])
        more = f" and {len(what) - 3} more" if len(what) > 3 else ""
        return f"inputs changed: {', '.join(what[:3])}{more}"
    for p, st in now.files.items():
        if tuple(before[p]) != st:
            return f"input {p} changed"
    if now.files:
        newest_in = max(now.files.items(), key=lambda kv: kv[1][0])
        oldest_out = min(outs, key=lambda kv: kv[1])
        if newest_in[1][0] > oldest_out[1]:
            return f"input {newest_in[0]} is newer than output {oldest_out[0]}"
    return None


def fresh_reason(inst: Instance) -> str:
    record = read_record(inst) or {}
    n = len(record.get("inputs", []))
    return (f"fresh: outputs newer than its {n} input(s), parameters unchanged (ran "
            f"{record.get('finished', '?')})")
