"""On-the-fly augmentation of training batches: stored features reproduced exactly, speed, noise at its SNR,
reverberation, seeded draws, SpecAugment bounds, config errors naming the key, and meta-train with augmentation
on that resumes exactly."""

import dataclasses
import json
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import soundfile
import torch

from metarecipe.cli.main import main
from metarecipe.config import ConfigError, load_config
from metarecipe.data import DataDir, Segment, write_data_dir
from metarecipe.errors import InputError
from metarecipe.features import FbankConfig, compute_fbank, compute_feats
from metarecipe.features.augment import AugmentConfig, Augmenter, Draw, SpecAugmentConfig, normalise, spec_augment
from metarecipe.features.fast_fbank import fast_fbank, fbank_function
from metarecipe.features.waveform import mix_at_snr, power, room_impulse_response
from metarecipe.io.model_files import load_model
from metarecipe.io.pools import load_feats, load_pools
from metarecipe.meta.experiment import MetaTrainExperiment
from metarecipe.meta.sampling import collate, make_augmenter
from metarecipe.text.tokens import TokenTable

RATE = 16000
TEXTS = ["ab ba", "ba ab ab", "abba"]


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A voiced sound with a gliding pitch, its harmonics and a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    pitch = np.cumsum(rng.uniform(90, 250) + 40 * np.sin(np.arange(n) / rate * 3)) / rate
    voice = sum(np.sin(2 * np.pi * k * pitch) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / rate + rng.uniform(0, 6))
    return (0.1 * voice * envelope + 0.002 * rng.standard_normal(n)).astype(np.float32)


