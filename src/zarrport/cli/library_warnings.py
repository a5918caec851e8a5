"""What becomes of the libraries' warnings while a CLI command runs.

A user of the command line cannot act on most warnings xarray, zarr or numpy emit (they speak
to the programmer calling them: "specify use_cftime=True"), and each prints two lines
with a path into site-packages. While a command runs (:func:`cli_warnings`):

* a warning that says nothing the user can act on is not shown (:data:`HIDDEN`);
* one that matters becomes one zarrport line (:data:`TRANSLATED`), once per text;
* any other warning is shown as one line, once (``zarrport: warning: ...``).

Only the CLI does this: importing zarrport changes no warning filter, so other users of
xarray/zarr in the same process see what they always saw. A user who asks for warnings
(``python -W ...`` or ``PYTHONWARNINGS``) gets them unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator

import click

__all__ = ["cli_warnings"]

#: (category name, message pattern) of warnings that say nothing a CLI user can act on
HIDDEN: list[tuple[str, re.Pattern[str]]] = [
    # xarray's CF decoding notes: "Unable to decode time axis into full numpy.datetime64[ns]
    # objects, continuing using cftime" (times past 2262: zarrport compares and prints the
    # cftime values either way), several fill values, non-conforming attributes. Their advice
    # ("specify use_cftime=True") is for programmers; ``verify`` checks the decoded values
    ("SerializationWarning", re.compile(r".")),
    # zarr/xarray on stores without consolidated metadata (Icechunk, kerchunk): expected
    ("RuntimeWarning", re.compile(r"consolidated metadata")),
    ("ZarrUserWarning", re.compile(r"[Cc]onsolidated metadata")),
]


def _unstable_dtype(message: str) -> str | None:
    found = re.search(r"data type \((.+?)\) does not have a Zarr V3 specification", message)
    if not found:
        return None
    return (f"note: data type {found.group(1)} has no Zarr v3 specification yet (zarr "
            "UnstableSpecificationWarning): readers other than zarr-python may not read "
            "the variables stored with it")


#: (category name, translator: message -> one line, or None to fall through)
TRANSLATED: list[tuple[str, Callable[[str], str | None]]] = [
    ("UnstableSpecificationWarning", _unstable_dtype),
]


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def one_line(category: type[Warning], message: str) -> str | None:
    """The line to print for a warning, or None to hide it."""
    name = category.__name__
    for cat, pattern in HIDDEN:
        if cat == name and pattern.search(message):
            return None
    for cat, translate in TRANSLATED:
        if cat == name and (line := translate(message)):
            return line
    return f"warning: {_first_line(message)} ({name})"


@contextlib.contextmanager
def cli_warnings() -> Iterator[None]:
    """Route warnings through :func:`one_line` while the block runs (see the module text)."""
    if sys.warnoptions or os.environ.get("PYTHONWARNINGS"):
        yield  # the user asked for warnings their way
        return
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = one_line(category, str(message))
        if text is not None and text not in seen:
            seen.add(text)
            click.echo(f"zarrport: {text}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        # worker processes (forkserver) start with default filters and print warnings to
        # the same terminal: they do not show any, the parent translates what it sees
        os.environ["PYTHONWARNINGS"] = "ignore"
        try:
            yield
        finally:
            os.environ.pop("PYTHONWARNINGS", None)
