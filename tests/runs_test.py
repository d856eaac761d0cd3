"""Results trace to one commit: sweep and pretrain refuse uncommitted code unless told.
The one lock of run, search and results directories."""

from __future__ import annotations

import os
import socket
import subprocess
from unittest import mock

import pytest

from tftransfer import runs
from tftransfer.errors import UserError
from tests.helpers import run_cli


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
