"""Common Voice preparation from TSVs of three real releases' column sets, with real mp3 clips and faults."""

import numpy as np
import pytest
import soundfile

from metarecipe.data import read_data_dir
from metarecipe.data.corpora import DataPrepError, available_corpora, get_corpus

# column sets of real releases: an old one (no sentence_id, singular accent), one with segment and locale,
# and the newest layout (sentence_id, sentence_domain, variant)
COLUMNS = {
    "cv-5.1": ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"],
    "cv-9.0": ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale",
               "segment"],
    "cv-21.0": ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
                "gender", "accents", "variant", "locale", "segment"],
}
SENTENCES = ["Guten Morgen, Welt!", "Das ist „gut“.", "Wie geht's?", "Alles klar.", "Bis später."]


def make_clip(path, seconds=0.6, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    soundfile.write(path, wave.astype(np.float32), 16000, format="MP3")


def row(columns, client, clip, sentence):
    values = {"client_id": client, "path": clip, "sentence": sentence, "sentence_id": "abc", "locale": "de",
              "sentence_domain": "", "variant": "", "segment": "", "up_votes": "2", "down_votes": "0"}
    return "\t".join(values.get(c, "") for c in columns)


def make_release(root, release, faults=False, lang="de"):
    lang_dir = root / lang
    (lang_dir / "clips").mkdir(parents=True)
    columns = COLUMNS[release]
    for split, clients in (("train", ["aa11", "bb22"]), ("dev", ["cc33"]), ("test", ["dd44"])):
        lines = ["\t".join(columns)]
        for i, client in enumerate(clients):
            for j in range(2):
                clip = f"common_voice_de_{split}{i}{j}.mp3"
                make_clip(lang_dir / "clips" / clip, seed=i + j)
                lines.append(row(columns, client, clip, SENTENCES[(i + j) % len(SENTENCES)]))
        body = "\n".join(lines) + "\n"
        if faults and split == "train":
            (lang_dir / "clips" / "zero.mp3").write_bytes(b"")
            (lang_dir / "clips" / "corrupt.mp3").write_bytes(b"ID3\x04" + bytes(range(256)) * 4)
            make_clip(lang_dir / "clips" / "short.mp3", seconds=0.05)
            make_clip(lang_dir / "clips" / "ok.mp3", seed=3)
            body += "\n".join([
                row(columns, "ee55", "gone.mp3", "Fehlt."),
                row(columns, "ee55", "zero.mp3", "Leer."),
                row(columns, "ee55", "corrupt.mp3", "Kaputt."),
                row(columns, "ee55", "short.mp3", "Kurz."),
                row(columns, "ee55", "ok.mp3", "!!!"),
                row(columns, "aa11", "common_voice_de_train00.mp3", SENTENCES[0]),
            ]) + "\n"
            body = body.encode("utf-8") + row(columns, "ff66", "ok.mp3", "Übel").encode("latin-1") + b"\n"
            (lang_dir / f"{split}.tsv").write_bytes(body)
        else:
            (lang_dir / f"{split}.tsv").write_text(body, encoding="utf-8")
    return root


@pytest.mark.parametrize("release", sorted(COLUMNS))
def test_every_release_layout_prepares_valid_data_dirs(tmp_path, release):
    root = make_release(tmp_path / "cv", release)
    written = get_corpus("commonvoice")(root, tmp_path / "data")
    assert sorted(written) == ["de/dev", "de/test", "de/train"]
    train = read_data_dir(written["de/train"])  # validates every invariant
    assert train.utterances == ["aa11-common_voice_de_train00", "aa11-common_voice_de_train01",
                                "bb22-common_voice_de_train10", "bb22-common_voice_de_train11"]
    assert train.text["aa11-common_voice_de_train00"] == "guten morgen welt"
    assert train.text["aa11-common_voice_de_train01"] == "das ist gut"
    assert set(train.utt2lang.values()) == {"de"}
    assert all(0.5 < d < 0.75 for d in train.utt2dur.values())
    assert (tmp_path / "data" / "de" / "train" / "spk2utt").read_text().startswith("aa11 aa11-common_voice")


def test_faulty_rows_are_skipped_with_reasons_and_good_ones_kept(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0", faults=True)
    written = get_corpus("commonvoice")(root, tmp_path / "data", splits=("train",))
    assert len(read_data_dir(written["de/train"]).utterances) == 4
    skipped = dict(line.split("\t", 1) for line in (written["de/train"] / "skipped.tsv").read_text().splitlines()
                   if not line.startswith("#"))
    assert skipped["ee55-gone"].startswith("missing clip")
    assert skipped["ee55-zero"] == "empty clip (0 bytes)"
    assert skipped["ee55-corrupt"].startswith("unreadable clip")
    assert skipped["ee55-short"].startswith("clip of 0.05 s is too short")
    assert skipped["ee55-ok"] == "nothing left after normalisation"
    assert skipped["train.tsv:11"] == "duplicate row"
    assert skipped["train.tsv:12"].startswith("not UTF-8")


def test_numbers_are_spelled_out_not_dropped(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0")
    make_clip(root / "de" / "clips" / "zahl.mp3", seed=3)
    with open(root / "de" / "train.tsv", "a", encoding="utf-8") as train:
        train.write(row(COLUMNS["cv-21.0"], "ee55", "zahl.mp3", "Um 5 Uhr kostet es 1.250,75 Euro.") + "\n")
    written = get_corpus("commonvoice")(root, tmp_path / "data", splits=("train",))
    train = read_data_dir(written["de/train"])
    assert train.text["ee55-zahl"] == "um fünf uhr kostet es eintausendzweihundertfünfzig komma sieben fünf euro"
    assert (written["de/train"] / "skipped.tsv").read_text() == ""


def test_each_skip_reason_is_counted_on_its_own(tmp_path):
    # Irish: a Latin-script language num2words does not spell
    root = make_release(tmp_path / "cv", "cv-21.0", lang="ga")
    rows = [("ee55", "a.mp3", "Tá 5 cinn ann."), ("ee55", "b.mp3", "Uimhir 7."), ("ee55", "c.mp3", "Привет."),
            ("ee55", "d.mp3", "!!!"), ("ee55", "e.mp3", "Fada go leor.")]
    with open(root / "ga" / "train.tsv", "a", encoding="utf-8") as train:
        train.writelines(row(COLUMNS["cv-21.0"], *fields) + "\n" for fields in rows)
    written = get_corpus("commonvoice")(root, tmp_path / "data", splits=("train",))
    lines = (written["ga/train"] / "skipped.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[:4] == ["# skipped\t2\tdigits in a language num2words does not spell",
                         "# skipped\t1\tletters outside the language's script",
                         "# skipped\t1\tmissing clip",
                         "# skipped\t1\tnothing left after normalisation"]
    skipped = dict(line.split("\t", 1) for line in lines[4:])
    assert skipped["ee55-a"] == skipped["ee55-b"] == "digits in a language num2words does not spell: ga"
    assert skipped["ee55-c"] == "letters outside the language's script: 'привет' in ga (latin)"
    assert skipped["ee55-d"] == "nothing left after normalisation"
    assert skipped["ee55-e"].startswith("missing clip ")
    assert len(read_data_dir(written["ga/train"]).utterances) == 4


def test_not_a_release_is_a_clear_error(tmp_path):
    (tmp_path / "cv" / "de").mkdir(parents=True)
    (tmp_path / "cv" / "de" / "train.tsv").write_text("client_id\tsentence\nx\ty\n")
    with pytest.raises(DataPrepError, match="no column 'path'"):
        get_corpus("commonvoice")(tmp_path / "cv", tmp_path / "out", splits=("train",))
    with pytest.raises(DataPrepError, match="dev.tsv: missing"):
        get_corpus("commonvoice")(tmp_path / "cv", tmp_path / "out", splits=("dev",))
    with pytest.raises(DataPrepError, match="no <lang>/\\*.tsv"):
        get_corpus("commonvoice")(tmp_path / "cv" / "de", tmp_path / "out")


def test_train_from_validated_leaves_out_dev_and_test_speakers_and_sentences(tmp_path):
    root = make_release(tmp_path / "cv", "cv-9.0")
    lang_dir = root / "de"
    validated = (lang_dir / "train.tsv").read_text().splitlines()
    columns = COLUMNS["cv-9.0"]
    validated += [row(columns, "cc33", "common_voice_de_dev00.mp3", "Neu."),          # a dev speaker
                  row(columns, "gg77", "common_voice_de_test00.mp3", SENTENCES[0])]   # a dev/test sentence
    (lang_dir / "validated.tsv").write_text("\n".join(validated) + "\n")
    written = get_corpus("commonvoice")(root, tmp_path / "data", splits=("train",), train_from_validated=True)
    # dev and test read SENTENCES[0] and [1]: only bb22's reading of SENTENCES[2] is left; cc33 speaks in dev
    assert read_data_dir(written["de/train"]).utterances == ["bb22-common_voice_de_train11"]


def test_held_out_sentences_are_compared_after_normalisation_and_rows_name_validated_tsv(tmp_path):
    root = make_release(tmp_path / "cv", "cv-9.0")
    lang_dir, columns = root / "de", COLUMNS["cv-9.0"]
    with open(lang_dir / "dev.tsv", "a") as dev:
        dev.write(row(columns, "cc33", "common_voice_de_dev00.mp3", "Le catto dormi sur le sofa.") + "\n")
    make_clip(lang_dir / "clips" / "sofa.mp3", seed=4)
    validated = (lang_dir / "train.tsv").read_text().splitlines()
    validated += [row(columns, "hh88", "sofa.mp3", "Le catto dormi sur le sofa!"),     # dev's, once normalised
                  row(columns, "bb22", "common_voice_de_train11.mp3", SENTENCES[4]),  # duplicate of line 5
                  row(columns, "ii99", "sofa.mp3", "Le catto dormi sur le tapis.")]
    (lang_dir / "validated.tsv").write_text("\n".join(validated) + "\n")
    written = get_corpus("commonvoice")(root, tmp_path / "data", splits=("train",), train_from_validated=True)
    train = read_data_dir(written["de/train"])
    assert "hh88-sofa" not in train.utt2spk and "ii99-sofa" in train.utt2spk
    skipped = (written["de/train"] / "skipped.tsv").read_text().splitlines()
    assert skipped == ["# skipped\t1\tduplicate row", "validated.tsv:7\tduplicate row"]


@pytest.mark.parametrize("client, clip, reason", [
    ("ee 55", "ok.mp3", "client_id 'ee 55' holds U+0020 (SPACE), whitespace: not usable as a speaker id"),
    ("ee55", "my clip.mp3", "clip name 'my clip' holds U+0020 (SPACE), whitespace: not usable in an utterance id"),
    ("ee\x0b55", "ok.mp3", "client_id 'ee\\x0b55' holds U+000B (a control character), a control or "
                          "line-separator character: not usable as a speaker id"),
    ("ee55", "new\u2028line.mp3", "clip name 'new\\u2028line' holds U+2028 (LINE SEPARATOR), a control or "
                                  "line-separator character: not usable in an utterance id"),
])
def test_ids_with_whitespace_or_control_characters_are_skipped_and_the_dir_is_valid(tmp_path, client, clip, reason):
    root = make_release(tmp_path / "cv", "cv-21.0")
    make_clip(root / "de" / "clips" / clip, seed=3)
    with open(root / "de" / "train.tsv", "a", encoding="utf-8", newline="\n") as train:
        train.write(row(COLUMNS["cv-21.0"], client, clip, "Noch ein Satz.") + "\n")
    written = get_corpus("commonvoice")(root, tmp_path / "data", splits=("train",))
    assert len(read_data_dir(written["de/train"]).utterances) == 4
    kind = "client_id not usable as a speaker id" if client != "ee55" else "clip name not usable in an utterance id"
    assert (written["de/train"] / "skipped.tsv").read_text(encoding="utf-8") == \
        f"# skipped\t1\t{kind}\ntrain.tsv:6\t{reason}\n"


def test_a_split_with_nothing_usable_leaves_no_directory(tmp_path):
    root = make_release(tmp_path / "cv", "cv-21.0")
    (root / "de" / "test.tsv").write_text("\t".join(COLUMNS["cv-21.0"]) + "\n")
    with pytest.raises(DataPrepError, match="test.tsv: no usable utterance"):
        get_corpus("commonvoice")(root, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_built_in_plug_ins_are_listed():
    assert {"commonvoice", "kaldi"} <= set(available_corpora())
    with pytest.raises(DataPrepError, match="no corpus plug-in 'nope'; installed: "):
        get_corpus("nope")
