"""Running sweeps: the per-point worker, the inline / process-pool / Dask backends and
:func:`sweep`, the driver that feeds them and writes every result to the store."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from accelsim.analysis.sweep.plan import Point, plan_sweep
from accelsim.analysis.sweep.spec import SweepSpec, load_spec
from accelsim.analysis.sweep.store import (
    META_COLUMNS,
    _atomic_bytes,
    _atomic_text,
    _clean_stale,
    compact,
    point_encode,
    stored_points,
)
from accelsim.errors import AccelsimError, ConfigError
from accelsim.io.hwconfig import HwConfig, build

# ====================================================================== the worker

_TRACES: dict[str, Any] = {}
#: this process's work cache (accelsim.model.reuse), made on first use
_CACHE: list[Any] = []

#: points sent to a worker at once: related points (same trace and compute config) land
#: in one worker, which then reuses their shared work
CHUNK = 8


def _work_cache(cache_bytes: int | None) -> Any:
    from accelsim.model.reuse import DEFAULT_CACHE_BYTES, WorkCache

    want = DEFAULT_CACHE_BYTES if cache_bytes is None else int(cache_bytes)
    if not _CACHE or _CACHE[0].max_bytes != want:
        _CACHE[:] = [WorkCache(want)]
    return _CACHE[0]


def _meta(point: Point, status: str, error: str) -> dict[str, Any]:
    return {"point_id": point.point_id, "status": status, "error": error,
            "trace": point.trace_model, "label": point.label}


def run_point(point: Point, cache_bytes: int | None = None) -> tuple[str, pd.DataFrame]:
    """Simulate one point; never raises for a bad point (the error is the result).

    Top-level so that spawned processes and Dask workers can import it. The trace is
    loaded (memory-mapped) in the worker and cached per process, and so is the work that
    does not depend on the config (:mod:`accelsim.model.reuse`), within ``cache_bytes``
    (default 256 MiB; 0 turns the cache off).
    """
    from accelsim.analysis.report import simulate, with_totals
    from accelsim.io.trace import load_trace
    from accelsim.model.area import area_of

    t0 = time.perf_counter()
    try:
        if point.error is not None:
            raise ConfigError(point.error)
        hw = build(HwConfig, point.raw, where=f"point {point.label}")
        key = str(point.trace)
        trace = _TRACES.get(key)
        if trace is None:
            trace = _TRACES[key] = load_trace(key)
        cache = _work_cache(cache_bytes) if cache_bytes != 0 else None
        df = with_totals(simulate(trace, hw, cache=cache))
        scope = ["layer"] * (len(df) - 1) + ["total"]
        area = area_of(hw)
        status, error = "ok", ""
    except Exception as e:  # noqa: BLE001 - failure isolation: record and go on
        msg = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, AccelsimError):
            msg = f"{type(e).__name__}: {msg}"
        df = pd.DataFrame({"layer": ["TOTAL"], "kind": ["total"]})
        scope = ["total"]
        hw, area, status, error = None, {}, "failed", msg
    sim_s = time.perf_counter() - t0
    df.attrs = {}
    front: dict[str, Any] = _meta(point, status, error)
    front.update(point.values)
    front.update(trace_path=str(point.trace), trace_id=point.trace_id,
                 config_hash=point.config_hash, hw_name=point.raw.get("name", ""),
                 swept=",".join(point.values), sim_s=sim_s, **area)
    # one table, built once: the metadata columns, then the simulation's, then the config
    n = len(df)
    front["scope"] = scope
    cols: dict[str, Any] = {k: front[k] if k == "scope" else [front[k]] * n
                            for k in META_COLUMNS}
    cols.update((k, [v] * n) for k, v in front.items() if k not in cols)
    cols.update((k, v) for k, v in df.items() if k not in cols)
    cols["hwconfig"] = [json.dumps(point.raw, sort_keys=True)] * n
    return point.point_id, pd.DataFrame(cols, index=df.index)


@dataclass
class Encoded:
    """One finished point as a worker hands it to the driver: what the driver reports
    and the bytes of its Parquet file, which the driver writes as they are."""

    point_id: str
    status: str
    error: str
    sim_s: float
    data: bytes
    #: the same rows as an Arrow table, kept by the driver for the next compaction
    table: Any = None


def _encode(point_id: str, frame: pd.DataFrame) -> Encoded:
    table, data = point_encode(frame)
    return Encoded(point_id, str(frame["status"].iloc[0]), str(frame["error"].iloc[0]),
                   float(frame["sim_s"].iloc[0]), data, table)


def run_points(points: list[Point], cache_bytes: int | None = None) -> list[Encoded]:
    """:func:`run_point` for each of ``points`` in turn, in one worker, each result
    encoded as its Parquet file's bytes."""
    return [_encode(*run_point(p, cache_bytes)) for p in points]


def _group_key(point: Point) -> tuple[str, str]:
    """Points with equal keys share the compute model's work: same trace, and configs
    that differ only outside the compute part (memory, energy, clock)."""
    from accelsim.model.reuse import NON_COMPUTE_KEYS

    raw = {k: v for k, v in point.raw.items() if k not in NON_COMPUTE_KEYS}
    return point.trace_id, json.dumps(raw, sort_keys=True, default=str)


