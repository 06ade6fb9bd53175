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
