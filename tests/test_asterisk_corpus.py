"""The `asterisk` corpus plug-in on a sounds directory in the real layout (a voice directory, a <lang> link to it,
core-sounds-<lang>.txt, real wav files), and on the installed Debian packages when they are there."""

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from metarecipe.cli.main import main
from metarecipe.data import read_data_dir
from metarecipe.data.corpora import DataPrepError, available_corpora, get_corpus

VOICE = "xx_XX_f_Test"
RATE = 8000
SENTENCES = {f"s{n:02d}": f"This is prompt {n} of the test." for n in range(1, 41)}
TEXT = """\ufeff; Core Asterisk Sounds in a test language

digits/1: one
press-one: Press 1 now.
letters/a: a
letters/dot: dot [.]
single: y
am: A.M.
spy-nbs: N B S
dir-intro: Use the 7 key for Q, and the 9 key for Z.
spy-pbx: The PBX is ready.
binaural: 3D audio enabled
beep: [this is a simple beep tone]
vm-intro: Leave a message. (simple tone sound plays)
silence/1: (1 second of silence)
quiet: Nothing to hear here.
gone: This one has no audio.
tiny: Far too short.
broken: Corrupt audio here.
thanks-a: Thank you.
thanks-b: Thank you!
bye: Goodbye, see you.
copy: Goodbye for now.
self: self: Some words.
lost: It can?t be done.
star: Press * to cancel.
again: Hello again.
again: Hello again.
clash: First text.
clash: Second text.
no colon on this line
empty:
cyrillic: Press Москва now.
"""
SKIPPED = {
    "letters/a": "spelled letter or symbol",
    "letters/dot": "spelled letter or symbol",
    "single": "single letters (spelled, or a one-letter word said alone)",
    "am": "single letters (spelled, or a one-letter word said alone)",
    "spy-nbs": "single letters (spelled, or a one-letter word said alone)",
    "dir-intro": "spelled letters: Q",
    "spy-pbx": "abbreviation in capitals: PBX",
    "binaural": "code of capitals and digits: 3D",
    "beep": "note in brackets, not speech: [this is a simple beep tone]",
    "vm-intro": "note in brackets, not speech: (simple tone sound plays)",
    "silence/1": "note in brackets, not speech: (1 second of silence)",
    "quiet": "silence: peak -84 dBFS",
    "tiny": "audio too short: 0.05 s, under 0.2 s",
    "copy": "same recording as another prompt: bye",
    "self": "text starts with its own key: self: Some words.",
    "lost": "characters lost to an encoding: can?",
    "star": "a symbol that is read out: '*'",
    "core-sounds-en.txt:28": "duplicate line: key again again",
    "clash": "key listed with different texts",
    "core-sounds-en.txt:31": "not a 'key: text' line: no colon on this line",
    "empty": "empty text",
    "cyrillic": "letters outside the language's script: 'москва' in en (latin)",
    "orphan": "audio without a text line",
}


def write_speech(path: Path, seconds: float, seed: int) -> None:
    """A voiced, modulated tone with noise: real 16-bit PCM wav audio at 8 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (110 + 7 * seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32), RATE, subtype="PCM_16")


def make_sounds(root: Path, text: str = TEXT) -> Path:
    """<root>/sounds with the voice directory, the `en` link to it, its texts and audio."""
    voice = root / "sounds" / VOICE
    keys = ["digits/1", "press-one", "letters/a", "letters/dot", "single", "am", "spy-nbs", "dir-intro", "spy-pbx",
            "binaural", "beep", "vm-intro", "silence/1", "thanks-a", "thanks-b", "bye", "self", "lost", "star",
            "again", "clash", "empty", "cyrillic", "orphan", *SENTENCES]
    for seed, key in enumerate(keys):
        write_speech(voice / f"{key}.wav", 0.6 + (seed % 7) * 0.3, seed)
    hiss = np.random.default_rng(0).integers(-2, 3, RATE).astype(np.int16)  # as Asterisk's silence/*.wav
    soundfile.write(voice / "quiet.wav", hiss, RATE, subtype="PCM_16")
    write_speech(voice / "tiny.wav", 0.05, 99)
    (voice / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64)))
    shutil.copy(voice / "bye.wav", voice / "copy.wav")
    sentences = "".join(f"{key}: {sentence}\n" for key, sentence in SENTENCES.items())
    (voice / "core-sounds-en.txt").write_text(text + sentences, encoding="utf-8")
    (root / "sounds" / "en").symlink_to(VOICE)
    return root / "sounds"


def skipped_rows(written: dict) -> tuple[dict[str, str], list[str]]:
    """{where: reason} over every split's skipped.tsv, and their comment lines."""
    rows, comments = {}, []
    for path in written.values():
        for line in (path / "skipped.tsv").read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                comments.append(line)
            else:
                where, reason = line.split("\t")
                rows.setdefault(where, reason)
    return rows, comments


