"""The Python examples in README.md and docs/trace-format.md run as written."""

import re

import pytest
from conftest import ROOT


def _blocks(path):
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


def _run(code, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = code.replace('"traces/my_net"', repr(str(tmp_path / "my_net")))
    code = code.replace('"/tmp/my_net"', repr(str(tmp_path / "my_net")))
    exec(compile(code, "<doc example>", "exec"), {})


def test_readme_api_example(tmp_path, monkeypatch):
    api = [b for b in _blocks("README.md") if "accelsim.load_trace" in b]
    assert api
    for code in api:
        _run(code, tmp_path, monkeypatch)


def test_readme_bring_your_own_network(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    byo = [b for b in _blocks("README.md") if "trace_torch" in b]
    assert len(byo) == 1
    _run(byo[0], tmp_path, monkeypatch)
    assert "cycles" in capsys.readouterr().out


def test_trace_format_example(tmp_path, monkeypatch):
    blocks = _blocks("docs/trace-format.md")
    assert blocks
    for code in blocks:
        _run(code, tmp_path, monkeypatch)
    import accelsim

    assert len(accelsim.load_trace(tmp_path / "my_net")) == 2
