"""``--precision auto`` and the GPU install (issue 35): auto resolves to float32 on a CPU and to
mixed_float16 when TensorFlow reports a GPU (mocked), says which on stderr, and runs record the
resolved value; explicit values are unchanged; a sweep's rows recorded before auto keep their
fingerprint. setup.cfg's TensorFlow extras, and the sentence an install without TensorFlow
gets at import."""

from __future__ import annotations

import configparser
import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import keras
import pytest
import tensorflow as tf

import tftransfer
from tftransfer import config
from tftransfer.cli import build_parser
from tftransfer.sweeps import fingerprint as fingerprints
from tftransfer.training import runtime
from tests import helpers

REPO = Path(__file__).resolve().parents[1]
ONE_GPU = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]


@pytest.fixture(autouse=True)
def _fresh_announcement(monkeypatch):
    """Each test sees auto's stderr line again (it is said once per process and value)."""
    monkeypatch.setattr(runtime, "_said_auto", None)


def _with_gpus(devices):
    """tf.config.list_physical_devices reporting ``devices`` as the GPUs."""
    real = tf.config.list_physical_devices

    def listed(device_type=None):
        return list(devices) if device_type == "GPU" else real(device_type)

    return mock.patch.object(tf.config, "list_physical_devices", side_effect=listed)


# ----------------------------------------------------------------------------- resolving

def test_auto_is_float32_on_this_cpu_and_says_so(capsys):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert runtime.resolve_precision("auto") == "float32"
    assert capsys.readouterr().err == "precision: float32 (auto: no GPU)\n"


def test_auto_is_mixed_float16_when_a_gpu_is_reported(capsys):
    with _with_gpus(ONE_GPU):
        assert runtime.resolve_precision("auto") == "mixed_float16"
    assert capsys.readouterr().err == "precision: mixed_float16 (auto: 1 GPU)\n"


def test_auto_is_said_once_per_process(capsys):
    with _with_gpus([]):
        assert [runtime.resolve_precision("auto") for _ in range(3)] == ["float32"] * 3
    assert capsys.readouterr().err.count("precision:") == 1


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_explicit_values_are_unchanged_and_silent(precision, capsys):
    with _with_gpus(ONE_GPU):
        assert runtime.resolve_precision(precision) == precision
        cfg = config.TransferConfig(target="mnist", precision=precision)
        assert runtime.with_resolved_precision(cfg) is cfg
    assert capsys.readouterr().err == ""


def test_set_precision_auto_sets_the_resolved_policy():
    with _with_gpus(ONE_GPU), runtime.precision_policy("auto"):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    with _with_gpus([]), runtime.precision_policy("auto"):
        assert keras.mixed_precision.global_policy().name == "float32"


def test_auto_is_the_default_of_every_config_and_command():
    assert config.TransferConfig.precision == config.PretrainConfig.precision == "auto"
    parser = build_parser()
    for argv in (["transfer", "--target", "mnist"], ["pretrain", "--out", "x"],
                 ["tune", "--target", "mnist", "--train-images", "100"]):
        assert parser.parse_args(argv).precision == "auto", argv
    args = parser.parse_args(["transfer", "--target", "mnist", "--precision", "float32"])
    assert args.precision == "float32"


def test_configs_resolve_auto_to_what_the_run_records():
    with _with_gpus(ONE_GPU):
        cfg = runtime.with_resolved_precision(config.PretrainConfig(out="x"))
    assert cfg.precision == "mixed_float16"
    with _with_gpus([]):
        cfg = runtime.with_resolved_precision(config.TransferConfig(target="mnist"))
    assert cfg.precision == "float32"


