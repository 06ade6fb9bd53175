"""Shipped configs and energy tables are package data, found without a source checkout."""

import fnmatch
import importlib.resources
import tomllib

import pytest
from conftest import ROOT

import accelsim
from accelsim.errors import ConfigError
from accelsim.io.hwconfig import HWCONFIG_DIR, shipped_configs
from accelsim.model.energy import ENERGY_DIR, load_energy_table

PKG = ROOT / "accelsim"


def _package_data_globs():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return meta["tool"]["setuptools"]["package-data"]["accelsim"]


def test_config_dirs_live_inside_the_package():
    pkg = importlib.resources.files("accelsim")
    assert HWCONFIG_DIR == PKG / "hwconfigs" and (pkg / "hwconfigs").is_dir()
    assert ENERGY_DIR == HWCONFIG_DIR / "energy"
    assert [p.stem for p in shipped_configs()] == sorted(
        p.stem for p in (PKG / "hwconfigs").glob("*.yaml"))
    assert len(shipped_configs()) >= 5 and any(ENERGY_DIR.glob("*.yaml"))


def test_every_shipped_data_file_is_declared_as_package_data():
    globs = _package_data_globs()
    files = [p.relative_to(PKG).as_posix() for p in (PKG / "hwconfigs").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert files
    undeclared = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not undeclared, f"not in [tool.setuptools.package-data]: {undeclared}"


def test_repository_root_link_points_into_the_package():
    link = ROOT / "hwconfigs"
    assert link.is_symlink() and link.resolve() == HWCONFIG_DIR.resolve()


def test_shipped_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hw = accelsim.load_hwconfig("sparse_os_16x16")
    assert hw.name == "sparse_os_16x16"
    assert accelsim.load_hwconfig("sparse_os_16x16.yaml") == hw
    assert load_energy_table(hw.energy) == load_energy_table("45nm_horowitz.yaml")


def test_unknown_config_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="hardware config not found.*sparse_os_16x16"):
        accelsim.load_hwconfig("no_such_config")
    with pytest.raises(ConfigError, match="not found.*45nm_horowitz"):
        load_energy_table("no_such_table")


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "pytest" in ln and "pip install" in ln)
    return line.split("&&")[-1].strip()


def test_ci_runs_the_readme_test_command_and_the_wheel_smoke_test():
    run = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
           if ln.strip() and not ln.lstrip().startswith("#")]
    assert run[-1] == _readme_test_command() == "python -m pytest -q"
    assert ".ci/wheel-smoke" in run
    smoke = (ROOT / ".ci" / "wheel-smoke").read_text()
    assert "pip wheel --no-deps" in smoke and "-m venv" in smoke
    assert "--system-site-packages" not in smoke
    assert "simulate \"$checkout/traces/digits_cnn\" --hw sparse_os_16x16" in smoke


def test_torch_extra_is_a_lower_bound_and_ci_pins_the_cpu_build():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_req = meta["project"]["optional-dependencies"]["torch"]
    assert torch_req == ["torch>=2.3"]
    pins = [ln.strip() for ln in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert any(p.startswith("torch==") for p in pins)
    # every command that installs the torch extra uses the constraints file
    for path in (ROOT / "README.md", ROOT / ".ci" / "run"):
        for ln in path.read_text().splitlines():
            if "pip install" in ln and "torch" in ln.split("pip install", 1)[1].split("#")[0] \
                    and ".[" in ln:
                assert "-c .ci/constraints.txt" in ln, f"{path.name}: {ln.strip()}"
