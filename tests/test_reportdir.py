"""``accelsim simulate --report-dir DIR``: the files, their provenance, SCALE-Sim's report
names, the checks before simulating, atomic replacement, and report.html in a real
headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import accelsim
from accelsim.analysis import reportdir as R
from accelsim.analysis.output import hash_path, read_table
from accelsim.cli.main import main
from accelsim.io.hwconfig import load_hwconfig

ROOT = Path(__file__).resolve().parent.parent
DIGITS = str(ROOT / "traces" / "digits_cnn")
HW = "sparse_os_16x16"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium")
                                        .exists() else None)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "digits_report"
    assert main(["simulate", DIGITS, "--hw", HW, "--report-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def expected() -> pd.DataFrame:
    return accelsim.with_totals(accelsim.simulate(DIGITS, HW))


def _scalesim(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, skipinitialspace=True)
    return df.loc[:, ~df.columns.str.startswith("Unnamed")]  # SCALE-Sim's trailing comma


def test_files_config_and_provenance(report):
    names = {p.name for p in report.iterdir()}
    assert names == {"report.html", "config.yaml", "provenance.json", "layers.csv",
                     "layers.parquet", "COMPUTE_REPORT.csv", "BANDWIDTH_REPORT.csv",
                     "layer_cycles.png", "energy_breakdown.png"}
    assert not [p for p in report.parent.iterdir() if "accelsim-tmp" in p.name]
    hw = load_hwconfig(HW)
    back = load_hwconfig(report / "config.yaml")
    assert back == hw and back.config_hash() == hw.config_hash()
    text = (report / "config.yaml").read_text()
    for key in ("macs_per_pe:", "fold_overlap:", "sync:", "kv_cache:", "threshold:"):
        assert key in text, key  # defaults written out, not left implicit
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["trace"]["path"] == DIGITS
    assert prov["trace"]["sha256"] == hash_path(DIGITS)
    assert prov["hw"]["name"] == HW and prov["hw"]["config_hash"] == hw.config_hash()
    assert prov["accelsim_version"] == accelsim.__version__
    assert prov["command"].startswith("accelsim simulate") and "--report-dir" in \
        prov["command"]
    assert prov["date"].endswith("+00:00") and prov["date"][:4].isdigit()
    assert set(prov["files"]) == names
    assert R.is_report_dir(report)


@pytest.mark.parametrize("name", ["layers.csv", "layers.parquet"])
def test_layers_files_carry_provenance_and_the_results(report, expected, name):
    df = read_table(report / name)
    assert list(df["layer"]) == list(expected["layer"]) and df["layer"].iloc[-1] == "TOTAL"
    for col in ("cycles", "macs_performed", "dram_bytes"):
        assert np.array_equal(df[col].to_numpy(dtype=float),
                              expected[col].to_numpy(dtype=float)), col
    assert np.allclose(df["energy_pj"].astype(float), expected["energy_pj"].astype(float))
    prov = df.attrs["provenance"]
    assert prov["hw"]["config_hash"] == load_hwconfig(HW).config_hash()
    assert prov["trace"]["sha256"] == hash_path(DIGITS)
    assert df.attrs["hwconfig"] == load_hwconfig(HW).to_dict()


@pytest.mark.parametrize("name", ["layers.csv", "layers.parquet"])
def test_reprice_and_plot_read_the_report(report, name, tmp_path, capsys):
    out = tmp_path / "repriced.csv"
    assert main(["reprice", str(report / name), "--energy", "45nm_horowitz", "-o",
                 str(out)]) == 0
    again = read_table(out)
    assert np.allclose(again["energy_pj"].astype(float),
                       read_table(report / name)["energy_pj"].astype(float))
    png = tmp_path / "cycles.png"
    assert main(["plot", str(report / name), "--kind", "cycles", "-o", str(png)]) == 0
    import matplotlib.image as mpimg

    assert mpimg.imread(png).shape[0] > 100
    capsys.readouterr()


def test_scalesim_reports_follow_scalesim_names_and_accelsim_values(report, expected):
    comp = _scalesim(report / "COMPUTE_REPORT.csv")
    bw = _scalesim(report / "BANDWIDTH_REPORT.csv")
    assert list(comp.columns) == R.COMPUTE_COLUMNS
    # digits_cnn's weights are bitmask-compressed: SCALE-Sim's sparse header
    assert list(bw.columns) == [*R.BANDWIDTH_COLUMNS[:3], R.FILTER_META_COLUMN,
                                *R.BANDWIDTH_COLUMNS[3:]]
    first = (report / "COMPUTE_REPORT.csv").read_text().splitlines()[0]
    assert first.startswith("LayerID, Total Cycles (incl. prefetch), ") and first[-1] == ","
    layers = expected.iloc[:-1].reset_index(drop=True)
    hw = load_hwconfig(HW)
    pes = hw.array.rows * hw.array.cols * hw.array.macs_per_pe
    assert list(comp["LayerID"]) == list(range(len(layers)))
    assert np.array_equal(comp["Total Cycles"], layers["cycles"].astype(int))
    assert np.array_equal(comp["Stall Cycles"], layers["stall_cycles"].astype(int))
    assert np.allclose(comp["Overall Util %"], 100 * layers["util"].astype(float))
    issued = (layers["macs_performed"] + layers["macs_gated"]).astype(float)
    assert np.allclose(comp["Compute Util %"],
                       100 * issued / (layers["compute_cycles"].astype(float) * pes))
    # os: M on the rows, N on the columns; mean fraction of PEs mapped per fold
    for i, row in layers.iterrows():
        m, n = int(row["m"]), int(row["n"])
        folds = math.ceil(m / hw.array.rows) * math.ceil(n / hw.array.cols)
        assert folds * int(row["gemms"]) == int(row["folds"])
        assert comp["Mapping Efficiency %"][i] == pytest.approx(
            100 * m * n / (folds * hw.array.rows * hw.array.cols))
    cyc = layers["cycles"].astype(float)
    assert np.allclose(bw["Avg IFMAP SRAM BW"], layers["glb_a_read_bytes"] / cyc)
    assert np.allclose(bw["Avg FILTER Metadata SRAM BW"],
                       layers["glb_w_read_meta_bytes"] / cyc)
    assert np.allclose(bw["Avg FILTER DRAM BW"],
                       (layers["dram_w_read_bytes"] + layers["dram_w_read_meta_bytes"]) / cyc)
    assert np.allclose(bw["Avg OFMAP DRAM BW"],
                       (layers["dram_out_write_bytes"] + layers["dram_psum_write_bytes"]) / cyc)


def test_scalesim_reports_on_a_dense_ws_layer(tmp_path):
    """A dense layer: Overall Util = dense MACs / (cycles x PEs) as SCALE-Sim defines it,
    no metadata column, and ws maps K on the rows and N on the columns."""
    from conftest import hw_dict

    from accelsim.io.trace import linear, write_trace

    rng = np.random.default_rng(0)
    x = rng.integers(1, 5, size=(1, 37)).astype(np.int8)      # M 1, K 37
    w = rng.integers(1, 5, size=(9, 37)).astype(np.int8)      # N 9 (out x in)
    trace = write_trace(tmp_path / "dense", [linear("fc", x, w)])
    hw = load_hwconfig(hw_dict(rows=4, cols=4, dataflow="ws", policy="none"))
    full = accelsim.with_totals(accelsim.simulate(trace, hw))
    comp, bw = R.scalesim_reports(full, hw)
    assert R.FILTER_META_COLUMN not in bw.columns
    row = full.iloc[0]
    assert comp["Overall Util %"][0] == pytest.approx(
        100 * row["macs_dense"] / (row["cycles"] * 16))
    assert comp["Mapping Efficiency %"][0] == pytest.approx(100 * 37 * 9 / (10 * 3 * 16))


def _no_simulation(monkeypatch):
    import accelsim.analysis.report as report

    def boom(*a, **k):
        raise AssertionError("simulated before checking --report-dir")

    monkeypatch.setattr(report, "simulate", boom)


@pytest.mark.parametrize("case,msg", [
    ("notreport", "is not an accelsim report"),
    ("file", "is not a directory"),
    ("earlier", "holds an earlier report; give --force"),
    ("noparent", "does not exist"),
    ("perframe", "not with --per-frame"),
    ("forcealone", "--force: only with --report-dir"),
])
def test_report_dir_is_checked_before_the_simulation(case, msg, tmp_path, capsys,
                                                     monkeypatch):
    target = tmp_path / "rep"
    extra: list[str] = ["--report-dir", str(target)]
    if case == "notreport":
        target.mkdir()
        (target / "mine.txt").write_text("keep me")
    elif case == "file":
        target.write_text("a file")
    elif case == "earlier":
        target.mkdir()
        (target / R.MARKER).write_text(json.dumps({"report": "accelsim report directory"}))
    elif case == "noparent":
        extra = ["--report-dir", str(tmp_path / "no" / "rep")]
    elif case == "perframe":
        extra.append("--per-frame")
    elif case == "forcealone":
        extra = ["--force"]
    _no_simulation(monkeypatch)
    assert main(["simulate", DIGITS, "--hw", HW, *extra]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if case == "notreport":
        assert (target / "mine.txt").read_text() == "keep me"


def test_force_replaces_an_earlier_report_atomically(report, tmp_path, monkeypatch,
                                                     capsys):
    target = tmp_path / "rep"
    shutil.copytree(report, target)
    (target / "stale.txt").write_text("from before")
    before = (target / "provenance.json").read_text()
    full = read_table(report / "layers.parquet")
    hw = load_hwconfig(HW)
    prov = json.loads(before)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R, "report_html", broken)
    with pytest.raises(accelsim.errors.OutputError, match="No space left"):
        R.write_report_dir(target, full, hw, prov, force=True)
    assert (target / "provenance.json").read_text() == before  # untouched
    assert (target / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if "accelsim-" in p.name]
    monkeypatch.undo()
    assert main(["simulate", DIGITS, "--hw", HW, "--report-dir", str(target),
                 "--force"]) == 0
    assert not (target / "stale.txt").exists() and R.is_report_dir(target)
    assert "--force" in json.loads((target / "provenance.json").read_text())["command"]
    capsys.readouterr()


def _chromium(args: list[str], tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp}", *extra, *args],
        capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                                             "chromium; .ci/run does it)")
def test_report_html_in_headless_chromium(report, tmp_path):
    import matplotlib.image as mpimg

    url = (report / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url],
                    tmp_path / "ud1", "--enable-logging=stderr", "--v=0")
    assert shot.exists(), res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no JavaScript errors or console messages
    img = mpimg.imread(shot)
    assert img.shape[:2] == (2000, 1280)
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 500, len(colours)  # text, table and the two plots' colours
    # the plots' blue bars (matplotlib tab:blue, #1f77b4) are on the page
    blue = np.all(np.abs(rgb.astype(int) - [31, 119, 180]) <= 3, axis=1)
    assert blue.sum() > 5000, blue.sum()
    dom = _chromium(["--dump-dom", url], tmp_path / "ud2").stdout
    assert 'data-images-loaded="2/2"' in dom  # every <img> decoded (set on load)
    assert dom.count("<img") == 2 and 'id="layers"' in dom and 'id="provenance"' in dom
    layers = read_table(report / "layers.csv")["layer"]
    for name in layers:
        assert f"<td class=\"t\">{name}</td>" in dom or f"<td class=t>{name}</td>" in dom
    assert hash_path(DIGITS) in dom


def test_compute_report_matches_scalesims_own_runs(tmp_path, capsys):
    """SCALE-Sim 3.0.0's COMPUTE_REPORT of examples/scalesim/vit_s_block.csv on
    scale_os_32x32.cfg (tests/golden/scalesim_examples.csv): our Total Cycles are its + 1
    (it writes the last cycle's index), Overall Util is its dense-MAC formula, Mapping
    Efficiency its mean fraction of PEs mapped per fold."""
    ex = ROOT / "examples" / "scalesim"
    out = tmp_path / "vit"
    assert main(["simulate", "--scalesim-cfg", str(ex / "scale_os_32x32.cfg"), "--topology",
                 str(ex / "vit_s_block.csv"), "--report-dir", str(out)]) == 0
    capsys.readouterr()
    comp = _scalesim(out / "COMPUTE_REPORT.csv")
    golden = pd.read_csv(ROOT / "tests" / "golden" / "scalesim_examples.csv")
    golden = golden[golden["topology"] == "vit_s_block.csv"].reset_index(drop=True)
    topo = pd.read_csv(ex / "vit_s_block.csv", skipinitialspace=True)
    assert len(comp) == len(golden) == len(topo) == 5
    assert list(comp["Total Cycles"]) == list(golden["scalesim_total_cycles"] + 1)
    assert (comp["Stall Cycles"] == 0).all()  # CALC mode: no stalls
    m, n, k = topo["M"], topo["N"], topo["K"]
    assert np.allclose(comp["Overall Util %"],
                       100 * m * n * k / (comp["Total Cycles"] * 32 * 32))
    folds = np.ceil(m / 32) * np.ceil(n / 32)
    assert np.allclose(comp["Mapping Efficiency %"], 100 * m * n / (folds * 32 * 32))


def test_config_yaml_round_trips_every_shipped_config(tmp_path):
    from accelsim.io.hwconfig import hwconfig_to_yaml, shipped_configs

    configs = shipped_configs()
    assert configs
    for path in configs:
        for overrides in ({}, {"memory.dram.bandwidth_bytes_per_cycle": float("inf"),
                               "array.rows": 7}):
            hw = load_hwconfig(path, overrides)
            f = tmp_path / f"{path.stem}.yaml"
            f.write_text(hwconfig_to_yaml(hw))
            back = load_hwconfig(f)
            assert back == hw and back.config_hash() == hw.config_hash(), path.stem
