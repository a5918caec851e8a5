#!/usr/bin/env python
"""Run every real sample file through every output format and write docs/conformance.md."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from zarrport.conformance import real_files, run, to_markdown


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data" / "real")
    parser.add_argument("--out", type=Path, default=here / "docs" / "conformance.md")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    outcomes = run(real_files(args.data))
    args.out.write_text(to_markdown(outcomes, args.data))
    bad = [o for o in outcomes if not o.acceptable]
    for o in bad:
        print(f"{o.outcome}: {o.file} [{o.format}]: {o.reason}", file=sys.stderr)
    print(f"wrote {args.out}: {len(outcomes)} checks, {len(bad)} not acceptable")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
