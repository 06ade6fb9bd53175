"""The torch-side threshold helper zeroes exactly what the simulator counts as zero."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accelsim  # noqa: E402
from accelsim.errors import TraceError  # noqa: E402
from accelsim.model.threshold import apply_threshold, resolve_thresholds  # noqa: E402
from accelsim.tracing.thresholds import apply_thresholds, model_thresholds  # noqa: E402


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(),
                               torch.nn.Linear(32, 5)).eval()


@pytest.mark.parametrize("target", [0.0, 0.3, 0.6])
def test_model_sees_the_simulators_zeros(target):
    model = _model()
    x = torch.randn(40, 12)
    trace = accelsim.trace_torch(model, x, quantize="int8").trace
    resolved = resolve_thresholds(trace, None, {"2": {"target": target}})
    seen = {}
    with torch.no_grad(), apply_thresholds(model, model_thresholds(trace, resolved)):
        # registered after the threshold hook, so it sees the thresholded input
        h = model[2].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
        y_thr = model(x)
        h.remove()
    scale = trace["2"].quant_of("input").scale
    q = np.clip(np.rint(seen["x"].numpy().astype(np.float64) / scale), -127, 127)
    want = apply_threshold(np.asarray(trace["2"].a), resolved["2"].a)
    np.testing.assert_array_equal(q.astype(np.int8), want)
    with torch.no_grad():
        y = model(x)  # hooks are gone after the context
    if target == 0:
        assert torch.equal(y, y_thr)
    else:
        assert not torch.equal(y, y_thr)
    assert not model[2]._forward_pre_hooks


def test_unknown_module_is_an_error():
    with pytest.raises(TraceError, match="'fc9' is not a module of Sequential"), \
            apply_thresholds(_model(), {"fc9": 0.1}):
        pass
