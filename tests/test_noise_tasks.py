"""make-noise-tasks on real Asterisk prompts: layout, valid data directories, SNRs, noise spectra, babble,
unique ids, determinism, skipped audio and interrupted runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from metarecipe.cli.main import main
from metarecipe.data import noise_tasks
from metarecipe.data.audio import read_audio_file
from metarecipe.data.datadir import read_data_dir
from metarecipe.data.noise_signals import PEAK, Speech, babble, coloured_noise, hum, mix
from metarecipe.data.noise_tasks import Condition, assign, read_pool
from metarecipe.io.kaldi_tables import read_table
from metarecipe.io.pools import task_of_utterance

SOUNDS = Path("/usr/share/asterisk/sounds/en")
MOH = Path("/usr/share/asterisk/moh")
RATE = 8000
SPEAKER = "en_US_f_Allison"
PROMPTS = {
    "train": {"agent-pass": "please enter your password followed by the pound key",
              "conf-onlyperson": "you are currently the only person in this conference",
              "pls-hold-while-try": "please hold while we try to connect you",
              "vm-nobodyavail": "nobody is available to take your call at the moment",
              "tt-weasels": "weasels have eaten our phone system", "one-moment-please": "one moment please",
              "goodbye": "goodbye", "vm-goodbye": "goodbye"},
    "dev": {"call-forwarding": "call forwarding", "dir-welcome": "welcome to the directory",
            "conf-full": "that conference is full", "conf-muted": "you are now muted",
            "agent-loginok": "agent logged in", "all-circuits-busy-now": "all circuits are busy now"},
    "test": {"hello-world": "hello world", "queue-thankyou": "thank you for your patience",
             "please-try-again": "please try again"},
}
SOURCES = ["music", "white", "pink", "hum"]
BANDS = {"0-5": (0.0, 5.0), "10-20": (10.0, 20.0)}

pytestmark = pytest.mark.skipif(not (SOUNDS.is_dir() and MOH.is_dir()),
                                reason="needs asterisk-core-sounds-en-wav and asterisk-moh-opsound-wav")


def write_speech_dir(directory: Path, prompts: dict[str, str], broken: str | None = None) -> Path:
    """A Kaldi data dir of Asterisk prompts (with `broken`, one more utterance whose file is not audio)."""
    directory.mkdir(parents=True)
    entries = {f"{SPEAKER}-en-{key}": (str(SOUNDS / f"{key}.wav"), text) for key, text in prompts.items()}
    if broken:
        (directory / "broken.wav").write_bytes(b"not audio at all")
        entries[f"{SPEAKER}-en-{broken}"] = (str(directory / "broken.wav"), "broken prompt")
    utts = sorted(entries)
    tables = {"wav.scp": [entries[u][0] for u in utts], "text": [entries[u][1] for u in utts],
              "utt2spk": [SPEAKER] * len(utts), "utt2lang": ["en"] * len(utts)}
    for name, values in tables.items():
        (directory / name).write_text("".join(f"{u} {v}\n" for u, v in zip(utts, values, strict=True)))
    (directory / "spk2utt").write_text(f"{SPEAKER} {' '.join(utts)}\n")
    return directory


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speech")
    return {split: write_speech_dir(root / split, prompts) for split, prompts in PROMPTS.items()}


def run_tool(out: Path, speech: dict[str, Path], *extra: str) -> int:
    return main(["make-noise-tasks", str(out), "--speech-train", str(speech["train"]), "--speech-dev",
                 str(speech["dev"]), "--speech-test", str(speech["test"]), "--source-types", *SOURCES,
                 "--target-types", "babble", "brown", "--snr-bands", *BANDS, "--target-snr-bands", "0-5", *extra])


@pytest.fixture(scope="module")
def corpus(speech, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("noise") / "out"
    assert run_tool(out, speech) == 0
    return out


def data_dirs(out: Path) -> list[Path]:
    targets = (out / "targets" / "list").read_text().split()
    return [out / "source" / "train", out / "source" / "dev"] + [
        out / "targets" / t / split for t in targets for split in ("train", "test")]


def clean_path(utt: str) -> Path:
    return SOUNDS / (utt.split(f"{SPEAKER}-en-", 1)[1] + ".wav")


def welch(samples: np.ndarray, segment: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, power spectral density up to a constant): Hann-windowed periodograms of half-overlapping
    segments, averaged (Welch's method)."""
    window = np.hanning(segment)
    starts = range(0, len(samples) - segment + 1, segment // 2)
    power = np.mean([np.abs(np.fft.rfft(window * samples[s:s + segment])) ** 2 for s in starts], axis=0)
    return np.fft.rfftfreq(segment, 1 / RATE), power


def slope_db_per_octave(samples: np.ndarray, low: float = 100.0, high: float = 3000.0) -> float:
    freqs, psd = welch(samples)
    band = (freqs >= low) & (freqs <= high)
    return float(np.polyfit(np.log2(freqs[band]), 10 * np.log10(psd[band]), 1)[0])


def mixing(directory: Path) -> list[list[str]]:
    return [line.split("\t") for line in (directory / "mixing.tsv").read_text().splitlines()[1:]]


def test_layout(corpus):
    tasks = [f"{kind}_{band}" for kind in SOURCES for band in BANDS]
    assert (corpus / "targets" / "list").read_text() == "babble_0-5\nbrown_0-5\n"
    info = json.loads((corpus / "corpus.json").read_text())
    assert sorted(info["tasks"]) == sorted(tasks) and sorted(info["targets"]) == ["babble_0-5", "brown_0-5"]
    assert info["tasks"]["music_0-5"]["real"] and not info["tasks"]["white_0-5"]["real"]
    assert all(Path(f).parent == MOH for f in info["tasks"]["music_10-20"]["noise_files"])
    assert info["tasks"]["music_10-20"]["noise_files"] and not info["targets"]["brown_0-5"]["noise_files"]
    assert info["assignment"]["train"] == "every utterance in every task"  # 18 s of speech: too little to deal
    assert info["assignment"]["dev"] == "every utterance in every task"  # held-out sets of 30 s a task
    for directory in data_dirs(corpus):
        for utt, path in read_table(directory / "wav.scp").items():
            condition = read_table(directory / "utt2noise")[utt]
            assert Path(path) == corpus / "audio" / condition / f"{utt[len(condition) + 1:]}.flac"
            assert Path(path).is_absolute() and soundfile.info(path).samplerate == RATE
            assert soundfile.info(path).subtype == "PCM_16"
    assert not list(corpus.rglob(".*.tmp*"))


def test_data_dirs_validate_and_group_by_noise(corpus):
    for directory in data_dirs(corpus):
        data = read_data_dir(directory)
        tasks = task_of_utterance(directory, data, "noise")
        assert all(utt.startswith(f"{task}-{SPEAKER}-en-") for utt, task in tasks.items())
        assert set(data.utt2lang.values()) == {"en"}
    train = read_data_dir(corpus / "source" / "train")
    assert len(set(task_of_utterance(corpus / "source" / "train", train, "noise").values())) == 8
    test = read_data_dir(corpus / "targets" / "brown_0-5" / "test")
    assert sorted(test.text.values()) == sorted(PROMPTS["test"].values())


def test_utterance_ids_unique(corpus):
    ids = [utt for d in data_dirs(corpus) if "source" in d.parts for utt in read_table(d / "utt2spk")]
    assert len(ids) == len(set(ids)) == (len(PROMPTS["train"]) + len(PROMPTS["dev"])) * 8


def test_mixes_have_their_snr(corpus):
    checked = 0
    for directory in data_dirs(corpus):
        noise_of = read_table(directory / "utt2noise")
        for utt, snr, gain, _ in mixing(directory):
            low, high = BANDS[noise_of[utt].split("_")[1]]
            mixed, _ = soundfile.read(read_table(directory / "wav.scp")[utt])
            speech = read_audio_file(clean_path(utt), RATE)
            noise = mixed / float(gain) - speech
            measured = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
            assert low - 0.5 <= measured <= high + 0.5, (utt, measured)
            assert abs(measured - float(snr)) < 0.1, (utt, measured, snr)
            checked += 1
    train, dev, test = (len(PROMPTS[split]) for split in ("train", "dev", "test"))
    assert checked == 8 * train + 8 * dev + 2 * (dev + test)  # every speech in every source task; 2 targets


@pytest.mark.parametrize("kind, exponent, slope", [("white", 0, 0.0), ("pink", 1, -3.0), ("brown", 2, -6.0)])
def test_coloured_noise_slopes(kind, exponent, slope):
    noise = coloured_noise(RATE * 30, RATE, exponent, np.random.default_rng(0))
    assert abs(slope_db_per_octave(noise) - slope) < 0.5


def test_written_brown_noise_slope(corpus):
    directory = corpus / "targets" / "brown_0-5" / "train"
    pieces = []
    for utt, _, gain, _ in mixing(directory):
        mixed, _ = soundfile.read(read_table(directory / "wav.scp")[utt])
        pieces.append(mixed / float(gain) - read_audio_file(clean_path(utt), RATE))
    assert abs(slope_db_per_octave(np.concatenate(pieces), high=1500.0) + 6.0) < 1.0


def test_hum_is_mains_and_harmonics():
    samples = hum(RATE * 10, RATE, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    peaks = freqs[np.argsort(spectrum)[-10:]]
    assert np.all(np.abs(peaks / 50 - np.round(peaks / 50)) < 0.01) and peaks.min() > 45


def test_babble_is_other_utterances():
    rng = np.random.default_rng(0)
    times = np.arange(RATE * 2) / RATE
    own = Speech("own", "s", "goodbye", "en", np.sin(2 * np.pi * 1000 * times).astype(np.float32))
    twin = Speech("twin", "s", "goodbye", "en", np.sin(2 * np.pi * 1500 * times).astype(np.float32))
    others = [Speech(k, "s", PROMPTS["train"][k], "en", read_audio_file(SOUNDS / f"{k}.wav", RATE))
              for k in ("agent-pass", "tt-weasels", "one-moment-please")]
    noise, used = babble(RATE * 3, [own, twin, *others], own.text, rng)
    assert set(used) <= {s.utt for s in others} and used
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / RATE)
    for tone in (1000, 1500):  # neither sine (the utterance itself, or its text said again) is in the babble
        assert spectrum[np.abs(freqs - tone) < 1].max() < 50 * np.median(spectrum[np.abs(freqs - tone) < 100])


def test_written_babble_uses_other_prompts(corpus):
    directory = corpus / "targets" / "babble_0-5" / "train"
    text = read_table(directory / "text")
    for utt, _, _, source in mixing(directory):
        used = source.removeprefix("babble:").split(",")
        orig = utt.removeprefix("babble_0-5-")
        assert used and orig not in used
        assert all(PROMPTS["dev"][u.split("-en-", 1)[1]] != text[utt] for u in used)
        assert orig.split("-en-", 1)[1] in PROMPTS["dev"]  # adaptation speech: never trained on


def test_round_robin_when_the_pool_is_large():
    pool = [Speech(f"u{i:02d}", "s", f"text {i}", "en", np.zeros(RATE * 100, np.float32)) for i in range(12)]
    conditions = [Condition("white", "0-5"), Condition("pink", "0-5"), Condition("hum", "0-5")]
    pairs, every = assign(pool, conditions, RATE, 0, "train", 90.0)
    assert not every and sorted(s.utt for _, s in pairs) == [s.utt for s in pool]
    assert [sum(c == cond for c, _ in pairs) for cond in conditions] == [4, 4, 4]
    assert [s.utt for _, s in pairs] != [s.utt for _, s in assign(pool, conditions, RATE, 1, "train", 90.0)[0]]
    pairs, every = assign(pool, conditions, RATE, 0, "train", 500.0)
    assert every and len(pairs) == 36


def test_deterministic_with_the_seed(corpus, speech, tmp_path):
    assert run_tool(tmp_path / "again", speech) == 0
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        other = tmp_path / "again" / path.relative_to(corpus)
        assert other.read_bytes() == path.read_bytes().replace(bytes(corpus), bytes(tmp_path / "again")), path
    assert run_tool(tmp_path / "seed1", speech, "--seed", "1") == 0
    audio = sorted((corpus / "audio").rglob("*.flac"))
    assert all((tmp_path / "seed1" / p.relative_to(corpus)).read_bytes() != p.read_bytes() for p in audio)


def test_mini(speech, tmp_path):
    assert run_tool(tmp_path / "out", speech, "--mini") == 0
    info = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert sorted(info["tasks"]) == ["music_0-5", "white_0-5"] and list(info["targets"]) == ["babble_0-5"]
    assert all(info["tasks"][t]["train"]["utterances"] == 8 for t in info["tasks"])  # 18 s: under 45 s
    assert info["targets"]["babble_0-5"]["test"]["utterances"] == 3


def test_mini_pool_is_drawn_by_seconds(speech):
    pool = read_pool([str(speech["train"])], RATE, [], seconds=5.0, seed=3)
    seconds = [s.samples.size / RATE for s in pool]
    assert 5.0 <= sum(seconds) and len(pool) < len(PROMPTS["train"])
    assert [s.utt for s in pool] == sorted(s.utt for s in pool)
    assert [s.utt for s in pool] == [s.utt for s in read_pool([str(speech["train"])], RATE, [], 5.0, 3)]


def test_mix_keeps_the_snr_under_the_peak():
    rng = np.random.default_rng(0)
    speech = (0.95 * np.sin(np.arange(RATE) * 0.3)).astype(np.float32)
    noise = rng.standard_normal(RATE).astype(np.float32)
    mixed, gain = mix(speech, noise, 0.0)
    assert gain < 1 and np.abs(mixed).max() <= PEAK + 1e-6
    residual = mixed / gain - speech
    assert abs(10 * np.log10(np.mean(speech**2) / np.mean(residual**2))) < 0.01


def test_unreadable_prompt_is_reported_and_skipped(tmp_path, capsys):
    speech = {split: write_speech_dir(tmp_path / split, prompts, broken="broken" if split == "train" else None)
              for split, prompts in PROMPTS.items()}
    assert main(["make-noise-tasks", str(tmp_path / "out"), "--speech-train", str(speech["train"]),
                 "--speech-dev", str(speech["dev"]), "--speech-test", str(speech["test"]), "--source-types",
                 "white", "--target-types", "brown", "--snr-bands", "0-5"]) == 0
    broken, err = f"{SPEAKER}-en-broken", capsys.readouterr().err
    assert broken in err and str(tmp_path / "train" / "broken.wav") in err
    info = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert [s["utt"] for s in info["skipped"]] == [broken]
    for directory in data_dirs(tmp_path / "out"):
        assert not any(u.endswith(broken) for u in read_data_dir(directory).utterances)
    assert read_data_dir(tmp_path / "out" / "source" / "train").utterances  # the others are there


def test_failed_run_leaves_no_complete_looking_corpus(speech, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run_tool(out, speech, "--mini") == 0
    calls = []

    def failing(directory, mixes, rate):
        calls.append(directory)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write_split(directory, mixes, rate)

    write_split = noise_tasks.write_split
    monkeypatch.setattr(noise_tasks, "write_split", failing)
    assert run_tool(out, speech, "--mini") == 130
    assert not (out / "corpus.json").exists() and not list(out.rglob(".*.tmp*"))
