"""Fast start: ``import accelsim`` and ``accelsim --help`` load no heavy dependency, and
the lazy public API still gives every name it gave before."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

import accelsim

HEAVY = ("numba", "pandas", "pyarrow", "matplotlib")

#: run in a fresh interpreter: which heavy modules are loaded after each step
PROBE = """
import json, sys
HEAVY = {heavy!r}
out = {{}}
import accelsim
out["import"] = [m for m in HEAVY if m in sys.modules]
from accelsim.cli.main import build_parser
for argv in (["--help"], ["simulate", "--help"], ["sweep", "--help"], ["list", "--help"],
             ["config", "show", "--help"], ["--version"]):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pass
out["help"] = [m for m in HEAVY if m in sys.modules]
accelsim.load_hwconfig("sparse_os_16x16")
out["load_hwconfig"] = [m for m in HEAVY if m in sys.modules]
accelsim.simulate
out["simulate"] = [m for m in HEAVY if m in sys.modules]
print(json.dumps(out))
"""


def _probe() -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_and_help_load_no_heavy_module():
    out = _probe()
    assert out["import"] == []
    assert out["help"] == []
    assert out["load_hwconfig"] == []  # a config is YAML and dataclasses only
    # and the probe can see a heavy import: the simulator itself needs numba and pandas
    assert {"numba", "pandas"} <= set(out["simulate"])


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_exit_zero_through_python_m(argv):
    proc = subprocess.run([sys.executable, "-m", "accelsim", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ("usage: accelsim" in proc.stdout) if argv == ["--help"] else \
        proc.stdout.strip() == f"accelsim {accelsim.__version__}"


def test_lazy_api_has_every_public_name():
    from accelsim import errors

    eager = {n for n in vars(errors) if n.endswith("Error") and n != "OutputError"}
    assert set(accelsim.__all__) == set(accelsim._LAZY) | eager
    assert set(accelsim.__all__) <= set(dir(accelsim))
    for name in accelsim.__all__:
        assert getattr(accelsim, name) is not None, name
    from accelsim.analysis import plot
    from accelsim.analysis.inspect import inspect_trace
    from accelsim.analysis.report import simulate

    assert accelsim.simulate is simulate and accelsim.inspect is inspect_trace
    assert accelsim.plot is plot
    with pytest.raises(AttributeError, match="no_such_name"):
        accelsim.no_such_name  # noqa: B018