def _chunks(points: list[Point], size: int) -> list[list[Point]]:
    """``points`` grouped by :func:`_group_key` (plan order otherwise) in chunks of at
    most ``size``."""
    order = sorted(range(len(points)), key=lambda i: (_group_key(points[i]), i))
    ordered = [points[i] for i in order]
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _quiet_worker(driver: int | None = None) -> None:  # pragma: no cover - in the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if driver is not None:
        import threading

        threading.Thread(target=_exit_with_driver, args=(driver,), daemon=True,
                         name="accelsim-driver-watch").start()


#: how often a pool worker checks that its driver is alive (seconds)
DRIVER_POLL_S = 0.5


def _exit_with_driver(driver: int) -> None:  # pragma: no cover - runs in the workers
    """Exit the worker when the driver process is gone (``kill -9`` of the driver leaves
    no worker behind): a worker is reparented when its parent dies."""
    while os.getppid() == driver:
        time.sleep(DRIVER_POLL_S)
    os._exit(1)


# ======================================================================= running

@dataclass
class SweepEvent:
    """Progress report passed to the ``progress`` callback of :func:`sweep`.

    ``kind`` is ``"start"`` (``total`` points to run, ``skipped`` already stored) or
    ``"point"`` (one point finished: ``status`` ok / failed, ``error``, ``label``)."""

    kind: str
    total: int = 0
    skipped: int = 0
    point_id: str = ""
    label: str = ""
    trace: str = ""
    status: str = ""
    error: str = ""


@dataclass
class SweepSummary:
    results_dir: Path
    grid_size: int
    configs: int
    dropped: int
    points: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    lost: int = 0          # worker died or was lost: not stored, rerun retries them
    wall_s: float = 0.0
    sim_s: float = 0.0     # sum of per-point simulate times, in the workers
    backend: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.ok + self.failed

    @property
    def per_point_s(self) -> float:
        """Wall time per point run (the throughput the backend achieved)."""
        return self.wall_s / self.ran if self.ran else 0.0


class _Inline:
    """Runs points in this process (``workers=1``): no pool, easy to debug."""

    name = "inline"
    window = 1

    def __init__(self, cache_bytes: int | None = None) -> None:
        self.cache_bytes = cache_bytes

    def submit(self, points: list[Point]) -> cf.Future:
        fut: cf.Future = cf.Future()
        fut.set_result(run_points(points, self.cache_bytes))
        return fut

    def wait_any(self, futs: list[Any]) -> list[Any]:
        return futs

    def close(self, cancel: bool = False) -> None:
        pass


