"""Design-space sweeps: a grid of dotted config keys x traces, run in parallel into a
resumable result store, and the analysis helpers that read it back.

**Spec** (YAML, strict; see ``docs/sweeps.md``): a ``base`` hardware config, a ``grid``
of dotted keys with value lists, optional ``fixed`` overrides, ``constraints`` written in
a small safe expression language (parsed with :mod:`ast` against a whitelist and
evaluated by our own walker: config loading never executes code), an optional
``sample`` (seeded ``random`` or Latin-hypercube ``lhs``) and one or more ``traces``.
Every key and every value is checked before anything runs.

A **point** is one resolved config x one trace; its id is a hash of the resolved
config's :meth:`HwConfig.config_hash` and the trace's identity (model name plus a hash
of its manifest and tensor files), so it does not depend on the spec's name, its key
order or where the trace lives.

**Store.** ``RESULTS_DIR/points/<point_id>.parquet``, one file per finished point,
holding its per-layer rows and one ``scope == "total"`` row (a failed point holds one
row with ``status == "failed"`` and the error message), plus ``RESULTS_DIR/spec.yaml``,
a copy of the last spec run. Why this shape:

* *Resumable and exactly-once by construction*: a point is done iff its file exists;
  files are named by point id, so a point can never be stored twice.
* *Atomic*: each file is written to a dot-prefixed temp file in the same directory and
  moved into place with :func:`os.replace` (atomic on POSIX and Windows), so a crash or
  ``kill -9`` loses at most the points in flight and never leaves a half-written result.
  Stale temp files are removed on the next run.
* *One writer*: workers return DataFrames and only the driver writes, so a Dask cluster
  needs no shared results directory (traces must be readable at the same path on
  workers, which load them memory-mapped).
* *Parquet, not CSV*: int64 counts stay int64, strings stay strings, missing stays
  missing, and reading a few thousand small files with pyarrow takes seconds. CSV would
  lose dtypes and need a schema on the side.

* *Compacted*: every 1000 committed points, and at the end of a run, the driver writes
  waiting point files into one batch file and then deletes them (:func:`compact`); a
  point file wins over a batch and a newer batch over an older one, so readers see each
  point exactly once whenever a crash happens. ``docs/sweeps.md`` has the rules.

:func:`load_results` concatenates the files into one DataFrame, optionally filtered by
swept keys with the filter pushed down to the Parquet reader.

**Work reuse**: workers keep config-independent work across points
(:mod:`accelsim.model.reuse`) and get related points in chunks.

The package is split by concern:

* :mod:`accelsim.sweep.spec`: the strict spec loader (:func:`load_spec`) and the safe
  constraint language (:func:`parse_constraint`, :func:`eval_constraint`);
* :mod:`accelsim.sweep.plan`: grid / sampling expansion into points and point ids
  (:func:`plan_sweep`, :func:`trace_identity`);
* :mod:`accelsim.sweep.store`: the Parquet result store, atomic writes,
  :func:`stored_points` and :func:`load_results`;
* :mod:`accelsim.sweep.runner`: the worker (:func:`run_point`), the inline, process-pool
  and Dask backends and :func:`sweep` itself;
* :mod:`accelsim.sweep.analysis`: :func:`totals_only`, :func:`pareto`, :func:`speedup`.
"""

from __future__ import annotations

from accelsim.analysis.sweep.analysis import pareto, speedup, totals_only
from accelsim.analysis.sweep.plan import Point, SweepPlan, plan_sweep, trace_identity
from accelsim.analysis.sweep.runner import SweepEvent, SweepSummary, run_point, sweep
from accelsim.analysis.sweep.spec import (
    MAX_UNSAMPLED,
    SAMPLE_METHODS,
    SPEC_KEYS,
    Constraint,
    Sample,
    SweepSpec,
    eval_constraint,
    load_spec,
    parse_constraint,
)
from accelsim.analysis.sweep.store import META_COLUMNS, compact, load_results, stored_points

__all__ = [
    "MAX_UNSAMPLED",
    "META_COLUMNS",
    "SAMPLE_METHODS",
    "SPEC_KEYS",
    "Constraint",
    "Point",
    "Sample",
    "SweepEvent",
    "SweepPlan",
    "SweepSpec",
    "SweepSummary",
    "compact",
    "eval_constraint",
    "load_results",
    "load_spec",
    "pareto",
    "parse_constraint",
    "plan_sweep",
    "run_point",
    "speedup",
    "stored_points",
    "sweep",
    "totals_only",
    "trace_identity",
]
