"""A YAML loader that keeps line numbers, so pipeline errors can name the line and key.

Mappings load as :class:`LineDict` and sequences as :class:`LineList`: plain ``dict``/``list``
subclasses that also remember the line of each key (or item) and of the container itself.
Scalars stay plain Python values; their line is the line of their key or item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zarrport.errors import InvalidArgumentError
from zarrport.extras import require


class LineDict(dict):
    """A mapping with ``line`` (where it starts) and ``key_lines`` (key -> 1-based line)."""

    line: int = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A sequence with ``line`` (where it starts) and ``item_lines`` (index -> line)."""

    line: int = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def _loader() -> type:
    require("analysis", "yaml", what="zarrport run (YAML pipelines)")
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> LineDict:  # type: ignore[override]
            out = LineDict()
            out.line = node.start_mark.line + 1
            self.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in out:
                    raise InvalidArgumentError(
                        f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
                out[key] = self.construct_object(value_node, deep=True)
                out.key_lines[key] = key_node.start_mark.line + 1
            return out

        def construct_sequence(self, node: Any, deep: bool = False) -> LineList:  # type: ignore[override]
            out = LineList(self.construct_object(child, deep=True) for child in node.value)
            out.line = node.start_mark.line + 1
            out.item_lines = [child.start_mark.line + 1 for child in node.value]
            return out

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_sequence)
    return Loader


def load_text(text: str, name: str = "<pipeline>") -> Any:
    """Parse YAML ``text`` into LineDict/LineList/scalars; syntax errors -> one line."""
    import yaml

    loader = _loader()
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 -- a SafeLoader subclass
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"{name}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InvalidArgumentError(f"{name}{where}: not valid YAML: {problem}") from None


def load_file(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        from zarrport.errors import SourceNotFoundError

        raise SourceNotFoundError(f"pipeline file {path} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise InvalidArgumentError(f"pipeline file {path}: cannot read it: {err}") from None
    return load_text(text, str(path))


def parse_scalar(text: str) -> Any:
    """A ``--set`` value: YAML's reading of it (2 -> int, true -> bool, [a, b] -> list),
    the text itself when that fails."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506
    except yaml.YAMLError:
        return text
