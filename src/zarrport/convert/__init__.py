"""Physical conversion where virtual references are not enough: chunk plans for the access
pattern (:mod:`~zarrport.convert.plan`), source-aware memory-bounded jobs
(:mod:`~zarrport.convert.jobs`) and the Zarr v3 writer (:mod:`~zarrport.convert.writer`)."""

from zarrport.convert.plan import Plan, VariablePlan, make_plan
from zarrport.convert.rechunk import rechunk
from zarrport.convert.writer import convert

__all__ = ["Plan", "VariablePlan", "convert", "make_plan", "rechunk"]
