"""train-lm -> decode -> score on a real data directory (mp3 clips, fbank features) with a saved model file."""

import json

import pytest
import torch
from test_commonvoice import make_release

from metarecipe.cli.main import main
from metarecipe.data import read_data_dir
from metarecipe.data.corpora import get_corpus
from metarecipe.decode.decoder import decode, log_probs_of
from metarecipe.features import compute_feats
from metarecipe.io.model_files import load_model, save_model
from metarecipe.io.pools import load_pools
from metarecipe.kernels.beam_search import BeamSearchOptions
from metarecipe.models import BatchedCTCModel, ModelConfig
from metarecipe.text.tokens import TokenTable


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A data dir with features, a small model file and a word LM trained on the transcripts."""
    tmp = tmp_path_factory.mktemp("decode")
    data = get_corpus("commonvoice")(make_release(tmp / "cv", "cv-21.0"), tmp / "data", splits=("train",))["de/train"]
    compute_feats(data, nj=1, progress=False)
    texts = read_data_dir(data).text
    tokens = TokenTable.from_texts(texts.values())
    torch.manual_seed(0)
    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=4, d_model=16, gru_hidden=8,
                                        gru_layers=1))
    save_model(tmp / "model.pt", model, tokens, {"note": "untrained"})
    (tmp / "lm.txt").write_text("".join(f"{t}\n" for t in texts.values()), encoding="utf-8")
    assert main(["train-lm", "--text", str(tmp / "lm.txt"), "--order", "2", "--out", str(tmp / "lm.arpa")]) == 0
    return tmp, data, tokens


def read_table(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict((line.split(" ", 1) + [""])[:2] for line in lines)


def test_model_file_round_trips(setup):
    tmp, data, tokens = setup
    model, loaded_tokens, info = load_model(tmp / "model.pt")
    assert loaded_tokens.symbols == tokens.symbols and info == {"note": "untrained"}
    (tmp / "broken.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="broken.pt: not a readable model file"):
        load_model(tmp / "broken.pt")


def test_decode_writes_the_search_results_and_scores(setup, capsys):
    tmp, data, tokens = setup
    out = tmp / "decode_lm"
    args = ["decode", str(tmp / "model.pt"), str(data), str(out), "--lm", str(tmp / "lm.arpa"), "--beam", "8",
            "--nbest", "3", "--lm-weight", "0.5", "--insertion-bonus", "1.0"]
    assert main(args) == 0
    hyps = read_table(out / "hyp")
    assert set(hyps) == set(read_data_dir(data).text)
    # the CLI's best hypotheses are the search's, run here directly on the same model outputs
    model, _, _ = load_model(tmp / "model.pt")
    from metarecipe.decode.lm_tables import lm_tables
    from metarecipe.text.lm import NGramLM

    tables = lm_tables(NGramLM.read_arpa(tmp / "lm.arpa"), tokens, "word")
    utts = load_pools([data], tokens)["de"]
    direct = decode(log_probs_of(model, utts), tokens, BeamSearchOptions(beam=8, nbest=3, lm_weight=0.5,
                                                                         insertion_bonus=1.0), tables)
    for utt, nbest in direct.items():
        assert hyps[utt] == " ".join(tokens.decode(nbest[0].tokens).split())
    ranks = [line.split()[:3] for line in (out / "nbest").read_text(encoding="utf-8").splitlines()]
    for (utt, rank, score), (utt2, rank2, score2) in zip(ranks, ranks[1:], strict=False):
        if utt == utt2:
            assert int(rank2) == int(rank) + 1 and float(score2) <= float(score)
    summary = json.loads((out / "decode.json").read_text())
    assert summary["utterances"] == len(hyps) and summary["options"]["beam"] == 8
    assert main(["score", "--ref", str(data / "text"), "--hyp", str(out / "hyp"), "--out-dir", str(out)]) == 0
    assert "%WER" in capsys.readouterr().out and (out / "wer").exists()


def test_greedy_decode_and_bad_inputs(setup, capsys):
    tmp, data, _ = setup
    assert main(["decode", str(tmp / "model.pt"), str(data), str(tmp / "greedy"), "--greedy"]) == 0
    assert len(read_table(tmp / "greedy" / "hyp")) == len(read_data_dir(data).text)
    assert main(["decode", str(tmp / "missing.pt"), str(data), str(tmp / "x")]) == 1
    assert "missing.pt: not a readable model file" in capsys.readouterr().err
    (tmp / "bad.arpa").write_text("\\data\\\nngram 1=x\n", encoding="utf-8")
    assert main(["decode", str(tmp / "model.pt"), str(data), str(tmp / "x"), "--lm", str(tmp / "bad.arpa")]) == 1
    assert "bad.arpa" in capsys.readouterr().err
