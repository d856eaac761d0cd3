"""Source names: one record type for local and published sources, source.json discovery, the
models-folder rule (a non-editable install too), the ``sources`` command, the default source
for a target and the offline sentence (no network: downloads are file:// URLs or refused)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path
from unittest import mock

import tensorflow as tf

from tests.helpers import REPO, SHARED_TFDS, make_image_folder, make_source, run_cli
from tftransfer import cli
from tftransfer.sources import hub
from tftransfer.sources import published
from tftransfer.sources import registry as sources
from tftransfer.errors import UserError


def write_source_json(directory: Path, **fields) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    record = {"arch": "resnet20", "attack": "l2", "eps": 0.5, "dataset": "cifar10",
              "image_size": 32, "description": "a test source",
              "metrics": {"clean_accuracy": 0.5}, "command": "python main.py pretrain ..."}
    record.update(fields)
    (directory / sources.SOURCE_FILE).write_text(json.dumps(record))
    return directory


class ModelsFolderCase(tf.test.TestCase):
    """A private models folder in $TFTRANSFER_MODELS and a private published cache."""

    def setUp(self):
        super().setUp()
        self.models = Path(self.get_temp_dir()) / "models"
        self.models.mkdir(exist_ok=True)
        self.cache = Path(self.get_temp_dir()) / "cache"
        patcher = mock.patch.dict(os.environ, {sources.MODELS_ENV: str(self.models),
                                               "TFTRANSFER_CACHE": str(self.cache)})
        patcher.start()
        self.addCleanup(patcher.stop)


class RecordTest(ModelsFolderCase):

    def test_local_and_published_sources_are_one_record_type_listed_together(self):
        listed = hub.catalogue()
        kinds = {source.name: source.published for source in listed}
        self.assertFalse(kinds[sources.DEFAULT_SOURCE])  # the checkout's, shipped
        self.assertTrue(kinds[sources.PHOTO_SOURCE])
        self.assertTrue(all(type(source) is sources.Source for source in listed))
        self.assertIs(type(published.get(sources.PHOTO_SOURCE)), sources.Source)

    def test_the_committed_sources_carry_their_measured_numbers_as_data(self):
        for name in ("cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"):
            self.assertTrue((REPO / "saved_models" / name / sources.SOURCE_FILE).is_file())
        source = hub.get("cifar10-resnet20-l2-eps0.5")
        self.assertEqual((source.attack, source.eps, source.clean_accuracy), ("l2", 0.5, 0.7939))
        self.assertIn("--attack l2 --eps 0.5", source.command)

    def test_a_new_folder_with_source_json_is_a_named_source(self):
        directory = make_source(write_source_json(self.models / "my-new-source", eps=0.75))
        self.assertIn("my-new-source", hub.names())
        source = hub.get("my-new-source")
        self.assertEqual((source.arch, source.attack, source.eps, source.clean_accuracy),
                         ("resnet20", "l2", 0.75, 0.5))
        self.assertEqual(hub.model_dir("my-new-source"), directory)

    def test_a_model_folder_without_source_json_is_read_from_its_config(self):
        make_source(self.models / "plain-model")
        source = hub.get("plain-model")
        self.assertEqual((source.arch, source.attack, source.image_size),
                         ("resnet20", "none", 32))
        self.assertEqual(hub.model_dir("plain-model"), self.models / "plain-model")

    def test_a_source_not_trained_yet_names_its_command(self):
        write_source_json(self.models / "in-training", command="python main.py pretrain --x")
        self.assertEqual(hub.describe(hub.get("in-training"))["on_disk"], "no (not trained yet)")
        with self.assertRaisesRegex(UserError, r"in-training.*create it with: python main.py "
                                               r"pretrain --x"):
            hub.model_dir("in-training")

    def test_a_bad_source_json_is_one_sentence_naming_the_file(self):
        write_source_json(self.models / "bad", colour="blue")
        with self.assertRaisesRegex(UserError, r"bad/source.json has unknown key 'colour'"):
            hub.get("bad")

    def test_the_first_models_folder_wins(self):
        write_source_json(self.models / sources.DEFAULT_SOURCE, eps=9.0)
        self.assertEqual(hub.get(sources.DEFAULT_SOURCE).eps, 9.0)


class PlantedModelTest(ModelsFolderCase):
    """A models folder earlier in the search order holding a shipped name (issue 33, item 10)."""

    def setUp(self):
        super().setUp()
        for name in ("_WARNED", "_PATH_SAID"):  # said once per process: fresh for each test
            patcher = mock.patch.object(hub, name, set())
            patcher.start()
            self.addCleanup(patcher.stop)
        self.addCleanup(os.chmod, self.models, 0o755)

    def plant(self, name=sources.DEFAULT_SOURCE, **fields) -> Path:
        directory = write_source_json(self.models / name, **fields)
        (directory / "model.keras").write_bytes(b"")  # on disk is all model_dir checks
        return directory

    def test_a_planted_default_source_says_its_path_and_the_other_folder(self):
        planted = self.plant(eps=0.0, attack="none")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            name = hub.default_source("cifar10", image_size=32)
            self.assertEqual(hub.model_dir(name), planted)
            hub.model_dir(name)  # said once, not on every resolution
        lines = err.getvalue().splitlines()
        self.assertNotIn("so the shipped", err.getvalue())
        self.assertIn(f"so the model at {planted}, not the shipped 32 px", lines[0])
        self.assertEqual(len(lines), 2, lines)
        self.assertIn(f"warning: source {name!r} is in 2 models folders ({self.models.resolve()}"
                      f", {sources.CHECKOUT_MODELS}); using {planted}", lines[1])

    def test_a_shipped_name_resolved_elsewhere_names_the_path(self):
        planted = self.plant()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            hub.model_dir(sources.DEFAULT_SOURCE)
        self.assertIn(f"source {sources.DEFAULT_SOURCE!r}: using the model at {planted}, not "
                      f"the package's own", err.getvalue())

    def test_the_shipped_model_itself_is_resolved_without_a_word(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            path = hub.model_dir(sources.DEFAULT_SOURCE)
        self.assertEqual((path.parent, err.getvalue()), (sources.CHECKOUT_MODELS, ""))

    def test_a_world_writable_models_folder_is_refused_unless_allowed(self):
        self.plant()
        os.chmod(self.models, 0o1777)  # a sticky bit does not stop a planted model
        with self.assertRaisesRegex(UserError, rf"models folder {self.models.resolve()} is "
                                               rf"writable by every user.*"
                                               rf"{sources.ALLOW_WRITABLE_ENV}=1"):
            hub.model_dir(sources.DEFAULT_SOURCE)
        code, _, err = run_cli("sources")
        self.assertEqual(code, 2)
        self.assertIn(sources.ALLOW_WRITABLE_ENV, err)
        with mock.patch.dict(os.environ, {sources.ALLOW_WRITABLE_ENV: "1"}):
            self.assertEqual(hub.model_dir(sources.DEFAULT_SOURCE).parent,
                             self.models.resolve())

    def test_sources_skips_an_unreadable_source_json_and_lists_the_rest(self):
        write_source_json(self.models / "good-one")
        (self.models / "broken").mkdir()
        (self.models / "broken" / sources.SOURCE_FILE).write_text("{not json")
        code, out, err = run_cli("sources", "--json")
        self.assertEqual(code, 0, err)
        names = [row["name"] for row in json.loads(out.splitlines()[-1])["sources"]]
        self.assertIn("good-one", names)
        self.assertIn(sources.DEFAULT_SOURCE, names)
        self.assertNotIn("broken", names)
        self.assertRegex(err, r"warning: skipped source 'broken': .*broken/source.json is not "
                              r"readable JSON")
        with self.assertRaisesRegex(UserError, "broken/source.json"):
            hub.get("broken")  # naming it still says what is wrong


class InstallTest(tf.test.TestCase):
    """A non-editable install: the package copied away from the checkout, run elsewhere."""

    def run_installed(self, cwd: Path, env_models: str | None) -> subprocess.CompletedProcess:
        site = Path(self.get_temp_dir()) / "site-packages"
        if not site.exists():
            shutil.copytree(REPO / "tftransfer", site / "tftransfer",
                            ignore=shutil.ignore_patterns("__pycache__"))
        env = {k: v for k, v in os.environ.items() if k != sources.MODELS_ENV}
        env["PYTHONPATH"] = str(site)
        if env_models:
            env[sources.MODELS_ENV] = env_models
        script = textwrap.dedent(f"""
            from tftransfer.sources import hub, registry as sources
            from tftransfer.errors import UserError
            assert sources.__file__.startswith({str(site)!r}), sources.__file__
            try:
                print("FOUND", hub.model_dir(sources.DEFAULT_SOURCE))
            except UserError as error:
                print("ERROR", error)
        """)
        return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)

    def test_a_non_editable_install_finds_or_explains_the_default_source(self):
        elsewhere = Path(self.get_temp_dir()) / "elsewhere"
        elsewhere.mkdir()
        lost = self.run_installed(elsewhere, None).stdout
        self.assertIn(f"ERROR The default source {sources.DEFAULT_SOURCE!r} is not in any "
                      f"models folder", lost)
        self.assertIn(f"put its model directory at saved_models/{sources.DEFAULT_SOURCE}/ in "
                      f"the current directory, or set {sources.MODELS_ENV}", lost)
        by_env = self.run_installed(elsewhere, str(REPO / "saved_models")).stdout
        self.assertIn(f"FOUND {REPO / 'saved_models' / sources.DEFAULT_SOURCE}", by_env)
        # A copy, never a link: the temp-dir cleanup would delete through a link.
        copied = elsewhere / "saved_models" / sources.DEFAULT_SOURCE
        copied.mkdir(parents=True)
        for name in ("model.keras", "config.json", sources.SOURCE_FILE):
            shutil.copy(REPO / "saved_models" / sources.DEFAULT_SOURCE / name, copied / name)
        by_cwd = self.run_installed(elsewhere, None).stdout
        self.assertIn(f"FOUND {copied}", by_cwd)


class SourcesCommandTest(ModelsFolderCase):

    def test_the_table_lists_local_and_published_names_with_their_facts(self):
        make_source(write_source_json(self.models / "my-new-source"))
        code, out, _ = run_cli("sources")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:5], ["name", "kind", "arch", "trained", "on"])
        rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
        self.assertRegex(rows["my-new-source"],
                         r"local +resnet20 +cifar10 32px +l2 +0.5 +50.0% +yes")
        self.assertRegex(rows[sources.PHOTO_SOURCE], r"published +resnet50 +imagenet 224px +l2 "
                                                     r"+3 +57.9% +no \(downloaded on first use\)")
        self.assertEqual(json.loads(lines[-1])["models_dirs"][0], str(self.models.resolve()))

    def test_json_has_every_field_and_says_what_is_cached(self):
        converted = self.cache / sources.PHOTO_SOURCE
        converted.mkdir(parents=True)
        (converted / "model.keras").write_bytes(b"")
        (converted / "config.json").write_text("{}")
        code, out, _ = run_cli("sources", "--json")
        self.assertEqual(code, 0)
        self.assertLen(out.splitlines(), 1)
        rows = {row["name"]: row for row in json.loads(out)["sources"]}
        photo = rows[sources.PHOTO_SOURCE]
        self.assertEqual((photo["kind"], photo["attack"], photo["eps"], photo["on_disk"],
                          photo["available"], photo["file_name"]),
                         ("published", "l2", 3.0, "cached", True, "imagenet_l2_3_0.pt"))
        self.assertEqual(rows[sources.DEFAULT_SOURCE]["clean_accuracy"], 0.7939)

    def test_transfer_help_points_to_it(self):
        code, out, _ = run_cli("transfer", "--help")
        self.assertEqual(code, 0)
        self.assertIn("main.py sources", " ".join(out.split()))


class DefaultSourceTest(ModelsFolderCase):

    def chosen(self, target, image_size=None):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            name = hub.default_source(target, str(SHARED_TFDS), image_size)
        return name, err.getvalue()

    def test_a_small_target_gets_the_shipped_32px_source_and_says_why(self):
        name, said = self.chosen("mnist")
        self.assertEqual(name, sources.DEFAULT_SOURCE)
        self.assertEqual(said, f"source: {sources.DEFAULT_SOURCE} (no --source given; mnist's "
                               f"images are 28 px (<= 64 px), so the shipped 32 px CIFAR-10 "
                               f"ResNet-20 (L2 eps 0.5); `python main.py sources` lists the "
                               f"others)\n")

    def test_a_photo_target_gets_the_imagenet_resnet50(self):
        name, said = self.chosen("oxford_flowers102")  # TFDS knows its shape, not prepared
        self.assertEqual(name, sources.PHOTO_SOURCE)
        self.assertIn("oxford_flowers102's images are of varying size (photo-sized, over 64 "
                      "px), so the paper's ImageNet ResNet-50 (L2 eps 3 at 224 px)", said)

    def test_image_folders_are_measured_and_image_size_decides_when_given(self):
        small = make_image_folder(Path(self.get_temp_dir()) / "small", size=(20, 24))
        large = make_image_folder(Path(self.get_temp_dir()) / "large", size=(150, 200))
        self.assertEqual(self.chosen(str(small))[0], sources.DEFAULT_SOURCE)
        self.assertIn("images are 200x150 px, all 12 files read", self.chosen(str(large))[1])
        self.assertEqual(self.chosen(str(large))[0], sources.PHOTO_SOURCE)
        self.assertEqual(self.chosen("mnist", image_size=224)[0], sources.PHOTO_SOURCE)

    def test_an_unknown_name_gets_the_cheap_default_and_the_loader_says_why(self):
        name, said = self.chosen("no_such_dataset")
        self.assertEqual(name, sources.DEFAULT_SOURCE)
        self.assertIn("no_such_dataset's image size cannot be read", said)
        with self.assertRaises(LookupError):
            hub.native_image_size("no_such_dataset", str(SHARED_TFDS))


class TransferDefaultTest(ModelsFolderCase):
    """``transfer`` without --source: the first stderr line names the choice and why."""

    def test_a_small_target_runs_on_the_shipped_source(self):
        folder = make_image_folder(Path(self.get_temp_dir()) / "small", size=(20, 24))
        code, out, err = run_cli("transfer", "--target", folder, "--epochs", "1",
                                 "--out", Path(self.get_temp_dir()) / "run")
        self.assertEqual(code, 0, err)
        self.assertEqual(err.splitlines()[0],
                         f"source: {sources.DEFAULT_SOURCE} (no --source given; {folder}'s "
                         f"images are 24x20 px, all 12 files read (<= 64 px), so the shipped "
                         f"32 px CIFAR-10 ResNet-20 (L2 eps 0.5); `python main.py sources` "
                         f"lists the others)")
        self.assertEqual(json.loads(out.splitlines()[-1])["source"], sources.DEFAULT_SOURCE)

    def test_offline_a_photo_target_stops_with_the_file_and_the_cache_directory(self):
        folder = make_image_folder(Path(self.get_temp_dir()) / "photos", size=(150, 200))
        with mock.patch("urllib.request.urlopen", side_effect=urllib.error.URLError("offline")):
            code, _, err = run_cli("transfer", "--target", folder,
                                   "--out", Path(self.get_temp_dir()) / "run")
        self.assertEqual(code, 2)
        lines = err.splitlines()
        self.assertTrue(lines[0].startswith(f"source: {sources.PHOTO_SOURCE} (no --source given; "
                                            f"{folder}'s images are 200x150 px"), lines[0])
        where = self.cache / sources.PHOTO_SOURCE
        self.assertTrue(lines[-1].startswith(f"error: Could not download source "
                                             f"{sources.PHOTO_SOURCE!r}"), lines[-1])
        self.assertIn(f"put the checkpoint file imagenet_l2_3_0.pt (from ", lines[-1])
        self.assertIn(f"into the cache directory {where}/", lines[-1])

    def test_quiet_says_nothing_about_the_choice_or_the_download(self):
        folder = make_image_folder(Path(self.get_temp_dir()) / "photos", size=(150, 200))
        with mock.patch("urllib.request.urlopen", side_effect=urllib.error.URLError("offline")):
            code, _, err = run_cli("transfer", "--target", folder, "--quiet",
                                   "--out", Path(self.get_temp_dir()) / "run")
        self.assertEqual(code, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)  # only the error sentence


    def test_tune_resolves_the_default_once_for_search_retrain_and_directory(self):
        from tftransfer.commands import tune as tune_command

        for size, expected in (((20, 24), sources.DEFAULT_SOURCE),
                               ((150, 200), sources.PHOTO_SOURCE)):
            folder = make_image_folder(Path(self.get_temp_dir()) / f"t{size[0]}", size=size)
            args = cli.build_parser().parse_args(["tune", "--target", str(folder),
                                                  "--train-images", "8", "--quiet"])
            cfg = tune_command.config_from_args(args)
            self.assertEqual(cfg.base.source, expected)
            self.assertIn(expected, cfg.directory)


class OfflineTest(ModelsFolderCase):

    def test_offline_a_photo_source_says_which_file_goes_where(self):
        entry = published.get(sources.PHOTO_SOURCE)
        with mock.patch("urllib.request.urlopen", side_effect=urllib.error.URLError("offline")), \
                contextlib.redirect_stderr(io.StringIO()):
            with self.assertRaises(UserError) as raised:
                hub.model_dir(sources.PHOTO_SOURCE)
        message = str(raised.exception)
        where = self.cache / sources.PHOTO_SOURCE
        self.assertEqual(message, (
            f"Could not download source {sources.PHOTO_SOURCE!r} "
            f"({entry.urls[0].split('?')[0]}: <urlopen error offline>); put the checkpoint "
            f"file imagenet_l2_3_0.pt (from {entry.urls[0]}) into the cache directory {where}/, "
            f"so that {where / 'imagenet_l2_3_0.pt'} exists (or set TFTRANSFER_CACHE to a "
            f"folder that holds {sources.PHOTO_SOURCE}/imagenet_l2_3_0.pt), and run the "
            f"command again."))

    def test_download_progress_counts_bytes_and_is_quiet_when_asked(self):
        payload = Path(self.get_temp_dir()) / "weights.pt"
        payload.write_bytes(os.urandom(3 << 20))
        entry = sources.Source(name="tiny", arch="resnet18", file_name="weights.pt",
                               urls=(payload.as_uri(),))
        for progress in (True, False):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                published.download(entry, progress=progress)
            published.checkpoint_path(entry).unlink()
            lines = err.getvalue().splitlines()
            if progress:
                self.assertIn("downloading tiny from", lines[0])
                self.assertEqual(lines[-1], "  weights.pt: 3.1 of 3.1 MB (100%)")
            else:
                self.assertEqual(lines, [])


if __name__ == "__main__":
    tf.test.main()
