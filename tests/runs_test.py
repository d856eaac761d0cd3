"""Results trace to one commit: sweep and pretrain refuse uncommitted code unless told.
The one lock of run, search and results directories."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
from unittest import mock

import pytest

from tftransfer import runs
from tftransfer.errors import UserError
from tests.helpers import REPO, run_cli


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed git checkout with a package file and a results file."""
    monkeypatch.delenv(runs.ALLOW_DIRTY_ENV, raising=False)
    (tmp_path / "tftransfer").mkdir()
    (tmp_path / "tftransfer" / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "rows.csv").write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    return tmp_path


def test_a_clean_checkout_and_changed_results_pass(checkout):
    (checkout / "results" / "rows.csv").write_text("a\n1\n")
    assert runs.uncommitted_code(checkout) == []
    runs.require_committed_code(root=checkout)


def test_changed_package_code_is_refused_naming_the_file(checkout):
    (checkout / "tftransfer" / "code.py").write_text("x = 2\n")
    assert runs.uncommitted_code(checkout) == ["tftransfer/code.py"]
    with pytest.raises(UserError, match=r"uncommitted changes \(tftransfer/code.py\).*--allow-dirty"):
        runs.require_committed_code(root=checkout)
    runs.require_committed_code(allow_dirty=True, root=checkout)


def test_the_environment_variable_allows_it_too(checkout, monkeypatch):
    (checkout / "tftransfer" / "code.py").write_text("x = 2\n")
    monkeypatch.setenv(runs.ALLOW_DIRTY_ENV, "1")
    runs.require_committed_code(root=checkout)


@pytest.mark.parametrize("command", [
    ("sweep", "--config", "tiny", "--results", "unused"),
    ("pretrain", "--out", "unused", "--epochs", "1")])
def test_sweep_and_pretrain_refuse_uncommitted_code_with_one_sentence(command, monkeypatch):
    monkeypatch.delenv(runs.ALLOW_DIRTY_ENV, raising=False)
    with mock.patch.object(runs, "uncommitted_code", return_value=["tftransfer/x.py"]):
        code, _, err = run_cli(*command)
    assert code == 2
    assert "uncommitted changes (tftransfer/x.py)" in err


def test_a_held_lock_is_refused_at_once_naming_its_holder(tmp_path):
    path = tmp_path / "run" / ".lock"
    with runs.locked(path):  # another process, as far as flock can tell: another open file
        with pytest.raises(UserError, match=rf"^busy: pid {os.getpid()} on "
                                            rf"{socket.gethostname()}$"):
            with runs.locked(path, busy=lambda holder: f"busy: {holder}"):
                pass
    with runs.locked(path, busy=lambda holder: "never refused"):  # released: taken at once
        pass


# The four slug functions that ``runs.slug`` replaced, verbatim: run directories (transfer
# and tune), report figures, influence files. Their names are committed (figures) or on
# users' disks (run directories a rerun resumes), so each variant must give the same names.
_OLD_SLUGS = {
    "run directory part": (
        lambda text: re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")[-60:],
        {"keep": ".+-", "max_chars": 60}),
    "report figure": (
        lambda name: re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "target",
        {"keep": "._-", "fallback": "target"}),
    "influence file": (
        lambda name: re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "model",
        {"fallback": "model"}),
}


def _committed_names() -> set[str]:
    """Targets and sources of every committed results CSV, and the committed models."""
    names = {path.name for path in (REPO / "saved_models").iterdir()}
    for path in (REPO / "results").rglob("*.csv"):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                names.update(row[key] for key in ("target", "source") if row.get(key))
    return names


_EDGE_NAMES = [
    "", "_", "__", "mnist", "fashion_mnist", "oxford_flowers102", "cifar10",
    "cifar10-resnet20-l2-eps0.5", "saved_models/cifar10-resnet20-natural/",
    "/data/my photos/", "runs/transfer/mnist__cifar10__n100__b0__s0", "a__b", "_a_", "a+b",
    "nat+robust", "robust (L2 eps 0.5)", "x" * 70, "y" * 59 + "/" + "z" * 10,
    "weird:name?*", "ümlaut", "a..b", "-lead", "a\nb", "natural_2"]


@pytest.mark.parametrize("variant", sorted(_OLD_SLUGS))
def test_one_slug_gives_every_old_variant_s_names(variant):
    old, options = _OLD_SLUGS[variant]
    names = sorted(_committed_names()) + _EDGE_NAMES
    assert len(names) > len(_EDGE_NAMES) + 5  # the committed names were read
    for name in names:
        assert runs.slug(name, **options) == old(name), (variant, name)


def test_slug_keeps_the_chosen_punctuation_and_never_a_separator_run():
    assert runs.slug("a  b//c") == "a_b_c"
    assert runs.slug("a__b", keep=".+-") == "a_b"  # a run-directory part holds no "__"
    assert runs.slug("a__b") == "a__b"
    assert runs.slug("a+b.c-d", keep="-") == "a_b_c-d"
    assert runs.slug("??", fallback="model") == "model"
    assert runs.slug(12.5) == "12.5"
    assert runs.slug("abcdef", max_chars=3) == "def"
    assert runs.slug("abcdef", max_chars=0, fallback="x") == "x"