def test_a_run_records_the_resolved_precision(tmp_path, capsys, monkeypatch):
    folder = helpers.make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=4,
                                       split=True)
    source = helpers.make_source(tmp_path / "src", num_classes=3)
    cfg = config.TransferConfig(target=str(folder), source=str(source),
                                out=str(tmp_path / "run"), epochs=1)
    assert cfg.precision == "auto"
    with _with_gpus([]):
        from tftransfer import finetune

        monkeypatch.setattr(runtime, "_said_auto", None)  # said once per process
        result = finetune.fine_tune(cfg, save_model=True, verbose=True)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["resolved_config"]["precision"] == "float32"
    assert "precision" not in result  # float32, the replication's rows' precision
    err = capsys.readouterr().err
    assert "precision: float32 (auto: no GPU)" in err
    assert not err.startswith("precision:")  # the run's own first line comes first
    # The same configuration (auto) again finds its finished run equal, not another one.
    with _with_gpus([]):
        again = finetune.fine_tune(cfg, save_model=True, verbose=False,
                                   existing_run="refuse", checkpoint=True)
    assert again["test_accuracy"] == result["test_accuracy"]
    assert "precision:" not in capsys.readouterr().err  # quiet, and said once already


def test_the_result_row_names_a_precision_other_than_float32():
    from tftransfer.finetune.result import protocol_columns

    with _with_gpus(ONE_GPU):
        cfg = runtime.with_resolved_precision(config.TransferConfig(target="mnist"))
    assert protocol_columns(cfg) == {"precision": "mixed_float16"}
    assert protocol_columns(dataclasses.replace(cfg, precision="float32")) == {}


# ----------------------------------------------------------------------------- sweeps

def test_rows_recorded_before_auto_keep_their_fingerprint_on_a_cpu():
    cfg = config.TransferConfig(target="mnist", source="s", unfrozen_blocks=3, epochs=10)
    before = fingerprints.fingerprint(dataclasses.replace(cfg, precision="float32"))
    with _with_gpus([]):
        now = fingerprints.fingerprint(cfg)
    assert now == before and "precision" not in now.fields


def test_on_a_gpu_auto_is_a_setting_of_its_own():
    cfg = config.TransferConfig(target="mnist", source="s", unfrozen_blocks=3, epochs=10)
    before = fingerprints.fingerprint(dataclasses.replace(cfg, precision="float32"))
    with _with_gpus(ONE_GPU):
        now = fingerprints.fingerprint(cfg)
        explicit = fingerprints.fingerprint(dataclasses.replace(cfg, precision="float32"))
    assert now.fields["precision"] == "mixed_float16" and now.hash != before.hash
    assert explicit == before
    assert fingerprints.differences(before.fields, now.fields) == [
        "precision ('float32' there, 'mixed_float16' here)"]


# ----------------------------------------------------------------------------- install

def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def _requirements(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_tensorflow_comes_from_exactly_one_extra():
    setup = _setup_cfg()
    base = _requirements(setup["options"]["install_requires"])
    assert not [r for r in base if r.split("=")[0].split("[")[0].strip() in
                ("tensorflow", "tensorflow-cpu")], base
    extras = setup["options.extras_require"]
    assert _requirements(extras["cpu"]) == ["tensorflow-cpu==2.21.*"]
    assert _requirements(extras["gpu"]) == ["tensorflow[and-cuda]==2.21.*"]


def test_readme_commands_install_the_cpu_extra():
    first, second = (REPO / "README.md").read_text().splitlines()[1:3]
    assert 'pip install -e ".[cpu,dev]"' in first
    assert 'pip install -e ".[cpu,dev,torch]"' in second and "pytest" in second


def test_an_install_without_tensorflow_stops_with_one_sentence():
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None; "
                           "import tftransfer"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ModuleNotFoundError: {tftransfer.MISSING_TENSORFLOW}")


def test_both_tensorflow_distributions_installed_warns():
    with mock.patch("importlib.metadata.version", return_value="2.21.0"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tftransfer._check_tensorflow()
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    assert "tensorflow 2.21.0 and tensorflow-cpu 2.21.0" in str(caught[0].message)
    with mock.patch("importlib.metadata.version", side_effect=["2.21.0", _missing()]), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tftransfer._check_tensorflow()
    assert not caught


def _missing():
    import importlib.metadata

    return importlib.metadata.PackageNotFoundError("tensorflow-cpu")
