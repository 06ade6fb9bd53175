"""Apply activation thresholds inside a PyTorch model, to measure what they cost in
accuracy or perplexity (``docs/thresholds.md``).

The simulator thresholds the stored operands of a trace; :func:`apply_thresholds` makes
the model itself see the same zeros: a forward pre-hook on each named module sets the
elements of its first input with ``|x| < t`` to zero while the context is open. With
:func:`model_thresholds`, ``t`` comes from the thresholds the simulator resolved, so an
element the model zeroes is exactly one whose int8 value the simulator counts as zero.

torch is imported only when a hook is installed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from accelsim.errors import TraceError
from accelsim.io.trace import Trace


def model_thresholds(trace: Trace, resolved: Mapping) -> dict[str, float]:
    """Real-unit thresholds per *module* of the traced model, from the per-layer
    thresholds of :func:`accelsim.model.threshold.resolve_thresholds`.

    A layer's module is its ``meta["module"]`` (what :func:`~accelsim.trace_torch`
    records) or else its name. Where several layers come from one module (repeated
    calls, e.g. prefill and decode steps), the first layer's threshold is used."""
    from accelsim.model.threshold import real_thresholds

    real = real_thresholds(trace, resolved)
    out: dict[str, float] = {}
    for layer in trace.layers:
        if layer.name in real:
            out.setdefault(str(layer.meta.get("module", layer.name)), real[layer.name])
    return out


@contextmanager
def apply_thresholds(model, thresholds: Mapping[str, float]) -> Iterator[None]:
    """While open, the modules named in ``thresholds`` (names as in
    ``model.named_modules()``) see their first input with ``|x| < t`` set to zero.

    A threshold of 0 leaves its module alone. Raises :class:`TraceError` for a name that
    is not a module of ``model``."""
    import torch

    mods = dict(model.named_modules())
    for name, t in thresholds.items():
        if name not in mods:
            raise TraceError(f"apply_thresholds: {name!r} is not a module of "
                             f"{type(model).__name__}")
        if not t >= 0:
            raise TraceError(f"apply_thresholds: {name!r}: expected a threshold >= 0, got "
                             f"{t!r}")

    def hook_for(t: float):
        def hook(mod, args):
            x = args[0]
            return (torch.where(x.abs() < t, torch.zeros((), dtype=x.dtype), x),
                    *args[1:])
        return hook

    handles = [mods[name].register_forward_pre_hook(hook_for(float(t)))
               for name, t in thresholds.items() if t > 0]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["apply_thresholds", "model_thresholds"]