def write_wav(path, samples, rate=RATE):
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two speakers; each has one 16-bit recording cut into three segments: real files and features."""
    tmp = tmp_path_factory.mktemp("augment")
    data = DataDir({}, {}, {}, segments={})
    for s, speaker in enumerate(("spka", "spkb")):
        data.wav_scp[f"{speaker}-rec"] = write_wav(tmp / f"{speaker}.wav", speechlike(3.6, RATE, s))
        for i in range(3):
            utt = f"{speaker}-rec-{i}"
            data.text[utt], data.utt2spk[utt] = TEXTS[i], speaker
            data.segments[utt] = Segment(f"{speaker}-rec", 1.2 * i, 1.2 * i + 1.1 + 0.1 * s)
    write_data_dir(data, tmp / "data")
    compute_feats(tmp / "data", nj=1, progress=False)
    return tmp / "data"


@pytest.fixture(scope="module")
def pools(data_dir):
    return load_pools([data_dir], TokenTable.from_texts(TEXTS), group_by="spk")


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    """One noise recording at 8 kHz (resampled to the features' rate when used) and a file that is no audio."""
    directory = tmp_path_factory.mktemp("noise")
    write_wav(directory / "hum.wav", (0.05 * np.random.default_rng(9).standard_normal(8000 * 2)), 8000)
    (directory / "README").write_text("not audio\n")
    return directory


def utterances(pools):
    return [u for name in sorted(pools) for u in pools[name]]


def test_the_waveform_path_without_perturbation_gives_the_stored_features(pools):
    augment = Augmenter(AugmentConfig())
    for utt in utterances(pools):
        samples = augment.perturbed(utt.source, Draw(1.0, False, False, False), np.random.default_rng(0))
        stored, stats, normalised = kaldiio.load_mat(utt.feats), kaldiio.load_mat(utt.cmvn), load_feats(utt).numpy()
        exact = compute_fbank(samples, utt.source.fbank)  # kaldi-native-fbank, which made the stored features
        assert np.array_equal(exact, stored)  # the same audio, the same settings
        assert np.array_equal(normalise(exact, stats, stored), normalised)  # no mean shift: the same normalisation
        fast = fbank_function(utt.source.fbank)(samples)  # what augmentation computes
        assert np.abs(fast - stored).max() < 2e-3 and np.abs(normalise(fast, stats, stored) - normalised).max() < 1e-3
    # the fast path (speed 1, nothing else drawn) is the stored features normalised, as without augmentation
    plain = collate([pools["spka"], pools["spkb"]])
    unperturbed = Augmenter(AugmentConfig(speed_factors=[1.0], spec_augment=None))
    assert not unperturbed.needs_audio
    assert torch.equal(collate([pools["spka"], pools["spkb"]], augment=unperturbed, rng=np.random.default_rng(0)).feats,
                       plain.feats)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_the_frame_count_by_one_over_the_factor(pools, factor):
    augment = make_augmenter(AugmentConfig(speed_factors=[factor], spec_augment=None), utterances(pools))
    for utt in utterances(pools):
        feats = augment.features(kaldiio.load_mat(utt.feats), kaldiio.load_mat(utt.cmvn), utt.source,
                                 np.random.default_rng(0))
        assert abs(feats.shape[0] - utt.frames / factor) <= 2
        # normalised with the speaker's statistics moved to this utterance's mean: its mean is the stored one's
        stored = load_feats(utt).numpy()
        assert np.allclose(feats.mean(axis=0), stored.mean(axis=0), atol=1e-4)


@pytest.mark.parametrize("config", [FbankConfig(), FbankConfig(num_mel_bins=40, sample_rate=8000),
                                    FbankConfig(num_mel_bins=64, sample_rate=22050, frame_length_ms=20.0,
                                                frame_shift_ms=12.5)])
def test_the_fast_fbank_gives_kaldi_native_fbanks_features(config):
    samples = speechlike(2.0, config.sample_rate, 4)
    samples[: config.sample_rate // 4] = 0.0  # digital silence too
    samples = np.round(samples * 32768) / 32768  # int16 values, as the audio cache keeps them
    reference = compute_fbank(samples, config)
    fast = fast_fbank(samples, config)
    assert fast.shape == reference.shape and fast.dtype == np.float32
    assert np.abs(fast - reference).max() < 2e-3
    assert fast_fbank(samples[: int(0.01 * config.sample_rate)], config).shape == (0, config.num_mel_bins)
    dithered = FbankConfig(dither=1.0)
    first, again = (fast_fbank(samples, dithered, np.random.default_rng(1)) for _ in range(2))
    assert np.array_equal(first, again) and not np.array_equal(first, fast_fbank(samples, FbankConfig()))


def test_noise_is_mixed_in_at_the_drawn_snr(pools, noise_dir):
    rng = np.random.default_rng(1)
    speech, noise = speechlike(1.0, RATE, 3), rng.standard_normal(RATE).astype(np.float32)
    for snr in (0.0, 7.5, 20.0):
        mixed = mix_at_snr(speech, noise, snr)
        assert 10 * np.log10(power(speech) / power(mixed - speech)) == pytest.approx(snr, abs=1e-3)
    utt = pools["spkb"][0]
    augment = make_augmenter(AugmentConfig(noise_dirs=[str(noise_dir)], noise_snr_db=[7.0, 7.0]), utterances(pools))
    clean = augment.audio.samples(utt.source, RATE)
    noisy = augment.perturbed(utt.source, Draw(1.0, True, False, False), rng)
    assert 10 * np.log10(power(clean) / power(noisy - clean)) == pytest.approx(7.0, abs=0.01)


def test_a_simulated_room_decays_by_60_db_in_rt60_with_the_drawn_direct_to_reverberant_ratio():
    response = room_impulse_response(RATE, 0.5, 6.0, np.random.default_rng(0))
    assert len(response) == RATE // 2 and response[0] == 1.0
    assert 10 * np.log10(1.0 / np.sum(response[1:].astype(np.float64) ** 2)) == pytest.approx(6.0, abs=1e-3)
    early, late = (np.mean(response[a:a + 800] ** 2) for a in (1, len(response) - 800))
    assert 10 * np.log10(early / late) > 40  # -60 dB over the tail, measured over 50 ms windows


def all_on(noise_dir) -> AugmentConfig:
    return AugmentConfig(noise_dirs=[str(noise_dir)], noise_prob=0.7, babble_prob=0.5, reverb_prob=0.5)


def test_the_same_seed_gives_the_same_batch_and_another_seed_another(pools, noise_dir):
    tasks = [pools["spka"], pools["spkb"]]
    augment = make_augmenter(all_on(noise_dir), utterances(pools))
    first = collate(tasks, augment=augment, rng=np.random.default_rng(5))
    # again with the audio cached, and with a new augmenter reading it afresh (a resumed run): the same
    again = collate(tasks, augment=augment, rng=np.random.default_rng(5))
    fresh = collate(tasks, augment=make_augmenter(all_on(noise_dir), utterances(pools)), rng=np.random.default_rng(5))
    other = collate(tasks, augment=augment, rng=np.random.default_rng(6))
    threads = torch.get_num_threads()
    try:  # one thread instead of several: the same
        torch.set_num_threads(1 if threads > 1 else 2)
        other_threads = make_augmenter(all_on(noise_dir), utterances(pools))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(collate(tasks, augment=other_threads, rng=np.random.default_rng(5)).feats, first.feats)
    for batch in (again, fresh):
        assert torch.equal(batch.feats, first.feats) and torch.equal(batch.lengths, first.lengths)
    assert not torch.equal(other.feats, first.feats)
    plain = collate(tasks)
    assert not torch.equal(first.feats, plain.feats)
    assert torch.equal(first.targets, plain.targets)


def test_a_small_audio_cache_gives_the_same_features(pools, noise_dir):
    tasks = [pools["spka"], pools["spkb"]]
    config = all_on(noise_dir)
    small = make_augmenter(dataclasses.replace(config, cache_mb=0.05), utterances(pools))
    reference = collate(tasks, augment=make_augmenter(config, utterances(pools)), rng=np.random.default_rng(3))
    assert torch.equal(collate(tasks, augment=small, rng=np.random.default_rng(3)).feats, reference.feats)
    assert 0 < small.audio.nbytes <= 0.05 * 2**20


@pytest.mark.parametrize("bins", [40, 80])
def test_spec_augment_masks_stay_within_their_share_of_bins_and_frames(bins):
    config = SpecAugmentConfig(freq_masks=2, max_freq_ratio=0.2, time_masks=2, max_time_ratio=0.1)
    feats = np.arange(300 * bins, dtype=np.float32).reshape(300, bins) + 1
    widest = (0, 0)
    for seed in range(40):
        out = spec_augment(feats, np.random.default_rng(seed), config, fill=0.0)
        masked = out == 0
        rows, cols = masked.all(axis=1), masked.all(axis=0)
        assert np.array_equal(masked, rows[:, None] | cols[None, :])  # whole rows and columns, nothing else
        assert np.array_equal(out[~masked], feats[~masked])
        assert cols.sum() <= 2 * int(0.2 * bins) and rows.sum() <= 2 * 30
        widest = max(widest[0], cols.sum()), max(widest[1], rows.sum())
    assert widest[0] > int(0.2 * bins) and widest[1] > 30  # the bounds are reached, not far off
    assert np.array_equal(spec_augment(feats, np.random.default_rng(3), config, 0.0),
                          spec_augment(feats, np.random.default_rng(3), config, 0.0))


@pytest.mark.parametrize("override, message", [
    ("augment.noise_prob=1.5", "augment.noise_prob: must lie in [0, 1], got 1.5"),
    ("augment.speed_factors=[]", "augment.speed_factors: must be a non-empty list of factors in [0.5, 2]"),
    ("augment.speed_factors=[3.0]", "augment.speed_factors: must be a non-empty list"),
    ("augment.noise_snr_db=[20, 5]", "augment.noise_snr_db: must be [min, max] with"),
    ("augment.reverb_rt60=[0.5]", "augment.reverb_rt60: must be [min, max]"),
    ("augment.spec_augment.max_freq_ratio=2", "augment.spec_augment.max_freq_ratio: must lie in [0, 1]"),
    ("augment.spec_augment.time_masks=-1", "augment.spec_augment.time_masks: must be at least 0"),
    ("augment.babble_utts=0", "augment.babble_utts: must be at least 1"),
    ("augment.speed=[0.9]", "unknown key 'augment.speed'"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(MetaTrainExperiment, overrides=["data.train=[x]", override])
    assert message in str(err.value)


def test_missing_noise_dirs_and_dirs_without_audio_are_config_errors(tmp_path, pools):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here\n")
    for directory, reason in ((tmp_path / "nowhere", "no such directory"), (tmp_path / "empty", "holds no audio")):
        with pytest.raises(ConfigError, match=rf"augment.noise_dirs\[0\]: {directory}: {reason}"):
            make_augmenter(AugmentConfig(noise_dirs=[str(directory)]), utterances(pools))
    assert make_augmenter(AugmentConfig(enabled=False, noise_dirs=[str(tmp_path / "nowhere")]), []) is None


def meta_train_args(data_dir, exp, steps=6, *changes):
    return ["meta-train", "--exp-dir", str(exp), f"data.train=[{data_dir}]", "data.group_by=spk",
            "algorithm=fomaml", f"train.steps={steps}", "train.tasks_per_batch=2", "train.support_seconds=1.0",
            "train.query_seconds=1.0", "train.eval_batches=0", "train.meta_lr=0.01", "checkpoint_every=2",
            "keep_checkpoints=2", "model.conv_channels=4", "model.d_model=16", "model.gru_hidden=8",
            "model.gru_layers=1", *changes]


def final_params(exp):
    model, _, _ = load_model(exp / "final.pt")
    return {n: p.detach() for n, p in model.params.items()}


def metrics(exp_dir) -> list[dict]:
    """The metrics lines of a run without their train_seconds (wall time)."""
    return [{k: v for k, v in json.loads(line).items() if k != "train_seconds"}
            for line in (exp_dir / "metrics.jsonl").read_text().splitlines()]


def test_meta_train_with_every_augmentation_resumes_exactly(data_dir, noise_dir, tmp_path, capsys):
    on = [f"augment.noise_dirs=[{noise_dir}]", "augment.babble_prob=0.5", "augment.reverb_prob=0.5"]
    reference, resumed, off = tmp_path / "reference", tmp_path / "resumed", tmp_path / "off"
    assert main(meta_train_args(data_dir, reference, 6, *on)) == 0
    assert main(meta_train_args(data_dir, resumed, 3, *on)) == 0  # stopped after step 3, then more steps
    assert main(meta_train_args(data_dir, resumed, 6, *on)) == 0
    expected, found = final_params(reference), final_params(resumed)
    assert all(torch.equal(found[n], p) for n, p in expected.items())
    assert metrics(resumed) == metrics(reference)
    assert main(meta_train_args(data_dir, off, 6, "augment.enabled=false")) == 0
    losses = [[json.loads(line).get("loss") for line in (exp / "metrics.jsonl").read_text().splitlines()[1:]]
              for exp in (reference, off)]
    assert losses[0] != losses[1]  # the augmented batches are other batches


def test_meta_train_refuses_features_without_their_fbank_record_only_when_augmenting(tmp_path):
    data = DataDir({}, {}, {})
    for i in range(4):
        utt = f"spk{i % 2}-u{i}"
        data.wav_scp[utt] = write_wav(tmp_path / f"{utt}.wav", speechlike(1.0, RATE, i))
        data.text[utt], data.utt2spk[utt] = TEXTS[i % 3], f"spk{i % 2}"
    write_data_dir(data, tmp_path / "data")
    compute_feats(tmp_path / "data", nj=1, config=FbankConfig(num_mel_bins=40), progress=False)
    record = tmp_path / "data" / "fbank" / "fbank.json"
    record.unlink()  # features of an earlier version
    args = meta_train_args(tmp_path / "data", tmp_path / "exp", 2, "model.num_mel_bins=40",
                           "train.support_seconds=0.5", "train.query_seconds=0.5")
    result = subprocess.run([sys.executable, "-m", "metarecipe", *args], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"{record}: missing" in result.stderr
    assert "compute-feats" in result.stderr and not (tmp_path / "exp").exists()
    assert main(args + ["augment.speed_factors=[1.0]"]) == 0  # SpecAugment alone needs no audio
    assert main(args[:2] + [str(tmp_path / "exp2")] + args[3:] + ["augment.enabled=false"]) == 0


def test_augmentation_needs_every_audio_file_before_any_work(pools, tmp_path):
    utt = utterances(pools)[0]
    gone = type(utt)(utt.utt, utt.feats, utt.frames, utt.targets, utt.cmvn,
                     type(utt.source)(str(tmp_path / "gone.wav"), 0.0, -1.0, utt.source.fbank))
    with pytest.raises(InputError, match=f"{tmp_path / 'gone.wav'}: no such file .*utterance '{utt.utt}'"):
        make_augmenter(AugmentConfig(), [gone])
    assert make_augmenter(AugmentConfig(speed_factors=[1.0]), [gone]) is not None
