"""Whole archives: resumable parallel batches with a status ledger, and watch mode."""

from zarrport.pipeline.batch import BatchResult, run_batch
from zarrport.pipeline.ledger import Ledger

__all__ = ["BatchResult", "Ledger", "run_batch"]
