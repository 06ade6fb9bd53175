"""`accelsim validate`: every published and analytic check passes, and the command's exit
code follows the checks."""

import json

import pytest
from conftest import ROOT

import accelsim
from accelsim.analysis import validate as v
from accelsim.cli import main
from accelsim.errors import ConfigError


@pytest.fixture(scope="module")
def table():
    return accelsim.validate(ROOT / "traces")


def test_every_check_passes(table):
    assert list(table.columns) == list(v.COLUMNS)
    assert list(table.check) == v.check_names()
    failed = table[table.status != "pass"]
    assert failed.empty, failed[["check", "accelsim_value", "detail"]].to_string()


def test_the_issue_checks_are_all_there(table):
    names = set(table.check)
    assert {"scalesim_dense_cycles", "nm_2to4_dense_acts_os", "nm_2to4_dense_acts_ws",
            "cnvlutin_brick_speedup", "cnvlutin_decoupled_overshoots",
            "sparten_greedy_balancing", "delta_linear_mac_reduction",
            "edgedrnn_weight_traffic", "cnvlutin_ws_total_speedup", "psum_cliff_gone",
            "timeloop_dram_accesses"} <= names
    assert sum(n.startswith("lockstep_os_skip_a_") for n in names) >= 2
    assert (table.source.str.len() > 20).all() and (table.source_value != "").all()


def test_scalesim_check_counts_every_golden_row(table):
    row = table.set_index("check").loc["scalesim_dense_cycles"]
    assert row.accelsim_value == "234/234 exact"


def test_missing_traces_skip_and_say_why(tmp_path):
    t = accelsim.validate(tmp_path, checks=["cnvlutin_brick_speedup", "sparten_greedy_balancing"])
    assert list(t.status) == ["skipped", "skipped"]
    assert t.detail.str.contains("not found").all()


def test_unknown_check_is_a_config_error():
    with pytest.raises(ConfigError, match="did you mean 'delta_linear_mac_reduction'"):
        accelsim.validate(checks=["delta_linear_mac_reductoin"])


def test_cli_exit_codes_follow_the_checks(monkeypatch, capsys, tmp_path):
    out = tmp_path / "v.json"
    assert main(["validate", "--check", "delta_linear_mac_reduction", "-o", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["status"] for r in rows] == ["pass"]
    assert "1 passed, 0 failed" in capsys.readouterr().out
    failing = v.Check("always_off", "a check whose model number misses its source", "1",
                      "exact", lambda _: v.Outcome("2", False, "2 != 1"))
    monkeypatch.setattr(v, "CHECKS", (failing,))
    assert main(["validate"]) == 1
    text = capsys.readouterr().out
    assert "always_off" in text and "fail" in text and "0 passed, 1 failed" in text
    assert main(["validate", "-o", str(tmp_path / "x.txt")]) == 2
