"""Plots return labelled Axes; the CLI writes every kind of plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

import accelsim  # noqa: E402
from accelsim.cli.main import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plots")
    spec = {"base": "sparse_os_16x16",
            "traces": [str(ROOT / "traces" / "digits_cnn")],
            "grid": {"array.rows": [8, 16], "array.cols": [8, 16],
                     "zero_policy": ["none", "skip_a", "skip_both"]}}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp / "res"
    accelsim.sweep(path, out, workers=1)
    return out


def _labelled(ax) -> None:
    assert ax.get_xlabel() and ax.get_ylabel()
    assert ax.get_title()
    plt.close(ax.figure)


def test_plots_return_labelled_axes(results):
    df = accelsim.load_results(results)
    _labelled(accelsim.plot.pareto(df, color="zero_policy"))
    ax = accelsim.plot.pareto(df, x="area_mm2", y="latency_s")
    assert "mm²" in ax.get_xlabel() and "s)" in ax.get_ylabel()
    _labelled(ax)
    one = df[df.point_id == df.point_id.iloc[0]]
    ax = accelsim.plot.layer_cycles(one)
    assert len(ax.patches) == 2 * 5  # compute + stall per layer
    _labelled(ax)
    ax = accelsim.plot.energy_breakdown(one)
    assert "J)" in ax.get_ylabel()
    _labelled(ax)
    _labelled(accelsim.plot.heatmap(df, x="array.rows", y="array.cols", metric="energy_pj"))
    _labelled(accelsim.plot.density_speedup(df))
    tot = df[(df.scope == "total") & (df.status == "ok")]
    _labelled(accelsim.plot.energy_breakdown(tot, by="label"))


def test_plots_of_a_simulate_frame():
    df = accelsim.simulate(ROOT / "traces" / "synthetic_tiny_cnn", "sparse_os_16x16")
    _labelled(accelsim.plot.layer_cycles(df))
    _labelled(accelsim.plot.energy_breakdown(accelsim.with_totals(df)))


def test_layer_plots_refuse_many_points(results):
    df = accelsim.load_results(results)
    with pytest.raises(ValueError, match="select one point"):
        accelsim.plot.layer_cycles(df)


@pytest.mark.parametrize("kind", ["pareto", "cycles", "energy", "heatmap", "density"])
def test_cli_plot_writes_png(results, tmp_path, kind, capsys):
    out = tmp_path / f"{kind}.png"
    assert main(["plot", str(results), "--kind", kind, "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_cli_plot_errors(results, tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--kind", "pareto", "-o", "x.png"]) == 2
    assert "not a result store" in capsys.readouterr().err
    assert main(["plot", str(results), "--kind", "cycles", "--point", "zzz",
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "--point zzz: matches 0" in capsys.readouterr().err
    assert main(["plot", str(results), "--kind", "heatmap", "--metric", "nope",
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "plot --metric nope: unknown column" in capsys.readouterr().err
    assert main(["plot", str(results), "--kind", "pareto", "--y", "energy_p",
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "--y energy_p: unknown column (did you mean 'energy_pj'?)" in \
        capsys.readouterr().err
