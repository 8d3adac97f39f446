"""metarecipe.compress.onnx_export and `metarecipe export --onnx`: the ONNX models against the torch model in
onnxruntime (log-probabilities, lengths, greedy hypotheses), int8, the files the command writes, bad input."""

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from metarecipe.cli.main import main
from metarecipe.compress.export import export_compact, model_from_compact
from metarecipe.compress.onnx_export import (
    ExportError,
    export_float32,
    onnx_log_probs,
    onnx_session,
    quantize_int8,
    subsampled_lengths,
    verify_export,
)
from metarecipe.decode.greedy import greedy_decode
from metarecipe.decode.scoring import error_rate
from metarecipe.features.fbank import FbankConfig
from metarecipe.features.frontend import Frontend
from metarecipe.io.model_files import read_model_file, save_model
from metarecipe.models import batched_ops as ops
from metarecipe.models.ctc_model import BatchedCTCModel, ModelConfig
from metarecipe.models.progressive import ProgressiveCTCModel
from metarecipe.text.tokens import TokenTable

TOKENS = TokenTable(["<blk>", "<space>", "<unk>"] + list("abcdefghij"))
ENCODERS = {"gru": dict(encoder="gru", gru_hidden=8, gru_layers=1),  # one layer traces in half the time
            "transformer": dict(encoder="transformer", transformer_layers=2, attention_heads=2, feedforward_dim=32)}


def small_model(seed=0, encoder="gru", head_scale=1.0, **overrides) -> BatchedCTCModel:
    """A random model; head_scale > 1 sharpens its outputs (fewer near-ties between best tokens)."""
    torch.manual_seed(seed)
    config = dict(vocab_size=len(TOKENS), num_mel_bins=20, conv_channels=4, d_model=16, **ENCODERS[encoder])
    model = BatchedCTCModel(ModelConfig(**{**config, **overrides})).eval()
    with torch.no_grad():
        model.params["head_weight"].mul_(head_scale)
    return model


