"""Guards on the test suite itself: CI cannot pass by skipping the checks on the real annotation files, and every
registered method has the CPU-test size and the synthetic experiment that the parametrised checks need."""

from __future__ import annotations

from pathlib import Path

import pytest

import conftest
from conftest import PACKAGE_METHODS, TINY_DIR, tiny_config
from vtp_bench.config import list_experiments


def test_missing_annotations_skip_locally_and_fail_under_ci(monkeypatch):
    monkeypatch.setattr(conftest, "_annotation_candidates", lambda: [Path("/nonexistent/annotations")])
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        conftest.annotations_dir()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        conftest.annotations_dir()


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_every_method_has_a_test_size_and_a_synth_experiment(name):
    assert (TINY_DIR / f"{name}.yaml").is_file(), f"add experiments/tiny/{name}.yaml (the method's CPU-test size)"
    assert f"{name}_synth" in list_experiments(), f"add experiments/{name}_synth.yaml"
    assert tiny_config(name).method.name == name


def test_no_stray_test_sizes():
    stray = sorted(p.stem for p in TINY_DIR.glob("*.yaml") if p.stem not in PACKAGE_METHODS)
    assert not stray, f"experiments/tiny/ holds sizes of methods that are not registered: {stray}"


def test_test_sizes_ship_in_the_package_and_are_not_experiments():
    """``experiments/tiny`` is package data (the wheel has it: tests/test_install.py), a subfolder of the experiments,
    so ``vtp-bench list`` never offers a test size as an experiment."""
    import vtp_bench

    assert TINY_DIR.resolve().is_relative_to(Path(vtp_bench.__file__).resolve().parent)
    assert not {"tiny", *PACKAGE_METHODS} & set(list_experiments())


def test_the_repository_cites_only_what_it_holds():
    """Outside ``tests/`` (and the CI script), nothing cites the design notes and specs the project was built from
    (``specs/*.md``, ``DESIGN.md``, ``../shared``): a user of the repository does not have them."""
    import re

    root = Path(__file__).resolve().parents[1]
    cited = re.compile(r"specs/\w+\.md|DESIGN\.md|eval_protocols\.md|ecosystem\.md|\.\./shared")
    files = [root / "README.md", root / "Makefile", *(root / "data_manifests").rglob("*.md")]
    for folder in ("src", "docs", "scripts"):
        files += [p for p in (root / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml", ".yml", ".sbatch")
                  and "egg-info" not in str(p)]
    found = [f"{p.relative_to(root)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if cited.search(line)]
    assert not found, f"cites a file the repository does not hold: {found[:10]}"
