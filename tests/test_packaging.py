"""The wheel's package list (pyproject.toml) covers the tree, and the configs resolve."""

from __future__ import annotations

import tomllib
from pathlib import Path

import setuptools

from foldnet.common.paths import config_dir

REPO = Path(__file__).resolve().parents[1]


def test_listed_packages_are_the_tree():
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = setuptools.find_namespace_packages(str(REPO), include=["foldnet", "foldnet.*"])
    found = [p for p in found if any((REPO / p.replace(".", "/")).glob("*.py"))]  # not data folders
    assert sorted(set(listed) - {"foldnet.configs"}) == sorted(found)


def test_config_dir_is_the_top_level_tree_in_a_checkout():
    assert Path(config_dir()) == REPO / "configs"
    assert (Path(config_dir()) / "train.yaml").is_file()