def split_of_texts(written: dict) -> dict[str, set[str]]:
    return {name: set(read_data_dir(path).text.values()) for name, path in written.items()}


@pytest.fixture
def prepared(tmp_path):
    sounds = make_sounds(tmp_path)
    return sounds, get_corpus("asterisk")(sounds, tmp_path / "data", langs=["en"])


def test_prompts_become_valid_data_dirs_with_speaker_prefixed_ids(prepared):
    _, written = prepared
    assert sorted(written) == ["en/dev", "en/test", "en/train"]
    data = {name: read_data_dir(path) for name, path in written.items()}  # validates every invariant
    text = {utt: t for d in data.values() for utt, t in d.text.items()}
    assert len(text) == 46
    assert text[f"{VOICE}-en-digits-1"] == "one"
    assert text[f"{VOICE}-en-press-one"] == "press one now"
    assert text[f"{VOICE}-en-s12"] == "this is prompt twelve of the test"
    for d in data.values():
        assert set(d.utt2spk.values()) == {VOICE} and set(d.utt2lang.values()) == {"en"}
        assert all(0.55 < seconds < 2.5 for seconds in d.utt2dur.values())
        assert all(Path(wav).is_file() and f"/{VOICE}/" in wav for wav in d.wav_scp.values())


def test_every_prompt_left_out_is_listed_once_with_its_reason_and_counted(prepared):
    _, written = prepared
    rows, comments = skipped_rows(written)
    assert set(rows) == set(SKIPPED) | {"gone", "broken"}
    for where, reason in SKIPPED.items():
        assert rows[where].startswith(reason), (where, rows[where])
    assert rows["gone"].startswith("missing audio: ")
    assert rows["broken"].startswith("unreadable audio: ")
    counted = sum(int(line.split("\t")[1]) for line in comments)
    lines = sum(1 for path in written.values() for line in (path / "skipped.tsv").read_text().splitlines()
                if not line.startswith("#"))
    assert counted == lines == len(SKIPPED) + 3  # clash: both of its lines


def test_splits_are_by_text_and_hold_about_their_shares_of_speech(prepared):
    _, written = prepared
    texts = split_of_texts(written)
    assert not texts["en/train"] & texts["en/test"] and not texts["en/train"] & texts["en/dev"]
    assert not texts["en/dev"] & texts["en/test"]
    thanks = [name for name, found in texts.items() if "thank you" in found]
    assert len(thanks) == 1  # thanks-a and thanks-b, one text: one split
    assert len(read_data_dir(written[thanks[0]]).text) >= 2
    seconds = {name: sum(read_data_dir(path).utt2dur.values()) for name, path in written.items()}
    total = sum(seconds.values())
    assert 0.6 < seconds["en/train"] / total < 0.8
    assert 0.05 < seconds["en/dev"] / total < 0.15
    assert 0.12 < seconds["en/test"] / total < 0.28


def test_the_seed_decides_the_splits_deterministically(tmp_path):
    sounds = make_sounds(tmp_path)
    prepare = get_corpus("asterisk")
    first = split_of_texts(prepare(sounds, tmp_path / "a", langs=["en"], seed=0))
    assert split_of_texts(prepare(sounds, tmp_path / "b", langs=["en"], seed="0")) == first
    assert split_of_texts(prepare(sounds, tmp_path / "c", langs=["en"], seed=1)) != first


