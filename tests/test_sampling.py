"""Tokens, task pools from data directories with features, task samplers and support/query sets."""

import kaldiio
import numpy as np
import pytest
import torch
from test_commonvoice import make_release

from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.features import FbankConfig, compute_feats
from metarecipe.features.augment import AudioSource, AugmentConfig
from metarecipe.features.cmvn import apply_cmvn
from metarecipe.io.pools import load_pools
from metarecipe.meta import InnerLoop, MetaBatch, make_algorithm
from metarecipe.meta.sampling import TaskSampler, collate, draw_meta_batch, draw_seconds, make_augmenter
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


def test_token_table_round_trips_and_encodes(tmp_path):
    table = TokenTable.from_texts(["straße eins", "l'eau"])
    assert table.symbols[:3] == ["<blk>", "<space>", "<unk>"] and "ß" in table.symbols
    table.write(tmp_path / "tokens.txt")
    again = TokenTable.read(tmp_path / "tokens.txt")
    assert again.symbols == table.symbols
    ids = again.encode("eins  straße x")
    assert again.decode(ids) == "eins straße <unk>" and ids.count(again.ids["<space>"]) == 2
    (tmp_path / "bad.txt").write_text("<blk> 0\n<space> 2\n")
    with pytest.raises(ValueError, match="bad.txt:2: expected '<symbol> 1'"):
        TokenTable.read(tmp_path / "bad.txt")


@pytest.fixture
def featurised(tmp_path):
    written = get_corpus("commonvoice")(make_release(tmp_path / "cv", "cv-21.0"), tmp_path / "data")
    for path in written.values():
        compute_feats(path, nj=1, progress=False)
    return written


def test_pools_samplers_and_support_query_sets_feed_a_meta_step(featurised):
    texts = [t for p in featurised.values() for t in read_data_dir(p).text.values()]
    tokens = TokenTable.from_texts(texts)
    by_speaker = load_pools([featurised["de/train"], featurised["de/dev"]], tokens, group_by="spk")
    assert sorted(by_speaker) == ["aa11", "bb22", "cc33"]
    assert load_pools([featurised["de/train"]], tokens).keys() == {"de"}

    sizes = {name: sum(u.frames for u in pool) for name, pool in by_speaker.items()}
    uniform = TaskSampler(by_speaker, "uniform")
    proportional = TaskSampler(by_speaker, "proportional")
    tempered = TaskSampler(by_speaker, "temperature", temperature=2.0)
    assert np.allclose(uniform.probabilities, 1 / 3)
    expected = np.array([sizes[n] for n in proportional.names]) / sum(sizes.values())
    assert np.allclose(proportional.probabilities, expected)
    assert all(min(u, p) - 1e-12 <= t <= max(u, p) + 1e-12 for u, p, t in
               zip(uniform.probabilities, proportional.probabilities, tempered.probabilities, strict=True))

    rng = np.random.default_rng(0)
    names = uniform.sample(2, rng)
    assert len(set(names)) == 2
    supports = [draw_seconds(by_speaker[n], 0.5, rng) for n in names]
    queries = [draw_seconds(by_speaker[n], 0.5, rng, exclude={u.utt for u in s})
               for n, s in zip(names, supports, strict=True)]
    assert all(not {u.utt for u in s} & {u.utt for u in q} for s, q in zip(supports, queries, strict=True))
    support = collate(supports, 1)
    assert support.feats.shape[:2] == (2, 1) and support.feats.shape[-1] == 80
    first = supports[0][0]
    raw = kaldiio.load_mat(first.feats)
    normalised = support.feats[0, 0, : first.frames]
    assert first.cmvn is not None and normalised.shape == raw.shape  # per-speaker CMVN applied
    torch.testing.assert_close(normalised, torch.tensor(apply_cmvn(raw, kaldiio.load_mat(first.cmvn))))
    assert not torch.allclose(normalised, torch.tensor(raw))
    assert support.targets[0, 0, : len(first.targets)].tolist() == first.targets

    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=8,
                                        gru_layers=1))
    loss, grads = make_algorithm("maml", model, InnerLoop(lr=0.1)).meta_gradient(
        MetaBatch(support, collate(queries, 1)))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


def test_augmented_meta_batches_choose_the_same_utterances_and_carry_other_features(featurised):
    texts = [t for p in featurised.values() for t in read_data_dir(p).text.values()]
    pools = load_pools([featurised["de/train"]], TokenTable.from_texts(texts), group_by="spk")
    data = read_data_dir(featurised["de/train"])
    for utt in (u for pool in pools.values() for u in pool):
        assert utt.source == AudioSource(data.wav_scp[utt.utt], 0.0, -1.0, FbankConfig())
    augment = make_augmenter(AugmentConfig(speed_factors=[0.9, 1.1]), [u for p in pools.values() for u in p])
    plain = draw_meta_batch(pools, ["aa11", "bb22"], 0.4, 0.4, np.random.default_rng(4))
    augmented = draw_meta_batch(pools, ["aa11", "bb22"], 0.4, 0.4, np.random.default_rng(4), augment)
    for before, after in ((plain.support, augmented.support), (plain.query, augmented.query)):
        assert torch.equal(before.targets, after.targets)  # the same utterances, drawn before any augmentation
        assert not torch.equal(before.lengths, after.lengths)  # at another speed: other frame counts
    with pytest.raises(ValueError, match="give rng"):
        collate([pools["aa11"]], augment=augment)
