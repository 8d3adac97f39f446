"""The built-in demo corpus: generated offline, deterministic, read back through the Common Voice path."""

import shutil

import pytest

from metarecipe.data import read_data_dir
from metarecipe.data.corpora import DataPrepError, get_corpus
from metarecipe.data.demo_corpus import make_demo_corpus, require_tools

needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                 reason="espeak-ng not installed (.ci/run installs it)")


@needs_tools
def test_demo_release_prepares_with_disjoint_speakers_and_is_deterministic(tmp_path):
    counts = make_demo_corpus(tmp_path / "a", langs=["eo"], minutes=3, seed=7)
    assert counts["eo"]["train"] >= 16 and counts["eo"]["dev"] >= 4 and counts["eo"]["test"] >= 4
    written = get_corpus("commonvoice")(tmp_path / "a", tmp_path / "data")
    speakers = {split: set(read_data_dir(written[f"eo/{split}"]).spk2utt) for split in ("train", "dev", "test")}
    assert len(set().union(*speakers.values())) >= 20
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    assert not (speakers["dev"] & speakers["test"])
    texts = {split: set(read_data_dir(written[f"eo/{split}"]).text.values()) for split in ("train", "test")}
    assert not texts["train"] & texts["test"]
    make_demo_corpus(tmp_path / "b", langs=["eo"], minutes=3, seed=7)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert (tmp_path / "a" / "eo" / name).read_bytes() == (tmp_path / "b" / "eo" / name).read_bytes()
    clip = sorted((tmp_path / "a" / "eo" / "clips").iterdir())[3].name
    assert (tmp_path / "a" / "eo" / "clips" / clip).read_bytes() == \
        (tmp_path / "b" / "eo" / "clips" / clip).read_bytes()


@needs_tools
def test_demo_plug_in_generates_then_prepares(tmp_path):
    written = get_corpus("demo")(tmp_path / "release", tmp_path / "data", langs=["pt"], minutes=1, splits=("dev",))
    assert read_data_dir(written["pt/dev"]).utterances


def test_missing_packages_are_named_with_the_apt_get_command(monkeypatch, tmp_path):
    import metarecipe.data.demo_corpus as demo

    monkeypatch.setattr(demo, "FORTUNES", tmp_path / "none")
    with pytest.raises(DataPrepError, match=r"apt-get install -y .*fortunes-de fortunes-eo"):
        require_tools(["de", "eo"])
