"""``accelsim list``, ``accelsim config show`` (it round-trips) and the "did you mean"
suggestions of the CLI's one-line errors."""

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from accelsim.cli import main
from accelsim.io.hwconfig import HWCONFIG_DIR, load_hwconfig, shipped_configs


def test_list_names_every_shipped_config_energy_table_and_trace(capsys, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checkout's traces/ are still found
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= 100
    names = {ln.split()[0] for ln in lines if ln.startswith("  ")}
    assert {p.stem for p in shipped_configs()} <= names
    assert {p.stem for p in (HWCONFIG_DIR / "energy").glob("*.yaml")} <= names
    assert {p.parent.name for p in (ROOT / "traces").glob("*/manifest.yaml")} <= names
    row = next(ln for ln in lines if ln.split()[:1] == ["sparse_os_16x16"])
    assert "output-stationary" in row  # its description, not a placeholder
    assert "(no description)" not in out
    assert any(ln.split()[:1] == ["moving_digits"] and "with frames" in ln for ln in lines)


def test_list_one_section_and_another_traces_dir(capsys, tmp_path):
    assert main(["list", "traces", "--traces", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"traces in {tmp_path}") and "sparse_os_16x16" not in out
    assert main(["list", "configs"]) == 0
    out = capsys.readouterr().out
    assert "sparse_os_16x16" in out and "traces" not in out.split("\n", 1)[1]


@pytest.mark.parametrize("name", [p.stem for p in shipped_configs()])
def test_config_show_round_trips(name, capsys):
    assert main(["config", "show", name]) == 0
    text = capsys.readouterr().out
    raw = yaml.safe_load(text)
    assert load_hwconfig(raw) == load_hwconfig(name)
    # every default filled in: as many keys as the resolved config has
    assert raw == load_hwconfig(name).to_dict()


def test_config_show_applies_set_and_round_trips_through_a_file(capsys, tmp_path):
    sets = ["array.rows=32", "memory.dram.bandwidth_bytes_per_cycle=inf",
            "zero_policy=gate"]
    argv = ["config", "show", "sparse_os_16x16"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    p = tmp_path / "resolved.yaml"
    p.write_text(capsys.readouterr().out)
    want = load_hwconfig("sparse_os_16x16", {"array.rows": 32, "zero_policy": "gate",
                                             "memory.dram.bandwidth_bytes_per_cycle":
                                                 float("inf")})
    assert load_hwconfig(p) == want and want.array.rows == 32


@pytest.mark.parametrize("argv,msg", [
    (["config", "show", "sparse_os_16x1"],
     "sparse_os_16x1: hardware config not found (did you mean 'sparse_os_16x16'?)"),
    (["config", "show", "sparse_os_16x16", "--set", "array.rowz=3"],
     "--set array.rowz=3: unknown key (did you mean 'rows'?)"),
    (["config", "show", "sparse_os_16x16", "--set", "zero_policy=skip"],
     "--set zero_policy=skip: expected one of none, gate"),
    (["simulate", str(ROOT / "traces/synthetic_tiny_cnn"), "--hw", "sparse_os_16x16",
      "--columns", "layer,cycels"], "--columns: unknown column 'cycels' (did you mean 'cycles'?)"),
])
def test_one_line_errors_with_suggestions(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"accelsim: error: {msg}") and err.count("\n") == 1


def test_plot_x_gets_a_suggestion(capsys, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["simulate", str(ROOT / "traces/synthetic_tiny_cnn"), "--hw",
                 "sparse_os_16x16", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["plot", str(out), "--x", "latncy_s", "-o", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("accelsim: error: plot --x latncy_s: unknown column (did you mean "
                          "'latency_s'?)") and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


def test_python_m_accelsim_runs_list():
    proc = subprocess.run([sys.executable, "-m", "accelsim", "list", "configs"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sparse_os_16x16" in proc.stdout


def test_precision_narrower_than_the_data_warns_naming_the_layer(root):
    import accelsim
    from accelsim.errors import PrecisionWarning

    trace = accelsim.load_trace(root / "traces/digits_cnn")
    with pytest.warns(PrecisionWarning, match=r"precision.a_bits=3 is narrower than the "
                                              r"8-bit 'input' values of layer conv1"):
        accelsim.simulate(trace, "sparse_os_16x16", {"precision.a_bits": 3})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)  # 8-bit config, 8-bit data: silent
        accelsim.simulate(trace, "sparse_os_16x16")


@pytest.mark.parametrize("argv,want", [
    (["--hw", "sparse_os_16x16", "--functional"],
     ["--functional: delta.enabled is false, so there is no delta path to check"]),
    (["--hw", "delta_ws_16x16"],
     ["delta.enabled: trace digits_cnn has no layer with frames, so delta processing does "
      "nothing"]),
    (["--hw", "delta_ws_16x16", "--functional"],
     ["delta.enabled: trace digits_cnn has no layer", "--functional: trace digits_cnn has "
      "no layer with frames"]),
    (["--hw", "sparse_os_16x16", "--set", "precision.a_bits=3"],
     ["digits_cnn: precision.a_bits=3 is narrower than the 8-bit 'input' values of layer "
      "conv1"]),
])
def test_cli_says_what_would_quietly_do_nothing(argv, want, capsys, root):
    assert main(["simulate", str(root / "traces/digits_cnn"), "--format", "csv", *argv]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(err) == len(want)
    for line, w in zip(err, want, strict=True):
        assert line.startswith(f"accelsim: warning: {w}")


def test_framed_trace_with_delta_gives_no_warning(capsys, root):
    assert main(["simulate", str(root / "traces/moving_digits"), "--hw", "delta_ws_16x16",
                 "--functional", "--format", "csv"]) == 0
    assert capsys.readouterr().err == ""
