"""Pipeline files: schema checks, ``${...}`` substitution, matrices, and each stage instance's
zarrport command line.

Everything is resolved before anything runs (the values come from the file, ``--set`` and
the environment only), so ``--dry-run`` shows exactly what a run does and a mistake anywhere
in the file is reported, with its line and key, before the first stage starts.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from zarrport.errors import InvalidArgumentError
from zarrport.workflow.yamlfile import LineDict, LineList, load_file, parse_scalar

__all__ = ["Instance", "Pipeline", "load_pipeline", "norm"]

TOP_KEYS = ("version", "description", "vars", "matrix", "dask", "stages")
STAGE_KEYS = ("name", "description", "run", "with", "matrix", "needs")
DASK_KEYS = ("scheduler", "workers", "memory_limit")
#: long options whose values a stage writes (its outputs, for freshness)
OUTPUT_OPTIONS = ("--output", "--plot", "--stac", "--catalog-dir", "--into", "--ledger")
#: options that say where or how verbosely a stage runs, not what it computes: left out of
#: the parameters hash, so the same pipeline on another cluster is still fresh
EXECUTION_PARAMS = ("scheduler", "workers", "memory_limit", "progress", "as_json")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_REF = re.compile(r"\$\$\{([^{}]*)\}|\$\{([^{}]*)\}")


def norm(key: str) -> str:
    """Option spelling -> one form: ``--start_year``, ``start-year`` -> ``start-year``."""
    return str(key).lstrip("-").replace("_", "-").lower()


@dataclass
class Stage:
    name: str
    index: int
    run: tuple[str, ...]
    command: click.Command
    with_: LineDict
    matrix: dict[str, list[Any]]
    needs: list[str]
    line: int
    used: list[str] = field(default_factory=list)  # matrix keys this stage expands over


@dataclass
class Instance:
    """One run of one stage: its matrix values, full argument list, inputs and outputs."""

    stage: str
    run: tuple[str, ...]
    matrix: dict[str, Any]
    argv: list[str]
    values: dict[str, Any]  # normalized option/argument name -> expanded value
    args: list[str]  # positional arguments (inputs; globs expanded when checked)
    inputs: list[str]  # other option values that may name input files (--regions, --plan)
    outputs: list[str]
    needs: list[int]  # positions in Pipeline.instances
    hashed: list[str]  # argv without the execution options (EXECUTION_PARAMS)
    shared_dask: bool = False  # runs on the run's own local cluster (--scheduler added)

    def run_argv(self, scheduler: str | None) -> list[str]:
        """The arguments as run: ``--scheduler`` of the run's local cluster added."""
        if not (self.shared_dask and scheduler):
            return list(self.argv)
        if "--" in self.argv:
            k = self.argv.index("--")
            return [*self.argv[:k], "--scheduler", scheduler, *self.argv[k:]]
        return [*self.argv, "--scheduler", scheduler]

    @property
    def id(self) -> str:
        if not self.matrix:
            return self.stage
        return f"{self.stage}[{','.join(f'{k}={v}' for k, v in self.matrix.items())}]"

    @property
    def command_line(self) -> str:
        return shlex.join(["zarrport", *self.run, *self.argv])


@dataclass
class Pipeline:
    path: str
    vars: LineDict
    matrix: dict[str, list[Any]]
    dask: dict[str, Any]
    stages: list[Stage]
    instances: list[Instance]

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


