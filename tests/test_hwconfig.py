from pathlib import Path

import pytest

import accelsim
from accelsim.cli.main import main
from accelsim.errors import ConfigError
from accelsim.io.hwconfig import HWCONFIG_DIR, load_hwconfig, parse_override

SHIPPED = sorted(HWCONFIG_DIR.glob("*.yaml"))


def test_shipped_configs_exist():
    names = {p.stem for p in SHIPPED}
    assert {"dense_os_32x32", "cnvlutin_ws_16x16", "sparse_os_16x16",
            "gated_os_16x16"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    hw = load_hwconfig(path)
    assert hw.name == path.stem
    assert hw.array.rows >= 1 and hw.dataflow in ("os", "ws", "is")


def test_overrides_api_and_hash():
    hw = load_hwconfig(HWCONFIG_DIR / "sparse_os_16x16.yaml", {"array.rows": 32})
    assert hw.array.rows == 32 and hw.array.cols == 16
    base = load_hwconfig(HWCONFIG_DIR / "sparse_os_16x16.yaml")
    assert base.config_hash() != hw.config_hash()
    assert base.with_overrides({"array.rows": 32}).config_hash() == hw.config_hash()


def test_shipped_name_lookup():
    assert load_hwconfig("sparse_os_16x16").zero_policy == "skip_both"


def test_parse_override_types():
    assert parse_override("array.rows=32") == ("array.rows", 32)
    assert parse_override("zero_policy=skip_a") == ("zero_policy", "skip_a")
    assert parse_override("clock_ghz=1.5") == ("clock_ghz", 1.5)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("array.rows")


BAD = [
    ({"array.rows": 0}, "override array.rows: expected an integer >= 1 and <= 4096, got 0 "
                        "(on sparse_os_16x16.yaml)"),
    ({"array.rows": "8"}, "array.rows: expected an integer"),
    ({"array.rows": True}, "array.rows: expected an integer"),
    ({"array.bogus": 1}, "array.bogus: unknown key"),
    ({"dataflow": "rs"}, "dataflow: expected one of os, ws, is, got 'rs'"),
    ({"zero_policy": "skip"}, "zero_policy: expected one of none, gate, skip_a"),
    ({"clock_ghz": 0}, "clock_ghz: expected a number > 0"),
    ({"precision.a_bits": 0}, "precision.a_bits: expected an integer >= 1"),
    ({"array": 3}, "array: expected a mapping"),
    ({"toplevel_typo": 1}, "toplevel_typo: unknown key"),
]


@pytest.mark.parametrize("over,msg", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_one_line(over, msg):
    with pytest.raises(ConfigError) as ei:
        load_hwconfig(HWCONFIG_DIR / "sparse_os_16x16.yaml", over)
    text = str(ei.value)
    assert msg in text
    assert "\n" not in text


def test_an_error_in_the_file_is_still_blamed_on_the_file(tmp_path: Path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\narray: {rows: 0, cols: 4}\ndataflow: os\nzero_policy: none\n")
    with pytest.raises(ConfigError, match=r"^x.yaml: array.rows: expected an integer"):
        load_hwconfig(p, {"array.cols": 8})


def test_inf_reads_as_dot_inf_and_nan_is_refused_clearly():
    key = "memory.dram.bandwidth_bytes_per_cycle"
    for text in ("inf", "Inf", "+infinity", ".inf"):
        hw = load_hwconfig("sparse_os_16x16", dict([parse_override(f"{key}={text}")]))
        assert hw.memory.dram.bandwidth_bytes_per_cycle == float("inf"), text
    for text in ("nan", ".nan"):
        with pytest.raises(ConfigError, match=rf"override {key}: expected a number .*NaN"):
            load_hwconfig("sparse_os_16x16", dict([parse_override(f"{key}={text}")]))
    with pytest.raises(ConfigError, match="array.rows: expected an integer"):
        load_hwconfig("sparse_os_16x16", {"array.rows": "inf"})


def test_unknown_names_and_keys_get_a_suggestion():
    with pytest.raises(ConfigError, match=r"not found \(did you mean 'sparse_os_16x16'\?\)"):
        load_hwconfig("sparse_os_16x1")
    with pytest.raises(ConfigError, match=r"array.rowz: unknown key \(did you mean 'rows'\?\)"):
        load_hwconfig("sparse_os_16x16", {"array.rowz": 3})
    with pytest.raises(ConfigError) as ei:
        load_hwconfig("sparse_os_16x16", {"array.zzzzzz": 3})
    assert "did you mean" not in str(ei.value)


def test_missing_required_key(tmp_path: Path):
    p = tmp_path / "x.yaml"
    p.write_text("array: {rows: 4, cols: 4}\n")
    with pytest.raises(ConfigError, match=r"^x.yaml: dataflow: missing required key$"):
        load_hwconfig(p)


def test_invalid_yaml_and_empty(tmp_path: Path):
    p = tmp_path / "broken.yaml"
    p.write_text("array: {rows: 4,\n  cols: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: invalid YAML"):
        load_hwconfig(p)
    e = tmp_path / "empty.yaml"
    e.write_text("")
    with pytest.raises(ConfigError, match="empty.yaml: file is empty"):
        load_hwconfig(e)
    with pytest.raises(ConfigError, match="hardware config not found"):
        load_hwconfig(tmp_path / "nope.yaml")


def test_yaml_is_not_executed(tmp_path: Path):
    p = tmp_path / "evil.yaml"
    p.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_hwconfig(p)


def test_cli_bad_override_is_one_line(capsys, root):
    rc = main(["simulate", str(root / "traces/synthetic_tiny_cnn"), "--hw",
               str(HWCONFIG_DIR / "sparse_os_16x16.yaml"), "--set", "array.rows=0"])
    err = capsys.readouterr().err
    assert rc == 2
    # blamed on the --set argument as typed, not on the YAML file
    assert err.strip() == ("accelsim: error: --set array.rows=0: expected an integer >= 1 and "
                           "<= 4096, got 0 (on sparse_os_16x16.yaml)")


def test_cli_set_inf_is_accepted_and_nan_refused(capsys, root):
    argv = ["simulate", str(root / "traces/synthetic_tiny_cnn"), "--hw", "sparse_os_16x16",
            "--format", "csv", "--set"]
    assert main([*argv, "memory.dram.bandwidth_bytes_per_cycle=inf"]) == 0
    capsys.readouterr()
    assert main([*argv, "memory.glb.bandwidth_bytes_per_cycle=nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelsim: error: --set memory.glb.bandwidth_bytes_per_cycle=nan: "
                          "expected a number") and "NaN" in err and "\n" not in err


def test_public_api_names():
    for name in ("load_trace", "load_hwconfig", "simulate", "write_trace", "totals"):
        assert hasattr(accelsim, name)
