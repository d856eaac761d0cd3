"""The example of docs/python-api.md runs as written: its one ``python`` block under
"## Example" fine-tunes a registered source on 100 MNIST images for one epoch."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, SHARED_TFDS

DOC = REPO / "docs" / "python-api.md"


def example_code(text: str) -> str:
    """The one ``python`` block of the "## Example" section (up to the next ``## `` heading)."""
    section = text[text.index("\n## Example\n"):]
    following = re.search(r"\n## ", section[1:])
    section = section[:following.start() + 1] if following else section
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"the Example section has {len(blocks)} python blocks, not 1"
    return blocks[0]


def test_example_code_finds_the_one_block():
    text = ("# t\n## Example\nintro\n```python\nx = 1\n```\n```bash\nls\n```\n"
            "## Next\n```python\ny = 2\n```\n")
    assert example_code(text) == "x = 1\n"


def test_the_example_runs(tmp_path, monkeypatch, capsys):
    if not os.environ.get("TFDS_DATA_DIR"):
        monkeypatch.setenv("TFDS_DATA_DIR", str(SHARED_TFDS))
    if not (Path(os.environ["TFDS_DATA_DIR"]) / "mnist").is_dir():
        pytest.skip(f"MNIST is not prepared in {os.environ['TFDS_DATA_DIR']}")
    # The example's run directory (tempfile.mkdtemp) lands in this test's folder.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {"__name__": "__docs_example__"}
    exec(compile(example_code(DOC.read_text()), str(DOC), "exec"), namespace)

    row = namespace["row"]
    run_dir = Path(row["run_dir"])
    assert run_dir.parent == tmp_path
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert (row["train_images"], row["test_images"], row["epochs"]) == (100, 200, 1)
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] == pytest.approx(
        row["test_accuracy"])
    assert namespace["model"].output_shape == (None, 10)
    printed = capsys.readouterr().out
    assert "(None, 32, 32, 3)" in printed and "(None, 10)" in printed
