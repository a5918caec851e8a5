"""zarrport's command line run in the test's process (so fixtures, coverage and the Dask
clusters of the test apply), its output captured by pytest's ``capsys``."""

from __future__ import annotations

import pytest

from zarrport.cli import main


def run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``zarrport ARGS...``."""
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
