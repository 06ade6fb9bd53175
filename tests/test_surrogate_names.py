"""Issue 13: a lone surrogate in a layer or model name (``"\\udc80"``, e.g. from a
non-UTF-8 file name decoded with surrogateescape) crashes nothing: the library's
DataFrames, every output format and the terminal table carry it as a ``\\udc80``
escape; a trace cannot be written with it (its manifest could not be read back), and a
manifest spelling it out is refused with one line by the CLI."""

from __future__ import annotations

import numpy as np
import pytest

import accelsim
from accelsim.analysis.inspect import inspect_trace
from accelsim.analysis.output import read_table, write_result
from accelsim.cli.main import main
from accelsim.errors import TraceError, safe_text
from accelsim.io.trace import Trace, linear, write_trace

NAME = "bad\udc80name"
SHOWN = "bad\\udc80name"


def _trace() -> Trace:
    rng = np.random.default_rng(3)
    a = rng.integers(-2, 3, (4, 8)).astype(np.int8)
    w = rng.integers(-2, 3, (5, 8)).astype(np.int8)
    return Trace(model="m\udc80", layers=[linear(NAME, a, w), linear("ok", a, w)])


def test_safe_text_escapes_only_what_utf8_cannot_encode():
    assert safe_text(NAME) == SHOWN
    assert safe_text("µJ ok") == "µJ ok"


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
@pytest.mark.parametrize("what", ["simulate", "per_frame", "inspect"])
def test_api_results_with_a_surrogate_name_write_and_read_back(tmp_path, fmt, what):
    trace = _trace()
    if what == "inspect":
        df = inspect_trace(trace)
    else:
        df = accelsim.simulate(trace, accelsim.load_hwconfig("sparse_os_16x16"),
                               per_frame=what == "per_frame")
    assert df["layer"].iloc[0] == SHOWN
    out = write_result(df, tmp_path / f"r.{fmt}", prov={"trace": {"model": "m\udc80"}})
    back = read_table(out)
    assert back["layer"].tolist()[:2] == [SHOWN, "ok"]
    if what == "simulate":
        assert back["macs_performed"].tolist() == df["macs_performed"].tolist()


def test_table_and_totals_render_a_surrogate_name():
    from accelsim.analysis.columns import render

    df = accelsim.with_totals(accelsim.simulate(_trace(),
                                                accelsim.load_hwconfig("sparse_os_16x16")))
    text = render(df)
    text.encode("utf-8")  # no surrogate left in what reaches the terminal
    assert "bad\\" in text and "TOTAL" in text


def test_write_trace_refuses_a_name_it_could_not_read_back(tmp_path):
    with pytest.raises(TraceError, match=r"layer name .*lone surrogate") as e:
        write_trace(tmp_path / "t", _trace().layers, model="fine")
    assert "\n" not in str(e.value)
    str(e.value).encode("utf-8")
    with pytest.raises(TraceError, match=r"model name .*lone surrogate"):
        write_trace(tmp_path / "t", [_trace().layers[1]], model="m\udc80")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("cmd", [["simulate", "--hw", "sparse_os_16x16"], ["inspect"]])
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_cli_on_a_manifest_with_a_surrogate_escape_is_one_line(tmp_path, capsys, cmd, fmt):
    good = write_trace(tmp_path / "t", [_trace().layers[1]], model="fine")
    manifest = good / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("name: ok", 'name: "bad\\uDC80"'))
    rc = main([cmd[0], str(good), *cmd[1:], "-o", str(tmp_path / f"o.{fmt}")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("accelsim: error: ") and "\n" not in err
    assert "Traceback" not in err
    assert not (tmp_path / f"o.{fmt}").exists()


def test_cli_prints_a_surrogate_name_from_the_api_trace(monkeypatch, capsys, tmp_path):
    """The CLI's commands take a trace path; a Trace built in Python with a surrogate
    name reaches the terminal through the same table code, under the CLI's
    backslashreplace streams."""
    import accelsim.cli.main as cli

    trace = _trace()
    monkeypatch.setattr(cli, "load_trace", lambda *a, **k: trace, raising=False)
    import accelsim.io.trace as io_trace

    monkeypatch.setattr(io_trace, "load_trace", lambda *a, **k: trace)
    for args in (["simulate", "x", "--hw", "sparse_os_16x16", "-o", str(tmp_path / "o.csv")],
                 ["inspect", "x"]):
        rc = main(args)
        out = capsys.readouterr()
        assert rc == 0, out.err
    assert SHOWN in read_table(tmp_path / "o.csv")["layer"].tolist()