def random_batch(seed, lengths):
    """Fresh features (B, T, 20) and lengths (B,), another batch size and length than the exporter traces."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), 20, generator=g), torch.tensor(lengths)


def valid_frames(log_probs, lengths):
    return torch.arange(log_probs.shape[1])[None, :] < lengths[:, None]


def test_output_lengths_are_the_training_models():
    lengths = torch.arange(0, 40)
    assert torch.equal(subsampled_lengths(lengths), ops.subsampled_lengths(lengths))


@pytest.mark.parametrize("encoder,opset,layers", [("gru", 17, 2), ("gru", 13, 1), ("transformer", 17, 2)])
def test_float32_onnx_matches_the_torch_model(encoder, opset, layers):
    model = small_model(1, encoder, head_scale=4.0, gru_layers=layers, transformer_layers=layers)
    session = onnx_session(export_float32(model, opset))
    feats, lengths = random_batch(2, (123, 97, 40, 18, 5))  # the last one leaves no output frame
    got, got_lengths = onnx_log_probs(session, feats, lengths)
    with torch.no_grad():
        want, want_lengths = model(feats, lengths)
    assert torch.equal(got_lengths, want_lengths) and got_lengths[-1] == 0
    # every frame, padding too: the backward GRU starts at each utterance's last valid frame
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    hyps = greedy_decode(got, got_lengths)
    assert hyps == greedy_decode(want, want_lengths) and any(hyps)
    alone, alone_lengths = onnx_log_probs(session, feats[2:3, :40], lengths[2:3])  # no padding around it
    torch.testing.assert_close(alone[0], got[2, :alone_lengths[0]], atol=1e-5, rtol=0)


def synthetic(seed, count):
    """Utterances of 2 to 6 letters, each shown by two raised feature bins after a silence: features (B, T, 20),
    lengths (B,) and the letters' token ids."""
    g = torch.Generator().manual_seed(seed)
    feats, letters = [], []
    for _ in range(count):
        ids = torch.randint(3, len(TOKENS), (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
        parts = []
        for token in ids:
            part = torch.zeros(8 + int(torch.randint(12, 21, (1,), generator=g)), 20)
            part[8:, 2 * (token - 3):2 * (token - 2)] = 3.0
            parts.append(part)
        x = torch.cat(parts + [torch.zeros(8, 20)])
        feats.append(x + 0.5 * torch.randn(x.shape, generator=g))
        letters.append(ids)
    lengths = torch.tensor([len(x) for x in feats])
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths, letters


@pytest.fixture(scope="module", params=["gru", "transformer"])
def trained(request):
    """A small model trained with CTC on synthetic letters until it reads them (a second or two on 1 thread):
    confident outputs, where int8 rounding flips a best token only near real ties."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = small_model(0, request.param, d_model=32, gru_hidden=32, feedforward_dim=64).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-2 if request.param == "gru" else 1e-2)
        for step in range(80):
            feats, lengths, letters = synthetic(step, 8)
            log_probs, out_lengths = model(feats, lengths)
            loss = F.ctc_loss(log_probs.transpose(0, 1), torch.tensor(sum(letters, [])), out_lengths,
                              torch.tensor([len(ids) for ids in letters]), zero_infinity=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_int8_onnx_has_int8_weights_and_mostly_agrees(trained):
    float32 = export_float32(trained)
    int8 = quantize_int8(float32)
    proto = onnx.load_from_string(int8)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in proto.graph.initializer)
    constants = {init.name for init in proto.graph.initializer}
    assert not any(node.op_type == "MatMul" and node.input[1] in constants for node in proto.graph.node)
    feats, lengths, letters = synthetic(10_000, 12)
    with torch.no_grad():
        want, want_lengths = trained(feats, lengths)
    reference = greedy_decode(want, want_lengths)
    assert error_rate(zip(letters, reference, strict=True)).rate < 20  # it reads the letters
    got, got_lengths = onnx_log_probs(onnx_session(float32), feats, lengths)
    assert greedy_decode(got, got_lengths) == reference
    got, got_lengths = onnx_log_probs(onnx_session(int8), feats, lengths)
    assert torch.equal(got_lengths, want_lengths)
    mask = valid_frames(got, got_lengths)
    assert (got[mask] - want[mask]).abs().max() > 1e-3  # quantized, not the float32 model again
    assert (got[mask].argmax(-1) == want[mask].argmax(-1)).float().mean() > 0.95
    same = [a == b for a, b in zip(greedy_decode(got, got_lengths), reference, strict=True)]
    assert sum(same) >= 10


def test_verification_fails_on_a_model_that_is_not_the_exported_one():
    model, other = small_model(5), small_model(6)
    float32 = export_float32(model)
    report = verify_export(model, float32, None)
    assert report["float32"]["max_abs_diff"] < 1e-4 and report["int8"] is None
    with pytest.raises(ExportError, match="differ from the torch model's by .* nothing was written"):
        verify_export(other, float32, None)


def read_export(out):
    return json.loads((out / "export.json").read_text(encoding="utf-8"))


def test_cli_writes_the_models_tokens_and_export_json(tmp_path, capsys):
    model = small_model(7, head_scale=4.0)
    frontend = Frontend(FbankConfig(num_mel_bins=20), "speaker", np.arange(42.0).reshape(2, 21))
    save_model(tmp_path / "model.pt", model, TOKENS, {"note": "random"}, frontend)
    out = tmp_path / "onnx"
    assert main(["export", str(tmp_path / "model.pt"), str(out), "--onnx", "--threads", "2"]) == 0
    assert "model.onnx matches the torch model" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.onnx", "model.onnx", "tokens.txt"]
    assert TokenTable.read(out / "tokens.txt").symbols == TOKENS.symbols
    summary = read_export(out)
    assert summary["model"] == str(tmp_path / "model.pt") and summary["opset"] == 17
    assert summary["frontend"]["cmvn"] == "speaker" and summary["frontend"]["global_stats"][1][0] == 21.0
    assert [x["name"] for x in summary["inputs"]] == ["feats", "lengths"]
    assert [x["name"] for x in summary["outputs"]] == ["log_probs", "out_lengths"]
    assert summary["outputs"][0]["shape"] == ["batch", "out_frames", len(TOKENS)]
    check = summary["verification"]
    assert check["threads"] == 2 and check["float32"]["max_abs_diff"] < 1e-4 and len(set(check["lengths"])) > 1
    assert 0 < check["int8"]["max_abs_diff"] and 0.5 < check["int8"]["argmax_agreement"] <= 1
    for kind, name in (("float32", "model.onnx"), ("int8", "model.int8.onnx")):
        assert summary["files"][kind]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert summary["files"]["int8"]["weights"]["int8"] > 0 and "int8" not in summary["files"]["float32"]["weights"]
    # the written file, run from its path on fresh input, is the model
    feats, lengths = random_batch(8, (77, 52, 12))
    got, got_lengths = onnx_log_probs(onnx_session(out / "model.onnx"), feats, lengths)
    with torch.no_grad():
        want, want_lengths = model(feats, lengths)
    assert greedy_decode(got, got_lengths) == greedy_decode(want, want_lengths)
    # --no-int8 leaves no int8 model of the earlier export behind
    assert main(["export", str(tmp_path / "model.pt"), str(out), "--onnx", "--no-int8", "--opset", "18"]) == 0
    assert not (out / "model.int8.onnx").exists()
    summary = read_export(out)
    assert list(summary["files"]) == ["float32"] and summary["verification"]["int8"] is None
    assert summary["files"]["float32"]["opsets"] == {"ai.onnx": 18}


def test_cli_exports_a_compact_model_from_its_dequantized_weights(tmp_path):
    model = small_model(9, head_scale=4.0)
    export_compact(model, TOKENS, tmp_path / "compact.pt", int8=True)
    out = tmp_path / "onnx"
    assert main(["export", str(tmp_path / "compact.pt"), str(out), "--onnx", "--no-int8"]) == 0
    assert read_export(out)["compact"] is True
    dequantized = model_from_compact(read_model_file(tmp_path / "compact.pt").model)
    feats, lengths = random_batch(10, (64, 41))
    got, _ = onnx_log_probs(onnx_session(out / "model.onnx"), feats, lengths)
    with torch.no_grad():
        want, _ = dequantized(feats, lengths)
        float_weights, _ = model(feats, lengths)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert (got - float_weights).abs().max() > 1e-4  # the int8 weights, not the originals


def test_cli_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    out = tmp_path / "onnx"
    assert main(["export", str(tmp_path / "broken.pt"), str(out), "--onnx"]) == 1
    assert f"{tmp_path / 'broken.pt'}: not a readable model file" in capsys.readouterr().err
    save_model(tmp_path / "progressive.pt", ProgressiveCTCModel([small_model(11)]), TOKENS)
    assert main(["export", str(tmp_path / "progressive.pt"), str(out), "--onnx"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'progressive.pt'}: a ProgressiveCTCModel" in err and "cannot be exported to ONNX" in err
    save_model(tmp_path / "model.pt", small_model(12), TOKENS)
    for option, text in (("--opset=9", "--opset 9: choose 13 to 20"), ("--threads=0", "--threads must be"),
                         ("--tolerance=0", "--tolerance must be")):
        assert main(["export", str(tmp_path / "model.pt"), str(out), "--onnx", option]) == 1
        assert text in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):  # a format must be chosen
        main(["export", str(tmp_path / "model.pt"), str(out)])
