"""Running a pipeline: each stage instance in file order, skipped when fresh, run in-process
through the same click command (and options) as on the command line."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from zarrport.errors import InvalidArgumentError, ZarrportError
from zarrport.workflow import state
from zarrport.workflow.spec import Instance, Pipeline

__all__ = ["Step", "plan", "run_pipeline"]


@dataclass
class Step:
    """What happens (or would happen) to one stage instance."""

    instance: Instance
    action: str  # "run", "skip" (fresh), "unselected" (not in --only), "failed"
    reason: str
    seconds: float | None = None

    def to_dict(self, pipe: Pipeline) -> dict[str, Any]:
        inst = self.instance
        record = state.record_path(inst)
        inputs = state.expand_inputs(inst)
        return {
            "id": inst.id, "stage": inst.stage, "matrix": inst.matrix,
            "action": self.action, "reason": self.reason,
            "command": inst.command_line, "argv": ["zarrport", *inst.run, *inst.argv],
            "inputs": [*inputs.remote, *sorted(inputs.files)], "outputs": inst.outputs,
            "needs": [pipe.instances[i].id for i in inst.needs],
            "record": str(record) if record else None,
            **({"seconds": round(self.seconds, 3)} if self.seconds is not None else {}),
        }


def _check_only(pipe: Pipeline, only: tuple[str, ...] | list[str]) -> set[str] | None:
    if not only:
        return None
    names = pipe.stage_names()
    unknown = [n for n in only if n not in names]
    if unknown:
        raise InvalidArgumentError(f"--only {unknown[0]}: no such stage in {pipe.path} "
                                   f"(stages: {', '.join(names)})")
    return set(only)


def _decide(pipe: Pipeline, i: int, selected: set[str] | None, force: bool,
            running: set[int]) -> tuple[str, str]:
    inst = pipe.instances[i]
    if selected is not None and inst.stage not in selected:
        return "unselected", "not in --only"
    if force:
        return "run", "--force"
    upstream = [pipe.instances[j].id for j in inst.needs if j in running]
    if upstream:
        return "run", f"upstream {upstream[0]} runs"
    produced = {out: pipe.instances[j].id for j in running for out in pipe.instances[j].outputs}
    why = state.staleness(inst, produced)
    if why is not None:
        return "run", why
    return "skip", state.fresh_reason(inst)


def plan(pipe: Pipeline, *, only: tuple[str, ...] | list[str] = (), force: bool = False
         ) -> list[Step]:
    """What a run would do now, without running anything (``--dry-run``)."""
    selected = _check_only(pipe, only)
    steps: list[Step] = []
    running: set[int] = set()
    for i, inst in enumerate(pipe.instances):
        action, reason = _decide(pipe, i, selected, force, running)
        if action == "run":
            running.add(i)
        steps.append(Step(inst, action, reason))
    return steps


def run_pipeline(pipe: Pipeline, *, only: tuple[str, ...] | list[str] = (), force: bool = False,
                 out: TextIO | None = None) -> list[Step]:
    """Run every stale stage instance in order; stop at the first failure (raised as a
    one-line :class:`ZarrportError` naming the stage). Stage output and a header line per
    instance go to ``out`` (default stdout)."""
    selected = _check_only(pipe, only)
    with contextlib.ExitStack() as stack:
        return _run(pipe, selected, force, out or sys.stdout, stack)


def _run(pipe: Pipeline, selected: set[str] | None, force: bool, stream: TextIO,
         stack: contextlib.ExitStack) -> list[Step]:
    steps: list[Step] = []
    ran: set[int] = set()
    total = len(pipe.instances)
    scheduler: str | None = None
    for i, inst in enumerate(pipe.instances):
        action, reason = _decide(pipe, i, selected, force, ran)
        step = Step(inst, action, reason)
        steps.append(step)
        head = f"== [{i + 1}/{total}] {inst.id}"
        if action == "unselected":
            continue
        if action == "skip":
            click.echo(f"{head}: skipped, {reason}", file=stream)
            continue
        if inst.shared_dask and scheduler is None:
            scheduler = _local_cluster(pipe, stack)
        where = " on the run's Dask cluster" if inst.shared_dask else ""
        click.echo(f"{head}: {inst.command_line}  ({reason}){where}", file=stream)
        inputs = state.expand_inputs(inst)  # as read: a later change makes it stale
        state.remove_record(inst)
        made = _make_parents(inst)
        t0 = time.perf_counter()
        ran.add(i)
        try:
            with contextlib.redirect_stdout(stream):
                invoke(inst, inst.run_argv(scheduler))
        except BaseException:
            step.action = "failed"
            for d in made:  # directories made for a failed stage's outputs, if still empty
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        step.seconds = time.perf_counter() - t0
        state.write_record(inst, inputs, step.seconds)
        stream.flush()
    return steps


def _make_parents(inst: Instance) -> list[Path]:
    """Create the parent directories of the instance's local outputs (commands want them
    to exist); return those created, deepest first."""
    made: list[Path] = []
    for o in inst.outputs:
        if state.is_remote(o):
            continue
        parent = Path(state.local(o)).parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
        made += missing
    return made


def _local_cluster(pipe: Pipeline, stack: contextlib.ExitStack) -> str:
    """One local Dask cluster for every Dask stage of the run (each starting its own costs
    seconds per stage); closed when the run ends."""
    from zarrport.analysis.cluster import dask_client

    client = stack.enter_context(dask_client(
        None, workers=pipe.dask.get("workers"), memory_limit=pipe.dask.get("memory_limit"),
        echo=lambda line: click.echo(f"{line} (shared by the run's Dask stages)", err=True)))
    return str(client.scheduler.address)


def invoke(inst: Instance, argv: list[str] | None = None) -> None:
    """Run the instance's zarrport command in this process, as ``zarrport.cli.main`` would;
    failures become one-line errors naming the stage."""
    from zarrport.cli import cli

    label = f"stage {inst.id} (zarrport {' '.join(inst.run)})"
    try:
        argv = inst.argv if argv is None else argv
        code = cli.main(args=[*inst.run, *argv], prog_name="zarrport",
                        standalone_mode=False)
    except ZarrportError as err:
        raise _same_kind(err, f"{label}: {err}") from err
    except click.exceptions.Abort:
        raise
    except click.ClickException as err:
        raise InvalidArgumentError(f"{label}: {err.format_message()}") from err
    except SystemExit as err:  # a command that exits by itself
        if err.code not in (0, None):
            raise ZarrportError(f"{label}: exited with status {err.code}") from err
        return
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a bug or an unexpected library failure: still one line
        raise ZarrportError(f"{label}: {type(err).__name__}: {err}") from err
    if isinstance(code, int) and code != 0:
        raise ZarrportError(f"{label}: exited with status {code}")


def _same_kind(err: ZarrportError, message: str) -> ZarrportError:
    """The same error class (so the exit status is the command's own), a new message."""
    try:
        new = type(err)(message)
    except TypeError:
        new = ZarrportError(message)
        new.code = err.code
    return new
