"""The built-in speaker and accent task corpora: real espeak-ng audio, valid Kaldi data dirs, disjoint sentences and
speakers, the promised durations, deterministic."""

import json
import shutil

import pytest
import soundfile

from metarecipe.cli.main import main
from metarecipe.data import read_data_dir
from metarecipe.data.corpora import DataPrepError
from metarecipe.data.demo_corpus import FORTUNES, Speaker
from metarecipe.data.variation_corpus import (
    DESIGNS,
    SENTENCE_SOURCES,
    Portion,
    Spoken,
    make_variation_corpus,
    next_job,
    speak_all,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
needs_english = pytest.mark.skipif(not (FORTUNES / "fortunes").exists(),
                                   reason="English fortunes missing (apt-get install -y fortunes-min)")
TABLES = ("text", "utt2spk", "spk2utt", "utt2dur", "utt2lang", "utt2accent")


@pytest.fixture(scope="module")
def speaker_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("speaker") / "corpus"
    assert main(["make-variation-corpus", str(out), "--task-kind", "speaker", "--mini", "--nj", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def accent_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("accent") / "corpus"
    make_variation_corpus(out, "accent", seed=0, jobs=2, mini=True)
    return out


def parts_of(out):
    """{part: DataDir} of every data dir, each read with the project's validator."""
    targets = (out / "targets" / "list").read_text().split()
    parts = [f"source/{split}" for split in ("train", "dev")]
    parts += [f"targets/{name}/{split}" for name in targets for split in ("train", "test")]
    return {part: read_data_dir(out / part) for part in parts}


def check_layout(out, kind):
    """Valid data dirs whose sentences are disjoint, flac audio of the stated durations, the promised seconds."""
    design = DESIGNS[kind, True]
    parts = parts_of(out)
    assert main(["validate-data-dir", *(str(out / part) for part in parts)]) == 0
    seen = {}
    for part, data in parts.items():
        for utt, sentence in data.text.items():
            assert seen.setdefault(sentence, part) == part, f"'{sentence}' in {seen[sentence]} and {part}"
            path = data.wav_scp[utt]
            assert path == str(out.resolve() / "audio" / f"{utt}.flac")
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert abs(info.duration - data.utt2dur[utt]) < 1e-3
    for part, data in parts.items():
        seconds, longest = sum(data.utt2dur.values()), max(data.utt2dur.values())
        if part.endswith("/train") and part.startswith("targets/"):
            assert design.train_seconds <= seconds < design.train_seconds + longest
        elif part.endswith("/test"):
            assert design.test_seconds <= seconds < design.test_seconds + longest
        else:
            wanted = design.source_seconds if part == "source/train" else design.dev_seconds
            assert all(sum(data.utt2dur[u] for u in utts) >= wanted for utts in data.spk2utt.values())
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["synthetic"] and corpus["task_kind"] == kind and "espeak-ng" in corpus["note"]
    assert list(corpus["targets"]) == (out / "targets" / "list").read_text().split()
    assert not [p for p in (out / "audio").iterdir() if p.name.startswith(".")]
    return parts


@needs_espeak
def test_speaker_corpus_layout_and_unseen_target_speakers(speaker_corpus):
    parts = check_layout(speaker_corpus, "speaker")
    design = DESIGNS["speaker", True]
    targets = (speaker_corpus / "targets" / "list").read_text().split()
    assert len(targets) == len(design.sources) * design.target
    source = set(parts["source/train"].spk2utt) | set(parts["source/dev"].spk2utt)
    assert not set(parts["source/train"].spk2utt) & set(parts["source/dev"].spk2utt)
    assert len(parts["source/train"].spk2utt) == len(design.sources) * design.source
    for name in targets:
        train, test = parts[f"targets/{name}/train"], parts[f"targets/{name}/test"]
        assert set(train.spk2utt) == set(test.spk2utt) == {name} and name not in source
        assert set(train.utt2lang.values()) == {name.split("_")[0]}
    corpus = json.loads((speaker_corpus / "corpus.json").read_text())
    voices = [(s["language"], s["variant"], s["pitch"], s["rate"]) for s in corpus["speakers"].values()]
    assert len(voices) == len(set(voices))
    assert not (speaker_corpus / "source" / "train" / "utt2accent").exists()


@needs_espeak
@needs_english
def test_accent_corpus_layout_and_unseen_target_accents(accent_corpus):
    parts = check_layout(accent_corpus, "accent")
    design = DESIGNS["accent", True]
    targets = (accent_corpus / "targets" / "list").read_text().split()
    assert targets == list(design.targets)
    accents = {}
    for part in parts:
        lines = (accent_corpus / part / "utt2accent").read_text().splitlines()
        accents[part] = dict(line.split() for line in lines)
        assert sorted(accents[part]) == parts[part].utterances
        assert set(parts[part].utt2lang.values()) == {"en"}
    for split in ("train", "dev"):
        assert set(accents[f"source/{split}"].values()) == set(design.sources)
    assert not set(parts["source/train"].spk2utt) & set(parts["source/dev"].spk2utt)
    source_speakers = set(parts["source/train"].spk2utt) | set(parts["source/dev"].spk2utt)
    for name in targets:
        for split in ("train", "test"):
            part = f"targets/{name}/{split}"
            assert set(accents[part].values()) == {name}
            assert len(parts[part].spk2utt) == design.target and not set(parts[part].spk2utt) & source_speakers


@needs_espeak
@needs_english
def test_same_seed_same_corpus_for_any_number_of_jobs(accent_corpus, tmp_path):
    again = tmp_path / "again"
    make_variation_corpus(again, "accent", seed=0, jobs=1, mini=True)
    for part in parts_of(accent_corpus):
        for name in TABLES:
            assert (again / part / name).read_bytes() == (accent_corpus / part / name).read_bytes(), f"{part}/{name}"
    for name in ("corpus.json", "targets/list"):
        assert (again / name).read_bytes() == (accent_corpus / name).read_bytes()
    clip = sorted((accent_corpus / "audio").iterdir())[5].name
    assert (again / "audio" / clip).read_bytes() == (accent_corpus / "audio" / clip).read_bytes()


def test_a_job_gets_the_first_free_sentences_for_the_words_it_lacks():
    portion = Portion("source/train", "en", "en-us", "en-us", (Speaker("a", "m1", 50, 120),), 10.0)
    pool = ["one two three four five"] * 10
    free = [1, 3, 4, 6, 7, 9]
    job = next_job("out", portion, [], pool, free, seed=0)  # 10 s at 120 words a minute: 20 words, 25 with margin
    assert [index for index, _ in job.sentences] == [1, 3, 4, 6, 7] and free == [9]
    assert job.seconds == 10.0 and job.turn == 0


class InProcess:
    """An executor that runs every call here, in order."""

    def map(self, fn, *iterables):
        return list(map(fn, *iterables))


def fake_speak(job):
    """One second per word, the speakers in turn, until the job has its seconds."""
    spoken, total = [], 0.0
    for index, text in job.sentences:
        if total >= job.seconds:
            break
        speaker = job.portion.speakers[(job.turn + len(spoken)) % len(job.portion.speakers)].client_id
        spoken.append(Spoken(f"{speaker}-{index:05d}", speaker, text, float(len(text.split())), index))
        total += spoken[-1].seconds
    return spoken


def test_portions_short_of_speech_get_more_sentences_in_later_rounds(monkeypatch):
    import metarecipe.data.variation_corpus as variation

    monkeypatch.setattr(variation, "speak", fake_speak)
    monkeypatch.setattr(variation, "MARGIN", 0.01)  # a sentence a round, so that it takes many rounds
    people = (Speaker("a", "m1", 50, 60), Speaker("b", "f1", 50, 60))
    portions = [Portion("source/train", "en", "en-us", None, people, 9.0),
                Portion("targets/x/train", "en", "en-us", None, people[:1], 4.0)]
    pool = [" ".join(["word"] * (1 + i % 3)) + f" {i}" for i in range(20)]
    said = speak_all(InProcess(), "out", portions, {"en": pool}, seed=0)
    assert all(sum(s.seconds for s in spoken) >= p.seconds for p, spoken in zip(portions, said, strict=True))
    assert len(said[0]) > 1 and len(said[1]) > 1
    indices = [s.index for spoken in said for s in spoken]
    assert len(indices) == len(set(indices)) and [s.speaker for s in said[0]][:3] == ["a", "b", "a"]
    with pytest.raises(DataPrepError, match="not enough en sentences"):
        speak_all(InProcess(), "out", portions, {"en": pool[:4]}, seed=0)


@needs_espeak
def test_a_voice_espeak_ng_lacks_is_named():
    import metarecipe.data.variation_corpus as variation

    variation.require_voices(["en-gb-scotland", "es"])
    with pytest.raises(DataPrepError, match="no voice xx-nowhere"):
        variation.require_voices(["en-gb-scotland", "xx-nowhere"])


def test_missing_packages_are_named_with_the_apt_get_command(monkeypatch, tmp_path):
    import metarecipe.data.demo_corpus as demo

    monkeypatch.setattr(demo, "FORTUNES", tmp_path / "none")
    assert SENTENCE_SOURCES["en"][2] == "fortunes-min"
    with pytest.raises(DataPrepError, match=r"(?s)variation corpus needs .*apt-get install -y .*fortunes-min"):
        make_variation_corpus(tmp_path / "out", "accent", mini=True)
