"""Where a batch output keeps what (see docs/batch.md):

    OUTPUT/zarrport-batch.json               manifest: root, pattern, concat dim, collections
    OUTPUT/ledger.sqlite                     status ledger (local outputs)
    OUTPUT/collections/<cid>.icechunk        combined Icechunk repository per collection
    OUTPUT/references/<cid>/<relpath>.json   kerchunk JSON references of each source
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from zarrport import storage
from zarrport.errors import CorruptSourceError

MANIFEST = "zarrport-batch.json"
LEDGER = "ledger.sqlite"
COLLECTIONS = "collections"
REFERENCES = "references"


def collection_repo(cid: str) -> str:
    return f"{COLLECTIONS}/{cid}.icechunk"


def source_refs(cid: str, relpath: str) -> str:
    return f"{REFERENCES}/{cid}/{relpath}.json"


def is_batch_output(url: str, options: dict | None = None) -> bool:
    return exists(f"{storage.normalize_url(url).rstrip('/')}/{MANIFEST}", options)


def exists(url: str, options: dict | None) -> bool:
    if url.startswith("file://"):
        return os.path.exists(url.removeprefix("file://"))
    fs, path = storage.filesystem(url, options)
    return bool(fs.exists(path))


def read_manifest(output: str, options: dict | None = None) -> dict[str, Any] | None:
    """The batch manifest, None when there is none; a damaged one is a CorruptSourceError."""
    url = f"{output.rstrip('/')}/{MANIFEST}"
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        if not path.exists():
            return None
        raw = path.read_bytes()
    else:
        fs, path_ = storage.filesystem(url, options)
        if not fs.exists(path_):
            return None
        raw = fs.cat_file(path_)
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise CorruptSourceError(f"{url}: damaged batch manifest ({err}); move the output "
                                 "aside and run the batch again", source=url) from err
    if not isinstance(doc, dict) or not isinstance(doc.get("collections"), dict):
        raise CorruptSourceError(f"{url}: not a zarrport batch manifest", source=url)
    return doc


def write_manifest(output: str, options: dict | None, manifest: dict[str, Any]) -> None:
    """Written aside and moved (local) or as one PUT (object stores): never half there."""
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    url = f"{output.rstrip('/')}/{MANIFEST}"
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        tmp = path.with_name(f".{path.name}.zarrport-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    fs, path_ = storage.filesystem(url, options)
    fs.pipe_file(path_, data)


def remove_stale_temporaries(root: Path) -> int:
    """Remove what a killed run left aside (``.name.zarrport-xxxxxxxx``); the caller holds
    the batch lock, so no live writer owns them."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames) + filenames:
            if name.startswith(".") and ".zarrport-" in name:
                target = Path(dirpath) / name
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                    dirnames.remove(name)
                else:
                    target.unlink(missing_ok=True)
                n += 1
        # Icechunk repositories hold no temporaries of ours: do not descend into them
        dirnames[:] = [d for d in dirnames if not d.endswith(".icechunk")]
    return n


def size_of(url: str, options: dict | None) -> int:
    """Bytes of references under the output: per-source JSON and collection repositories
    (not the ledger, which holds state, not references)."""
    total = 0
    for sub in (REFERENCES, COLLECTIONS):
        target = f"{url.rstrip('/')}/{sub}"
        if target.startswith("file://"):
            root = Path(target.removeprefix("file://"))
            total += sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            continue
        try:
            fs, path = storage.filesystem(target, options)
            if fs.exists(path):
                total += int(sum(fs.du(path, total=False).values()))
        except Exception:
            pass
    return total