class _Pool:
    name = "processes"

    def __init__(self, workers: int, cache_bytes: int | None = None) -> None:
        self.workers = workers
        self.window = 2 * workers
        self.cache_bytes = cache_bytes
        self._new()

    def _new(self) -> None:
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_quiet_worker, initargs=(os.getpid(),))

    def submit(self, points: list[Point]) -> cf.Future:
        try:
            return self.pool.submit(run_points, points, self.cache_bytes)
        except cf.process.BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._new()
            return self.pool.submit(run_points, points, self.cache_bytes)

    def wait_any(self, futs: list[Any]) -> list[Any]:
        done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Dask:
    def __init__(self, scheduler: str | None, local: int | None,
                 cache_bytes: int | None = None) -> None:
        self.cache_bytes = cache_bytes
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise AccelsimError("Dask is not installed: pip install 'accelsim[dask]'") \
                from None
        self.cluster = None
        if scheduler:
            self.name = f"dask {scheduler}"
            try:
                self.client = Client(scheduler, timeout="20s")
            except OSError as e:
                raise AccelsimError(f"--scheduler {scheduler}: cannot connect ({e})") \
                    from None
        else:
            self.name = f"dask LocalCluster({local})"
            # Dask's nannies set OMP_NUM_THREADS, PYTHONHASHSEED, ... in this process's
            # environment to hand them to their workers; close() gives the caller's back
            self._environ = dict(os.environ)
            self.cluster = LocalCluster(n_workers=local, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        threads = sum(self.client.nthreads().values()) or 1
        self.window = max(2 * threads, 4)

    def submit(self, points: list[Point]) -> Any:
        return self.client.submit(run_points, points, self.cache_bytes,
                                  key=f"accelsim-points-{points[0].point_id}-{len(points)}",
                                  pure=False)

    def wait_any(self, futs: list[Any]) -> list[Any]:
        from distributed import wait

        return list(wait(futs, return_when="FIRST_COMPLETED").done)

    def close(self, cancel: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            for key in set(os.environ) - set(self._environ):
                del os.environ[key]
            os.environ.update(self._environ)


def sweep(spec: SweepSpec | str | os.PathLike | Mapping[str, Any],
          results_dir: str | os.PathLike, *, workers: int | None = None,
          scheduler: str | None = None, dask_local: int | None = None,
          retry_failed: bool = False,
          progress: Callable[[SweepEvent], None] | None = None,
          cache_bytes: int | None = None, compact_every: int = 1000) -> SweepSummary:
    """Run a sweep into ``results_dir``; points already stored there are skipped.

    Backends: local processes (``workers``, default ``os.cpu_count()``; ``workers=1``
    runs in this process), an existing Dask cluster (``scheduler="tcp://host:8786"``)
    or a Dask ``LocalCluster`` of ``dask_local`` worker processes. A point that raises
    is stored with ``status="failed"`` and its error, and the sweep goes on;
    ``retry_failed=True`` runs stored failures again. ``progress`` receives
    :class:`SweepEvent` objects (the library itself never prints).

    Points go to workers in chunks of :data:`CHUNK`, grouped by trace and compute
    config, and each worker keeps config-independent work for later points
    (:mod:`accelsim.model.reuse`) within ``cache_bytes`` (default 256 MiB; 0: off).
    Each point is committed atomically as its own file; every ``compact_every`` points,
    and at the end of the run, waiting point files are compacted into a batch file
    (:func:`accelsim.analysis.sweep.store.compact`; ``compact_every=0``: never).
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if scheduler and dask_local:
        raise AccelsimError("choose either a Dask scheduler address or a LocalCluster size")
    if workers is not None and workers < 1:
        raise AccelsimError(f"workers: expected an integer >= 1, got {workers}")
    if cache_bytes is not None and cache_bytes < 0:
        raise AccelsimError(f"cache_bytes: expected an integer >= 0, got {cache_bytes}")
    if dask_local is not None and dask_local < 1:
        raise AccelsimError(f"dask_local: expected an integer >= 1, got {dask_local}")
    plan = plan_sweep(spec)
    out = Path(results_dir)
    points_dir = out / "points"
    try:
        points_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AccelsimError(f"{out}: cannot create results directory ({e})") from None
    _clean_stale(points_dir)
    _atomic_text(spec.text, out / "spec.yaml")
    if compact_every:
        compact(out)  # point files a killed run left behind

    stored = stored_points(out)
    todo, seen = [], set()
    for p in plan.points:
        if p.point_id in seen:  # two grid values resolving to one config
            continue
        seen.add(p.point_id)
        st = stored.get(p.point_id)
        if st is None or (retry_failed and st != "ok"):
            todo.append(p)
    summary = SweepSummary(results_dir=out, grid_size=spec.grid_size, configs=plan.configs,
                           dropped=plan.dropped, points=len(seen),
                           skipped=len(seen) - len(todo))
    emit = progress or (lambda ev: None)
    emit(SweepEvent("start", total=len(todo), skipped=summary.skipped))

    committed = [0]
    known: dict[str, Any] = {}  # tables of the point files written since a compaction

    def record(point: Point, enc: Encoded | None, exc: BaseException | None) -> None:
        if exc is not None:
            summary.lost += 1
            msg = f"worker lost ({type(exc).__name__}: {exc}); not stored, rerun to retry"
            summary.errors.append((f"{point.label} [{point.trace_model}]", msg))
            emit(SweepEvent("point", point_id=point.point_id, label=point.label,
                            trace=point.trace_model, status="lost", error=msg))
            return
        assert enc is not None
        path = points_dir / f"{point.point_id}.parquet"
        _atomic_bytes(enc.data, path)
        committed[0] += 1
        if compact_every:
            known[point.point_id] = (path, len(enc.data), enc.table)
            if committed[0] % compact_every == 0:
                compact(out, min_points=1, known=known)
                known.clear()
        status, error = enc.status, enc.error
        summary.sim_s += enc.sim_s
        if status == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            summary.errors.append((f"{point.label} [{point.trace_model}]", error))
        emit(SweepEvent("point", point_id=point.point_id, label=point.label,
                        trace=point.trace_model, status=status, error=error))

    # configs that do not resolve fail here, without a worker
    runnable = []
    for p in todo:
        if p.error is not None:
            record(p, _encode(*run_point(p)), None)
        else:
            runnable.append(p)
    if runnable:
        if scheduler or dask_local:
            backend: Any = _Dask(scheduler, dask_local, cache_bytes)
        elif (workers or os.cpu_count() or 1) == 1:
            backend = _Inline(cache_bytes)
        else:
            backend = _Pool(min(workers or os.cpu_count() or 1, len(runnable)), cache_bytes)
        summary.backend = backend.name
        pending: dict[Any, list[Point]] = {}
        queue = iter(_chunks(runnable, CHUNK))
        cancel = True
        try:
            while True:
                while len(pending) < backend.window:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending[backend.submit(nxt)] = nxt
                if not pending:
                    break
                for fut in backend.wait_any(list(pending)):
                    chunk = pending.pop(fut)
                    try:
                        results = fut.result()
                    except Exception as e:  # noqa: BLE001 - the worker, not the point
                        for point in chunk:
                            record(point, None, e)
                    else:
                        for point, enc in zip(chunk, results, strict=True):
                            record(point, enc, None)
            cancel = False
        finally:
            backend.close(cancel=cancel)
    if compact_every:
        compact(out, known=known)
    summary.wall_s = time.perf_counter() - t0
    return summary
