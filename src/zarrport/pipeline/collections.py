"""Group source files into collections by a pattern over their names.

A pattern is a file name (or path relative to the batch root) with ``{field}`` placeholders,
e.g. the CMIP6 convention ``{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc``.
Files that agree on every field belong to one collection, except the fields that say *when*
(``years``, ``time_range``, ``period``, ``date`` ...) -- those differ between the files of one
collection, which is what gets concatenated -- and fields whose name starts with ``_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zarrport.errors import InvalidArgumentError

#: fields that vary along the concatenation dimension and so do not name a collection
TIME_FIELDS = frozenset({
    "years", "year", "time", "times", "time_range", "timerange", "period", "date", "dates",
    "date_range", "daterange", "start", "end", "start_date", "end_date",
})

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CollectionPattern:
    pattern: str
    regex: re.Pattern[str]
    fields: tuple[str, ...]
    key_fields: tuple[str, ...]

    @classmethod
    def compile(cls, pattern: str) -> CollectionPattern:
        fields = tuple(_FIELD.findall(pattern))
        if not fields:
            raise InvalidArgumentError(
                f"--collection-by {pattern!r} has no {{field}} placeholders, e.g. "
                "'{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc'"
            )
        if len(set(fields)) != len(fields):
            raise InvalidArgumentError(f"--collection-by {pattern!r} repeats a field name")
        parts: list[str] = []
        pos = 0
        for m in _FIELD.finditer(pattern):
            parts.append(re.escape(pattern[pos:m.start()]))
            # fields never span a path separator; the shortest match lets '_' separate them
            parts.append(f"(?P<{m.group(1)}>[^/]+?)")
            pos = m.end()
        parts.append(re.escape(pattern[pos:]))
        key = tuple(f for f in fields if f.lower() not in TIME_FIELDS and not f.startswith("_"))
        return cls(pattern, re.compile("".join(parts) + r"\Z"), fields, key)

    def match(self, relpath: str) -> dict[str, str] | None:
        """The fields of ``relpath`` (matched as a whole path if the pattern has a ``/``,
        else on the file name), or None when it does not match."""
        target = relpath if "/" in self.pattern else relpath.rsplit("/", 1)[-1]
        m = self.regex.match(target)
        return m.groupdict() if m else None

    def collection_id(self, fields: dict[str, str]) -> str:
        values = [fields[f] for f in self.key_fields]
        return safe_id("_".join(values)) if values else "all"

    def key(self, fields: dict[str, str]) -> dict[str, str]:
        return {f: fields[f] for f in self.key_fields}


def safe_id(text: str) -> str:
    """A collection id usable as a file name, STAC id and Icechunk repository name."""
    out = _UNSAFE.sub("-", text).strip("-.")
    return out or "all"