class _Errors:
    """Error messages that name the file, the line and the key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, line: int | None, key: str, message: str) -> InvalidArgumentError:
        where = f" line {line}" if line else ""
        return InvalidArgumentError(f"{self.path}{where}, key {key}: {message}")


# --------------------------------------------------------------------------- commands


def command_tree() -> click.Group:
    from zarrport.cli import _register, cli

    _register()
    return cli


def find_command(run: str) -> tuple[tuple[str, ...], click.Command] | str:
    """``"analyze normals"`` -> (path, command), or a message listing what exists."""
    group: click.Command = command_tree()
    path = tuple(run.split())
    for i, part in enumerate(path):
        if not isinstance(group, click.Group):
            return f"zarrport {' '.join(path[:i])} has no subcommands"
        sub = group.commands.get(part)
        if sub is None:
            prefix = " ".join(path[:i])
            names = ", ".join(sorted(f"{prefix} {n}".strip() for n in group.commands
                                     if n != "run"))
            return f"no zarrport command {' '.join(path[:i + 1])!r}; commands: {names}"
        group = sub
    if isinstance(group, click.Group):
        subs = ", ".join(f"{run} {n}" for n in sorted(group.commands))
        return f"zarrport {run} is a group: name one of its commands ({subs})"
    if path == ("run",):
        return "a pipeline cannot run `zarrport run`"
    return path, group


def param_index(cmd: click.Command) -> dict[str, click.Parameter]:
    """Normalized long option names, destination names and argument names -> parameter."""
    index: dict[str, click.Parameter] = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for o in (*p.opts, *p.secondary_opts):
                if o.startswith("--"):
                    index[norm(o)] = p
        if p.name:
            index.setdefault(norm(p.name), p)
    return index


def _long(p: click.Parameter) -> str:
    if isinstance(p, click.Argument):
        return (p.name or "").upper()
    longs = [o for o in p.opts if o.startswith("--")]
    return longs[0] if longs else p.opts[0]


def valid_keys(cmd: click.Command) -> str:
    opts = [_long(p)[2:] for p in cmd.params if isinstance(p, click.Option)]
    args = [p.name for p in cmd.params if isinstance(p, click.Argument)]
    return ", ".join(["args", *[a for a in args if a], *opts])


# --------------------------------------------------------------------------- substitution


def references(value: Any) -> list[str]:
    """Names referenced by ``${...}`` anywhere in ``value`` (not ``$${...}`` literals)."""
    out: list[str] = []
    if isinstance(value, str):
        out += [m.group(2).strip() for m in _REF.finditer(value) if m.group(2) is not None]
    elif isinstance(value, dict):
        for v in value.values():
            out += references(v)
    elif isinstance(value, list):
        for v in value:
            out += references(v)
    return out


class _Resolver:
    def __init__(self, pipe: _Builder, matrix: dict[str, Any], stage: Stage | None) -> None:
        self.pipe = pipe
        self.matrix = matrix
        self.stage = stage
        self.stack: list[str] = []

    def resolve(self, value: Any, line: int | None, key: str) -> Any:
        if isinstance(value, str):
            return self._string(value, line, key)
        if isinstance(value, LineDict):
            out = {k: self.resolve(v, value.line_of(k), f"{key}.{k}") for k, v in value.items()}
            return out
        if isinstance(value, dict):
            return {k: self.resolve(v, line, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, LineList):
            return [self.resolve(v, value.line_of(i), f"{key}[{i}]")
                    for i, v in enumerate(value)]
        if isinstance(value, list):
            return [self.resolve(v, line, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    def _string(self, text: str, line: int | None, key: str) -> Any:
        whole = _REF.fullmatch(text)
        if whole and whole.group(2) is not None:  # "${x}" alone keeps x's type (int, list)
            return self.lookup(whole.group(2).strip(), line, key)

        def sub(m: re.Match[str]) -> str:
            if m.group(1) is not None:
                return "${" + m.group(1) + "}"
            name = m.group(2).strip()
            value = self.lookup(name, line, key)
            if value is None:
                raise self.pipe.err(line, key, f"${{{name}}} has no value (give --set "
                                    f"{name}=...)")
            if isinstance(value, (dict, list)):
                raise self.pipe.err(line, key, f"${{{name}}} is a "
                                    f"{'mapping' if isinstance(value, dict) else 'list'}; "
                                    "only a whole value '${...}' can be one, not part of a "
                                    "string")
            return str(value).lower() if isinstance(value, bool) else str(value)

        return _REF.sub(sub, text)

    def lookup(self, name: str, line: int | None, key: str) -> Any:
        err = self.pipe.err
        parts = name.split(".")
        head = parts[0]
        if not name or any(not p for p in parts):
            raise err(line, key, f"${{{name}}}: empty name")
        if head == "env":
            if len(parts) != 2:
                raise err(line, key, f"${{{name}}}: write ${{env.NAME}}")
            if parts[1] not in os.environ:
                raise err(line, key, f"${{{name}}}: environment variable {parts[1]} is not set")
            return os.environ[parts[1]]
        if head == "stages":
            return self._stage_value(name, parts, line, key)
        if head == "pipeline":
            if parts[1:] != ["dir"]:
                raise err(line, key, f"${{{name}}}: write ${{pipeline.dir}} (the pipeline "
                          "file's directory)")
            return str(Path(self.pipe.path).resolve().parent)
        if head == "dask":
            if len(parts) != 2 or parts[1] not in self.pipe.dask:
                raise err(line, key, f"${{{name}}}: dask has {', '.join(DASK_KEYS)}")
            return self.pipe.dask[parts[1]]
        if head in self.matrix:
            if len(parts) != 1:
                raise err(line, key, f"${{{name}}}: matrix value {head} has no keys")
            return self.matrix[head]
        if head in self.pipe.all_matrix_keys:
            raise err(line, key, f"${{{name}}}: matrix key {head} is not available here "
                      "(matrix values are for stages, not for vars or matrices)")
        if head in self.pipe.vars:
            if name in self.stack:
                raise err(line, key, f"${{{name}}} refers to itself "
                          f"({' -> '.join([*self.stack, name])})")
            node: Any = self.pipe.vars
            vline: int | None = self.pipe.vars.line_of(head)
            for i, part in enumerate(parts):
                if not isinstance(node, dict) or part not in node:
                    have = ", ".join(map(str, node)) if isinstance(node, dict) else "nothing"
                    raise err(line, key, f"${{{name}}}: vars.{'.'.join(parts[:i])} has no "
                              f"key {part} (it has {have})")
                if isinstance(node, LineDict):
                    vline = node.line_of(part)
                node = node[part]
            self.stack.append(name)
            try:
                return self.resolve(node, vline, f"vars.{name}")
            finally:
                self.stack.pop()
        known = sorted({*self.pipe.vars, *self.matrix, "env.NAME", "stages.STAGE.OPTION",
                        "dask.scheduler", "pipeline.dir"})
        raise err(line, key, f"${{{name}}}: unknown name {head!r} (known: {', '.join(known)})")

    def _stage_value(self, name: str, parts: list[str], line: int | None, key: str) -> Any:
        err = self.pipe.err
        if len(parts) != 3:
            raise err(line, key, f"${{{name}}}: write ${{stages.STAGE.OPTION}}")
        target, option = parts[1], norm(parts[2])
        stages = {s.name: s for s in self.pipe.stages}
        if target not in stages:
            raise err(line, key, f"${{{name}}}: no stage {target!r} (stages: "
                      f"{', '.join(stages)})")
        if self.stage is None or stages[target].index >= self.stage.index:
            raise err(line, key, f"${{{name}}}: only an earlier stage's options can be used")
        found = [inst for inst in self.pipe.instances if inst.stage == target
                 and all(self.matrix.get(k, v) == v for k, v in inst.matrix.items())]
        if not found:
            raise err(line, key, f"${{{name}}}: stage {target} has no instance for "
                      f"{self.matrix}")
        if option not in found[0].values:
            have = ", ".join(sorted(found[0].values)) or "none"
            raise err(line, key, f"${{{name}}}: stage {target} gives no {parts[2]} "
                      f"(it gives: {have})")
        return found[0].values[option]


# --------------------------------------------------------------------------- the builder


class _Builder:
    def __init__(self, path: str, doc: Any, sets: list[str]) -> None:
        self.path = path
        self.err = _Errors(path)
        if not isinstance(doc, LineDict):
            raise InvalidArgumentError(f"{path}: a pipeline file is a mapping with version, "
                                       "vars, matrix, dask and stages")
        self.doc = doc
        self.stages: list[Stage] = []
        self.instances: list[Instance] = []
        self._top()
        for item in sets:
            self._set(item)
        if self.dask.get("scheduler") is not None and not isinstance(
                self.dask["scheduler"], str):
            raise self.err(self.dask_line, "dask.scheduler", "an address, e.g. tcp://host:8786")
        self.matrix = {k: self._matrix_values(k, v, self.matrix_node, "matrix")
                       for k, v in self.matrix_raw.items()}
        self.all_matrix_keys = set(self.matrix)

    # top level -------------------------------------------------------------------------
    def _top(self) -> None:
        doc, err = self.doc, self.err
        for key in doc:
            if key not in TOP_KEYS:
                raise err(doc.line_of(key), key, f"unknown key (valid: {', '.join(TOP_KEYS)})")
        if "version" not in doc:
            raise err(doc.line, "version", "missing: write version: 1")
        if doc["version"] != 1:
            raise err(doc.line_of("version"), "version",
                      f"{doc['version']!r} is not a version this zarrport reads (1)")
        self.vars = self._mapping(doc, "vars")
        self.matrix_node = self._mapping(doc, "matrix")
        self.matrix_raw: dict[str, Any] = dict(self.matrix_node)
        dask = self._mapping(doc, "dask")
        self.dask_line = doc.line_of("dask")
        for key in dask:
            if norm(key).replace("-", "_") not in DASK_KEYS:
                raise err(dask.line_of(key), f"dask.{key}",
                          f"unknown key (valid: {', '.join(DASK_KEYS)})")
        self.dask = {k: None for k in DASK_KEYS}
        self.dask.update({norm(k).replace("-", "_"): v for k, v in dask.items()})
        for name in self.vars:
            if not isinstance(name, str) or not _NAME.match(name):
                raise err(self.vars.line_of(name), f"vars.{name}",
                          "names are letters, digits, - and _ (starting with a letter)")
            if name in ("env", "stages", "dask", "pipeline"):
                raise err(self.vars.line_of(name), f"vars.{name}", "reserved name")
            if name in self.matrix_raw:
                raise err(self.vars.line_of(name), f"vars.{name}", "also a matrix key")
        stages = doc.get("stages")
        if not isinstance(stages, LineList) or not stages:
            raise err(doc.line_of("stages"), "stages", "a list of stages (name, run, with)")
        self.stage_nodes = stages

    def _mapping(self, node: LineDict, key: str) -> LineDict:
        value = node.get(key)
        if value is None:
            out = LineDict()
            out.line = node.line_of(key)
            return out
        if not isinstance(value, LineDict):
            raise self.err(node.line_of(key), key, f"a mapping, not {_kind(value)}")
        return value

    def _matrix_values(self, key: str, value: Any, node: LineDict, where: str) -> list[Any]:
        line = node.line_of(key)
        if not isinstance(key, str) or not _NAME.match(key):
            raise self.err(line, f"{where}.{key}", "names are letters, digits, - and _")
        if isinstance(value, str) and "${" in value:
            value = _Resolver(self, {}, None).resolve(value, line, f"{where}.{key}")
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            value = [value]
        if not value:
            raise self.err(line, f"{where}.{key}", "an empty list: nothing would run")
        for v in value:
            if isinstance(v, (dict, list)) or v is None:
                raise self.err(line, f"{where}.{key}", f"values are strings or numbers, not "
                               f"{_kind(v)}")
        if len(set(map(str, value))) != len(value):
            raise self.err(line, f"{where}.{key}", f"a value is listed twice: {value}")
        return list(value)

    def _set(self, item: str) -> None:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgumentError(f"--set wants NAME=VALUE, got {item!r}")
        value = parse_scalar(text) if text else ""
        parts = key.split(".")
        if parts[0] == "dask":
            sub = norm(".".join(parts[1:])).replace("-", "_")
            if len(parts) != 2 or sub not in DASK_KEYS:
                raise InvalidArgumentError(f"--set {key}: dask has {', '.join(DASK_KEYS)}")
            self.dask[sub] = value
            return
        if parts[0] == "matrix":
            if len(parts) != 2 or parts[1] not in self.matrix_raw:
                raise InvalidArgumentError(f"--set {key}: the pipeline's matrix keys are "
                                           f"{', '.join(self.matrix_raw) or 'none'}")
            self.matrix_raw[parts[1]] = value
            return
        node: Any = self.vars
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                have = ", ".join(map(str, node)) if isinstance(node, dict) else "nothing"
                where = f"vars.{'.'.join(parts[:i])}" if i else "vars"
                raise InvalidArgumentError(
                    f"--set {key}: {self.path} has no {where}.{part} ({where} has {have}; "
                    "also dask.scheduler, dask.workers, dask.memory_limit, matrix.KEY)"
                    .replace("vars.vars.", "vars."))
            if i == len(parts) - 1:
                node[part] = value
            node = node[part]

    # stages ----------------------------------------------------------------------------
    def build(self) -> Pipeline:
        for i, node in enumerate(self.stage_nodes):
            self.stages.append(self._stage(i, node))
        for stage in self.stages:
            self._expand(stage)
        return Pipeline(self.path, self.vars, self.matrix, self.dask, self.stages,
                        self.instances)

    def _stage(self, i: int, node: Any) -> Stage:
        err = self.err
        line = self.stage_nodes.line_of(i)
        if not isinstance(node, LineDict):
            raise err(line, f"stages[{i}]", f"a mapping (name, run, with), not {_kind(node)}")
        name = node.get("name")
        label = f"stages[{i}]" if not isinstance(name, str) else f"stages.{name}"
        for key in node:
            if key not in STAGE_KEYS:
                raise err(node.line_of(key), f"{label}.{key}",
                          f"unknown key (valid: {', '.join(STAGE_KEYS)})")
        if not isinstance(name, str) or not _NAME.match(name):
            raise err(node.line_of("name"), f"{label}.name",
                      "every stage has a name: letters, digits, - and _")
        if name in {s.name for s in self.stages}:
            raise err(node.line_of("name"), f"{label}.name", "two stages have this name")
        run = node.get("run")
        if not isinstance(run, str) or not run.strip():
            raise err(node.line_of("run"), f"{label}.run",
                      "the zarrport command to run, e.g. run: analyze normals")
        found = find_command(run)
        if isinstance(found, str):
            raise err(node.line_of("run"), f"{label}.run", found)
        path, command = found
        with_ = self._mapping(node, "with")
        index = param_index(command)
        for key in with_:
            if key == "args":
                continue
            if not isinstance(key, str) or norm(key) not in index:
                raise err(with_.line_of(key), f"{label}.with.{key}",
                          f"zarrport {run} has no option {key!r} (valid: {valid_keys(command)})")
        matrix_node = self._mapping(node, "matrix")
        matrix = {k: self._matrix_values(k, v, matrix_node, f"{label}.matrix")
                  for k, v in matrix_node.items()}
        self.all_matrix_keys |= set(matrix)
        for k in matrix:
            if k in self.vars:
                raise err(matrix_node.line_of(k), f"{label}.matrix.{k}", "also a var")
        needs_value = node.get("needs")
        if needs_value is None:
            needs = [self.stages[-1].name] if self.stages else []
        else:
            needs = needs_value if isinstance(needs_value, list) else [needs_value]
            earlier = [s.name for s in self.stages]
            for n in needs:
                if n not in earlier:
                    raise err(node.line_of("needs"), f"{label}.needs",
                              f"{n!r} is not an earlier stage (earlier: "
                              f"{', '.join(earlier) or 'none'})")
        stage = Stage(name, i, path, command, with_, matrix, list(needs), line)
        stage.used = self._used_keys(stage)
        for k in matrix:
            if k not in stage.used:
                raise err(matrix_node.line_of(k), f"{label}.matrix.{k}",
                          f"no ${{{k}}} in the stage's options: every instance would be the "
                          "same")
        return stage

    def _used_keys(self, stage: Stage) -> list[str]:
        """Matrix keys a stage expands over: those its options reference, through vars and
        earlier stages' options too."""
        keys = {**self.matrix, **stage.matrix}
        used: list[str] = []
        seen: set[str] = set()
        todo = references(stage.with_)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            parts = name.split(".")
            if parts[0] in keys:
                if parts[0] not in used:
                    used.append(parts[0])
            elif parts[0] == "stages" and len(parts) > 1:
                for s in self.stages:
                    if s.name == parts[1]:
                        used += [k for k in s.used if k not in used]
                        if s.name not in stage.needs:
                            stage.needs.append(s.name)
            elif parts[0] in self.vars:
                node: Any = self.vars
                for part in parts:
                    node = node.get(part) if isinstance(node, dict) else None
                todo += references(node)
        order = list(keys)
        return sorted(used, key=order.index)

    def _expand(self, stage: Stage) -> None:
        keys = {**self.matrix, **stage.matrix}
        names = stage.used
        combos = itertools.product(*(keys[k] for k in names)) if names else [()]
        outputs_seen: dict[str, str] = {}
        label = f"stages.{stage.name}"
        for combo in combos:
            matrix = dict(zip(names, combo, strict=True))
            r = _Resolver(self, matrix, stage)
            values: dict[str, Any] = {}
            for key, raw in stage.with_.items():
                values[norm(key)] = r.resolve(raw, stage.with_.line_of(key),
                                              f"{label}.with.{key}")
            inst = self._instance(stage, matrix, values)
            out = inst.outputs[0] if inst.outputs else None
            if out is not None:
                if out in outputs_seen:
                    raise self.err(stage.with_.line or stage.line, f"{label}.with",
                                   f"instances {outputs_seen[out]} and {inst.id} both write "
                                   f"{out}: use the matrix keys ({', '.join(names)}) in it")
                outputs_seen[out] = inst.id
            self.instances.append(inst)

    def _instance(self, stage: Stage, matrix: dict[str, Any], values: dict[str, Any]
                  ) -> Instance:
        cmd, err, with_ = stage.command, self.err, stage.with_
        index = param_index(cmd)
        label = f"stages.{stage.name}"
        lines = {norm(k): with_.line_of(k) for k in with_}
        given: dict[str, tuple[str, Any]] = {}  # param name -> (key, value)
        positional: dict[str, Any] = {}
        for key, value in values.items():
            if key == "args":
                continue
            p = index[key]
            if p.name in given or p.name in positional:
                raise err(lines[key], f"{label}.with.{key}",
                          f"given twice (also as {given.get(p.name, (key,))[0]})")
            if isinstance(p, click.Argument):
                positional[p.name or key] = value
            else:
                given[p.name or key] = (key, value)
        arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
        if "args" in values:
            args = values["args"]
            args = args if isinstance(args, list) else [args]
            rest = list(args)
            for p in arguments:
                if p.name in positional or not rest:
                    continue
                if p.nargs == -1:
                    positional[p.name or ""] = rest
                    rest = []
                else:
                    positional[p.name or ""] = rest.pop(0)
            if rest:
                raise err(lines["args"], f"{label}.with.args",
                          f"{len(rest)} more argument(s) than zarrport {' '.join(stage.run)} "
                          f"takes ({', '.join((p.name or '').upper() for p in arguments)})")
        # the pipeline's Dask: an existing scheduler goes to every stage that takes one and
        # did not choose its own; without one, such stages share a local cluster the run
        # starts (sized by dask.workers / dask.memory_limit), see runner.run_pipeline
        names = {p.name for p in cmd.params}
        shared = "scheduler" in names and not {"scheduler", "workers", "memory_limit"} & set(
            given)
        if shared and self.dask.get("scheduler"):
            given["scheduler"] = ("scheduler", self.dask["scheduler"])
            shared = False
        argv: list[str] = []
        args_in: list[str] = []
        hashed: list[str] = []
        inputs: list[str] = []
        outputs: list[str] = []
        for p in arguments:
            if p.name not in positional:
                continue
            value = positional[p.name]
            key = norm(p.name or "")
            where = (lines.get(key) or lines.get("args"), f"{label}.with."
                     f"{key if key in lines else 'args'}")
            items = value if isinstance(value, list) else [value]
            if p.nargs != -1 and len(items) != 1:
                raise err(*where, f"{(p.name or '').upper()} is one value, not a list")
            strings = [_string(v, err, where) for v in items]
            argv += strings
            if not isinstance(p.type, click.Choice):  # grib ingest KIND is not a file
                args_in += strings
        n_args = len(argv)
        hashed += argv
        dashed = any(a.startswith("-") for a in argv)
        for name, (key, value) in given.items():
            p = next(q for q in cmd.params if q.name == name)
            where = (lines.get(key, stage.line), f"{label}.with.{key}")
            words = self._option_words(p, key, value, err, where)
            argv += words
            if name not in EXECUTION_PARAMS:
                hashed += words
            if any(o in OUTPUT_OPTIONS or o == "-o" for o in p.opts) and value is not None:
                outputs += [w for w in words if not w.startswith("-")]
            elif isinstance(p.type, click.types.StringParamType) or isinstance(
                    p.type, click.Path):
                inputs += [w for w in words if not w.startswith("-")]
        if dashed:  # an argument that looks like an option: arguments after "--"
            argv = argv[n_args:] + ["--"] + argv[:n_args]
        self._check(stage, argv, lines)
        # ${stages.NAME.X} finds an option by any of its names (output, out, o ...)
        values = dict(values)
        for key, value in list(values.items()):
            p = index.get(key)
            if p is not None:
                names = [*(getattr(p, "opts", []) or []), p.name or ""]
                for alias in {norm(n) for n in names if n}:
                    values.setdefault(alias, value)
        for p in arguments:  # and positional arguments by name (args: gave them in order)
            if p.name in positional:
                values.setdefault(norm(p.name or ""), positional[p.name])
        return Instance(stage.name, stage.run, matrix, argv, values, args_in, inputs, outputs,
                        self._needs(stage, matrix), hashed, shared)

    def _option_words(self, p: click.Parameter, key: str, value: Any, err: _Errors,
                      where: tuple[int | None, str]) -> list[str]:
        assert isinstance(p, click.Option)
        if value is None:
            return []
        if p.is_flag:
            if not isinstance(value, bool):
                raise err(*where, f"a flag: true or false, not {value!r}")
            if p.secondary_opts:
                off = norm(key) in {norm(o) for o in p.secondary_opts}
                on = value != off
                return [_long(p) if on else p.secondary_opts[0]]
            return [_long(p)] if value else []
        if p.multiple:
            if isinstance(value, dict):
                items = [f"{k}={v if isinstance(v, str) else _json(v)}" for k, v in
                         value.items()]
            else:
                items = value if isinstance(value, list) else [value]
            return [w for v in items for w in (_long(p), _string(v, err, where))]
        if isinstance(value, (list, dict)):
            raise err(*where, f"{_long(p)} takes one value, not {_kind(value)}")
        return [_long(p), _string(value, err, where)]

    def _check(self, stage: Stage, argv: list[str], lines: dict[str, int]) -> None:
        """Let click parse the arguments now (types, choices, required options), so a bad
        value is reported before anything runs."""
        cmd = stage.command
        try:
            with cmd.make_context(" ".join(["zarrport", *stage.run]), list(argv),
                                  resilient_parsing=False):
                pass
        except click.UsageError as e:
            param = getattr(e, "param", None)
            key = next((k for k in lines if param is not None
                        and param_index(cmd).get(k) is param), None)
            line = lines.get(key, stage.with_.line or stage.line) if key else (
                stage.with_.line or stage.line)
            raise self.err(line, f"stages.{stage.name}.with{'.' + key if key else ''}",
                           f"zarrport {' '.join(stage.run)}: {e.format_message()}") from None

    def _needs(self, stage: Stage, matrix: dict[str, Any]) -> list[int]:
        return [i for i, inst in enumerate(self.instances) if inst.stage in stage.needs
                and all(matrix.get(k, v) == v for k, v in inst.matrix.items())]


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _string(value: Any, err: _Errors, where: tuple[int | None, str]) -> str:
    if isinstance(value, (dict, list)):
        raise err(*where, f"a string or number is needed here, not {_kind(value)}")
    if value is None:
        raise err(*where, "no value (null)")
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def load_pipeline(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> Pipeline:
    """Read, check and expand a pipeline file (``--set NAME=VALUE`` overrides applied)."""
    doc = load_file(path)
    return _Builder(str(path), doc, list(sets)).build()
