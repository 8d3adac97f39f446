"""`metarecipe prepare-data` and `validate-data-dir` as processes, and a corpus plug-in from another package."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import soundfile
from test_commonvoice import make_release


def metarecipe(*args, env=None):
    return subprocess.run([sys.executable, "-m", "metarecipe", *map(str, args)], capture_output=True, text=True,
                          env=env)


def test_prepare_then_validate_common_voice(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0")
    prepared = metarecipe("prepare-data", "commonvoice", root, tmp_path / "data", "--langs", "de")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert "data/de/train" in prepared.stdout and "skipped" in prepared.stdout
    dirs = [tmp_path / "data" / "de" / split for split in ("train", "dev", "test")]
    checked = metarecipe("validate-data-dir", *dirs)
    assert checked.returncode == 0 and checked.stdout.count(": OK (") == 3, checked.stdout
    (dirs[0] / "utt2spk").write_text("bb22-x bb22\naa11-y aa11\n")
    broken = metarecipe("validate-data-dir", dirs[0])
    assert broken.returncode == 1
    assert "FAILED" in broken.stderr and "utt2spk:2: 'aa11-y' is out of order" in broken.stderr


def test_prepare_data_reports_a_release_that_is_not_one(tmp_path):
    (tmp_path / "empty").mkdir()
    result = metarecipe("prepare-data", "commonvoice", tmp_path / "empty", tmp_path / "out")
    assert result.returncode == 1 and "no <lang>/*.tsv inside" in result.stderr


PLUGIN = '''
"""A folder of wav files with transcripts.tsv (file, speaker, text): a corpus in another layout."""
from pathlib import Path

from metarecipe.data import DataDir, write_data_dir
from metarecipe.text import normalize


def prepare(corpus_dir, out_dir, lang="de"):
    corpus_dir, data = Path(corpus_dir), DataDir({}, {}, {})
    for line in (corpus_dir / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        name, speaker, text = line.split("\\t")
        utt = f"{speaker}-{Path(name).stem}"
        data.wav_scp[utt] = str((corpus_dir / name).resolve())
        data.text[utt], data.utt2spk[utt], data.utt2lang[utt] = normalize(text, lang), speaker, lang
    return {"folder": write_data_dir(data, Path(out_dir) / "folder")}
'''


def test_plug_in_from_another_package_is_found_through_its_entry_point(tmp_path):
    package = tmp_path / "pkg"
    (package / "folder_corpus").mkdir(parents=True)
    (package / "folder_corpus" / "__init__.py").write_text(PLUGIN)
    (package / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "folder-corpus"
        version = "0.1"
        [project.entry-points."metarecipe.corpora"]
        folder = "folder_corpus:prepare"
    '''))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                              "--no-index", "--target", str(site), str(package)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(2):
        soundfile.write(corpus / f"c{i}.wav", np.zeros(8000, dtype=np.float32), 16000)
    (corpus / "transcripts.tsv").write_text("c0.wav\tanna\tHallo Welt!\nc1.wav\tbert\tTschüss.\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = metarecipe("prepare-data", "folder", corpus, tmp_path / "data", "--opt", "lang=de", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "data" / "folder" / "text").read_text() == "anna-c0 hallo welt\nbert-c1 tschüss\n"
    listed = metarecipe("prepare-data", "--help", env=env)
    assert "folder" in listed.stdout
