"""``zarrport run PIPELINE.yaml``: the chain of zarrport commands (batch, convert, catalog,
analyses ...) from one YAML file, each stage the same click command with the same options as
on the command line, matrices expanded, fresh stages skipped.

:func:`load_pipeline` reads and expands a file (nothing runs), :func:`plan` says what a run
would do, :func:`run_pipeline` does it.
"""

from __future__ import annotations

from zarrport.workflow.runner import Step, plan, run_pipeline
from zarrport.workflow.spec import Instance, Pipeline, load_pipeline

__all__ = ["Instance", "Pipeline", "Step", "load_pipeline", "plan", "run_pipeline"]
