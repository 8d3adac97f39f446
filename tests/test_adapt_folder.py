"""`metarecipe adapt` on a folder of one real voice's recordings (the asterisk prompts as wav, flac and mp3) with
one transcript file, then `metarecipe transcribe` with the adapted model; bad lines, a folder without a
transcript file and characters outside the token table."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from metarecipe.cli.main import main
from metarecipe.data.audio import file_duration, read_audio_file
from metarecipe.data.corpora.asterisk import read_prompts, text_file, text_problem, voice_dir
from metarecipe.features.fbank import FbankConfig
from metarecipe.features.frontend import Frontend
from metarecipe.io.model_files import read_model_file, save_model
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.normalize import normalize
from metarecipe.text.tokens import TokenTable

SOUNDS = Path("/usr/share/asterisk/sounds")
pytestmark = pytest.mark.skipif(not (SOUNDS / "es").is_dir(), reason="the asterisk prompts are not installed "
                                                                     "(.ci/run installs them)")
FAST = ["adapt.lr=0.5", "adapt.max_steps=30", "adapt.eval_every=15", "adapt.criterion=loss"]  # seconds, not minutes


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tiny model gains nothing from two, and on a loaded machine (a test run beside) the
    kernels' OpenMP barriers wait at every time step on a thread that is not running (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts():
    """21 prompts of one voice, 1.5-4.5 s, whose texts are what is said: [(wav path, text)]."""
    found, _, _ = read_prompts(text_file(SOUNDS, "es", None))
    voice = voice_dir(SOUNDS, "es")
    chosen = [(voice / f"{p.key}.wav", p.text) for p in found
              if "/" not in p.key and (voice / f"{p.key}.wav").is_file() and text_problem(p, False) is None
              and not any(ch.isdigit() for ch in p.text) and 1.5 <= file_duration(voice / f"{p.key}.wav") <= 4.5]
    assert len(chosen) >= 21
    return chosen[:21]


def tiny_model_file(path: Path, texts) -> Path:
    """An untrained small model with the default front end (16 kHz, 80 mel bins, per-speaker CMVN)."""
    tokens = TokenTable.from_texts(normalize(t, "es") for t in texts)
    torch.manual_seed(0)
    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=8,
                                        gru_layers=1))
    stats = np.array([[0.0] * 80 + [1.0], [1.0] * 80 + [0.0]]) * 1000
    save_model(path, model, tokens, {"algorithm": "fomaml"}, Frontend(FbankConfig(), "speaker", stats))
    return path


@pytest.fixture(scope="module")
def model_file(prompts, tmp_path_factory):
    return tiny_model_file(tmp_path_factory.mktemp("meta") / "final.pt", [text for _, text in prompts])


def write_as(source: Path, out: Path) -> Path:
    """The prompt as `out`: a wav as it is (8 kHz mono), else flac or mp3 at 44.1 kHz stereo."""
    if out.suffix == ".wav":
        out.write_bytes(source.read_bytes())
    else:
        mono = read_audio_file(source, 44100)
        soundfile.write(out, np.stack([mono, 0.8 * mono], axis=1), 44100, format=out.suffix[1:].upper())
    return out


def make_folder(folder: Path, prompts) -> list[str]:
    """The prompts in wav, flac and mp3, listed in transcripts.txt (tab-separated, a name with a space, some by
    their stem, one line with spaces); returns the transcript lines."""
    folder.mkdir(parents=True)
    lines = []
    for i, (source, text) in enumerate(prompts):
        name = f"{'my take' if i == 4 else 'take'}{i:02d}.{('wav', 'flac', 'mp3')[i % 3]}"
        write_as(source, folder / name)
        listed = Path(name).stem if i % 5 == 1 else name
        lines.append(f"{listed} {text}" if i == 7 else f"{listed}\t{text}")
    (folder / "transcripts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_adapt_on_a_folder_of_one_voice_then_transcribe_with_the_adapted_model(prompts, model_file, tmp_path,
                                                                                 capsys):
    folder, exp = tmp_path / "my recordings", tmp_path / "exp" / "my_voice"
    make_folder(folder, prompts[:20])
    held_out = write_as(prompts[20][0], tmp_path / "held out.mp3")
    assert main(["adapt", "--exp-dir", str(exp), f"model={model_file}", f"data={folder}", *FAST]) == 0
    out = capsys.readouterr().out
    assert f"{folder}: 20 recording(s)" in out and "adapting on all of it" in out, out

    wav_scp = (exp / "data" / "wav.scp").read_text(encoding="utf-8").splitlines()
    assert len(wav_scp) == 20 and all(line.split(" ", 1)[1].startswith(str(folder.resolve())) for line in wav_scp)
    summary = json.loads((exp / "adapt.json").read_text(encoding="utf-8"))
    assert summary["train_utterances"] + summary["held_out_utterances"] == 20  # the whole folder, split
    assert summary["held_out_utterances"] >= 2 and summary["train_seconds"] > 20
    assert not summary["kept_initial"] and summary["best"]["loss"] < 0.8 * summary["initial"]["loss"], summary

    meta, adapted = read_model_file(model_file), read_model_file(exp / "adapted.pt")
    assert adapted.frontend.fbank == meta.frontend.fbank and adapted.frontend.cmvn == meta.frontend.cmvn
    frames = (summary["train_seconds"] + summary["held_out_seconds"]) * 100
    assert adapted.frontend.global_stats[0, -1] == pytest.approx(frames)  # the statistics of the voice's speech
    assert adapted.info["adapted_on"] == str(folder)
    changed = [n for n, p in adapted.model.params.items() if not torch.equal(p, meta.model.params[n])]
    assert changed

    assert main(["transcribe", str(exp / "adapted.pt"), str(held_out), "--format", "json", "--vad", "energy"]) == 0
    transcript = json.loads(capsys.readouterr().out)
    duration = file_duration(held_out)
    assert transcript["segments"] and all(0 <= s["start"] < s["end"] <= duration + 0.01
                                          for s in transcript["segments"])


def test_bad_lines_are_reported_with_their_line_and_left_out(prompts, model_file, tmp_path, capsys):
    folder, exp = tmp_path / "voice", tmp_path / "exp"
    folder.mkdir()
    write_as(prompts[0][0], tmp_path / "outside.wav")
    for i in range(3):
        write_as(prompts[i][0], folder / f"a{i}.flac")
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEfmt nothing")
    rows = ["client_id\tpath\tsentence\tup_votes", f"x\ta0.flac\t{prompts[0][1]}\t2", "x\tmissing.wav\thola\t1",
            "x\t../outside.wav\thola\t1", "x\ta1.flac\t \t1", "x\tbroken.wav\thola\t1",
            "x\t/etc/passwd\thola\t1", f"x\ta2\t{prompts[2][1]}\t3"]
    (folder / "transcripts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["adapt", "--exp-dir", str(exp), f"model={model_file}", f"data={folder}", "adapt.max_steps=2"]) == 0
    err = capsys.readouterr().err
    tsv = folder / "transcripts.tsv"
    for line, reason in [(3, "missing.wav: no such file in the folder"), (4, "../outside.wav: outside the folder"),
                         (5, "a1.flac: empty transcript"), (6, "broken.wav: cannot decode audio"),
                         (7, "/etc/passwd: outside the folder")]:
        assert f"{tsv}:{line}: {reason}" in err, err
    assert err.count("; left out") == 5
    summary = json.loads((exp / "adapt.json").read_text(encoding="utf-8"))
    assert summary["train_utterances"] + summary["held_out_utterances"] == 2


def test_a_folder_without_a_transcript_file_or_with_unknown_characters_is_a_clear_error(prompts, tmp_path, capsys):
    model = tiny_model_file(tmp_path / "final.pt", ["hola buenos días"])
    folder = tmp_path / "voice"
    folder.mkdir()
    for i in range(2):
        write_as(prompts[i][0], folder / f"r{i}.wav")
    args = ["adapt", "--exp-dir", str(tmp_path / "exp"), f"model={model}", f"data={folder}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{folder}: neither a Kaldi data dir (no wav.scp) nor a folder of recordings (no transcripts.txt" in err
    (folder / "transcripts.txt").write_text("r0.wav hola\nr1.wav Straße\n", encoding="utf-8")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "characters outside the model's token table" in err and "transcripts.txt:2: r1.wav: r t ß" in err, err
    assert not (tmp_path / "exp").exists()