def test_shares_are_options(tmp_path):
    sounds = make_sounds(tmp_path)
    prepare = get_corpus("asterisk")
    written = prepare(sounds, tmp_path / "all", langs=["en"], splits=["train"], train_share="1", dev_share="0",
                      test_share="0")
    assert len(read_data_dir(written["en/train"]).text) == 46
    with pytest.raises(DataPrepError, match="no prompt falls in dev"):
        prepare(sounds, tmp_path / "none", langs=["en"], dev_share=0)
    assert not (tmp_path / "none").exists()
    with pytest.raises(DataPrepError, match="unknown split valid"):
        prepare(sounds, tmp_path / "none", langs=["en"], splits=["valid"])


def test_texts_are_found_in_text_dir(tmp_path):
    sounds = make_sounds(tmp_path)
    docs = tmp_path / "doc"
    docs.mkdir()
    (sounds / VOICE / "core-sounds-en.txt").rename(docs / "core-sounds-en.txt")
    written = get_corpus("asterisk")(sounds, tmp_path / "data", langs=["en"], text_dir=str(docs))
    assert sum(len(read_data_dir(path).text) for path in written.values()) == 46


def run_in_process(*args):
    """`metarecipe ARGS` through the command's entry point in this process, as a CompletedProcess."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_the_command_line_prepares_and_validates(tmp_path):
    sounds = make_sounds(tmp_path)
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "metarecipe", "prepare-data", "asterisk", str(sounds), str(out),
                             "--langs", "en", "--splits", "train", "dev", "test", "--opt", "seed=3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"asterisk en (speaker {VOICE}): 68 prompts, 46 kept; minutes train" in result.stdout
    checked = run_in_process("validate-data-dir", out / "en" / "train", out / "en" / "dev", out / "en" / "test")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count(": OK") == 3


@pytest.mark.parametrize("lang, options, message", [
    ("en", ["--opt", "text_dir=EMPTY"], "metarecipe prepare-data: no prompt texts for 'en': none of "),
    ("zz", [], "/zz: no audio directory for 'zz' (apt-get install asterisk-core-sounds-zz-wav)"),
])
def test_a_missing_package_is_one_line_naming_it_and_writes_nothing(tmp_path, lang, options, message):
    sounds = make_sounds(tmp_path)
    (tmp_path / "empty").mkdir()
    options = [option.replace("EMPTY", str(tmp_path / "empty")) for option in options]
    result = run_in_process("prepare-data", "asterisk", sounds, tmp_path / "data", "--langs", lang, *options)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert message in result.stderr
    if lang == "en":
        assert "(apt-get install asterisk-core-sounds-en)" in result.stderr
    assert not (tmp_path / "data").exists()


def test_the_plug_in_is_built_in():
    assert "asterisk" in available_corpora()


INSTALLED = Path("/usr/share/asterisk/sounds")


@pytest.mark.skipif(not (INSTALLED / "en").is_dir(), reason="asterisk-core-sounds-en(-wav) is not installed")
def test_the_installed_english_prompts(tmp_path):
    written = get_corpus("asterisk")(INSTALLED, tmp_path / "data", langs=["en"])
    texts = split_of_texts(written)
    assert not texts["en/train"] & texts["en/test"] and not texts["en/dev"] & (texts["en/train"] | texts["en/test"])
    data = {name: read_data_dir(path) for name, path in written.items()}
    minutes = {name: sum(d.utt2dur.values()) / 60 for name, d in data.items()}
    assert sum(len(d.text) for d in data.values()) > 400 and sum(minutes.values()) > 15
    assert 0.6 < minutes["en/train"] / sum(minutes.values()) < 0.8
    speaker = (INSTALLED / "en").resolve().name
    assert data[next(n for n, d in data.items() if f"{speaker}-en-digits-1" in d.text)].text[
        f"{speaker}-en-digits-1"] == "one"
    rows, _ = skipped_rows(written)
    assert rows["letters/a"].startswith("spelled letter or symbol")
    assert rows["beep"].startswith("note in brackets, not speech")
    assert rows["silence/1"].startswith("note in brackets, not speech")
