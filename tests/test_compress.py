"""metarecipe.compress and the compact runtime (metarecipe.kernels.compact): pruning, int8, export, the runtime
against the float64 reference, a fresh process with only torch and metarecipe.kernels, bad input, the CLI."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from test_commonvoice import make_release

from metarecipe.cli.main import main
from metarecipe.compress import CompressConfig, compress_model, export_compact, magnitude_masks, prune_structured
from metarecipe.compress.distill import distillation_losses, masked_kl
from metarecipe.compress.quantize import quantize_per_channel
from metarecipe.data.corpora import get_corpus
from metarecipe.decode.decoder import best_texts, decode, log_probs_of
from metarecipe.features import compute_feats
from metarecipe.io.model_files import save_model
from metarecipe.io.pools import load_pools
from metarecipe.kernels.beam_search import BeamSearchOptions
from metarecipe.kernels.compact import expected_shapes, load_compact, pack_bits, seal, unpack_bits
from metarecipe.meta.adapt import AdaptConfig
from metarecipe.meta.sampling import collate
from metarecipe.meta.tasks import task_losses
from metarecipe.models import BatchedCTCModel, ModelConfig, ProgressiveCTCModel
from metarecipe.models.ctc_model import ctc_forward, parameter_shapes
from metarecipe.text.tokens import TokenTable

TOKENS = TokenTable(["<blk>", "<space>", "<unk>"] + list("abcdefghij"))


def small_model(seed=0, **overrides) -> BatchedCTCModel:
    torch.manual_seed(seed)
    config = dict(vocab_size=len(TOKENS), num_mel_bins=20, conv_channels=4, d_model=12, gru_hidden=8, gru_layers=2)
    return BatchedCTCModel(ModelConfig(**{**config, **overrides})).eval()


def random_batch(seed=1, lengths=(57, 40, 23)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), 20, generator=g), torch.tensor(lengths)


def reference_log_probs(model: BatchedCTCModel, feats, lengths):
    """The training model's forward in float64, the GRU op by op."""
    params = {n: p.detach().double().unsqueeze(0) for n, p in model.params.items()}
    log_probs, out_lengths = ctc_forward(model.config, params, feats.double().unsqueeze(0), lengths.unsqueeze(0),
                                         gru_backend="reference")
    return log_probs[0], out_lengths[0]


def valid_frames(log_probs, lengths):
    return torch.arange(log_probs.shape[1])[None, :] < lengths[:, None]


def test_expected_shapes_are_the_training_models():
    for cfg in (ModelConfig(vocab_size=7), ModelConfig(vocab_size=9, num_mel_bins=40, gru_layers=3, gru_hidden=5)):
        compact_config = {k: getattr(cfg, k) for k in ("num_mel_bins", "conv_channels", "d_model", "gru_hidden",
                                                       "gru_layers", "vocab_size")}
        assert expected_shapes(compact_config) == parameter_shapes(cfg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_float32_matches_the_float64_reference(tmp_path, seed):
    model = small_model(seed)
    feats, lengths = random_batch(seed + 10, lengths=(31 + 13 * seed, 64, 17))
    export_compact(model, TOKENS, tmp_path / "m.pt")
    compact = load_compact(tmp_path / "m.pt")
    got, got_lengths = compact.log_probs(feats, lengths)
    want, want_lengths = reference_log_probs(model, feats, lengths)
    assert torch.equal(got_lengths, want_lengths)
    mask = valid_frames(got, got_lengths)
    torch.testing.assert_close(got[mask].double(), want[mask], atol=2e-5, rtol=1e-5)


def test_compact_int8_stays_close_to_the_float64_reference_of_its_weights(tmp_path):
    model = small_model(3, d_model=64, gru_hidden=48)
    feats, lengths = random_batch(4, lengths=(80, 51, 33))
    compact = export_compact(model, TOKENS, tmp_path / "m8.pt", int8=True)
    assert compact.int8 == sorted(n for n in model.params if n.endswith(("proj_weight", "head_weight", "_w_ih",
                                                                         "_w_hh")))
    dequantized = small_model(3, d_model=64, gru_hidden=48)
    with torch.no_grad():
        for name, p in dequantized.params.items():
            p.copy_(compact.values[name])
    got, got_lengths = compact.log_probs(feats, lengths)
    want, _ = reference_log_probs(dequantized, feats, lengths)
    mask = valid_frames(got, got_lengths)
    error = (got[mask].double() - want[mask]).abs()
    assert error.max() < 0.05 and error.mean() < 0.01, error  # the activations' dynamic int8 quantization


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (16, 9, 2)])
def test_bit_packing_round_trips(shape):
    mask = torch.rand(shape) > 0.4
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_bits(packed, shape), mask)


def test_per_channel_int8_quantization():
    weight = torch.randn(30, 6) * torch.tensor([1.0, 0.01, 5.0, 0.0, 2.0, 0.3])
    values, scale = quantize_per_channel(weight)
    assert values.dtype == torch.int8 and scale.shape == (6,)
    assert torch.all((values.float() * scale - weight).abs() <= scale / 2 + 1e-7)
    assert values.abs().amax(0).tolist() == [127, 127, 127, 0, 127, 127] and scale[3] == 1


def test_global_magnitude_masks():
    params = dict(small_model(5).params)
    masks = magnitude_masks(params, 0.6)
    total = sum(m.numel() for m in masks.values())
    kept = torch.cat([params[n].detach().abs()[m] for n, m in masks.items()])
    pruned = torch.cat([params[n].detach().abs()[~m] for n, m in masks.items()])
    assert abs(pruned.numel() / total - 0.6) < 0.01 and kept.min() >= pruned.max()  # one global threshold
    assert not any(n.endswith("bias") or n.startswith("norm") for n in masks)
    assert all(m.all() for m in magnitude_masks(params, 0.0).values())
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
            magnitude_masks(params, bad)


def test_structured_pruning_removes_the_weakest_units_and_shrinks_the_matrices():
    model = small_model(6)
    with torch.no_grad():  # units 1 and 3 of gru0_fw get tiny incoming weights: they must go
        for name in ("gru0_fw_w_ih", "gru0_fw_w_hh"):
            for unit in (1, 3):
                model.params[name][:, unit::8] *= 1e-3
    pruned = prune_structured(model, keep_units=0.75, keep_channels=0.5)
    assert (pruned.config.gru_hidden, pruned.config.d_model, pruned.config.conv_channels) == (6, 9, 2)
    kept = torch.tensor([0, 2, 4, 5, 6, 7])
    gates = torch.cat([kept, kept + 8, kept + 16])
    assert torch.equal(pruned.params["gru0_fw_w_hh"], model.params["gru0_fw_w_hh"][kept][:, gates])
    assert sum(p.numel() for p in pruned.params.values()) < 0.6 * sum(p.numel() for p in model.params.values())
    feats, lengths = random_batch()
    assert pruned(feats, lengths)[0].shape[-1] == len(TOKENS)
    same = prune_structured(model, 1.0, 1.0)
    assert all(torch.equal(same.params[n], p) for n, p in model.params.items())


def test_int8_and_sparse_exports_are_smaller(tmp_path):
    model = small_model(7, d_model=64, gru_hidden=64)
    export_compact(model, TOKENS, tmp_path / "fp32.pt")
    export_compact(model, TOKENS, tmp_path / "int8.pt", int8=True)
    with torch.no_grad():
        for name, mask in magnitude_masks(dict(model.params), 0.5).items():
            model.params[name].mul_(mask)
    sparse = export_compact(model, TOKENS, tmp_path / "sparse_int8.pt", int8=True)
    size = {name: (tmp_path / f"{name}.pt").stat().st_size for name in ("fp32", "int8", "sparse_int8")}
    assert size["int8"] < 0.3 * size["fp32"] and size["sparse_int8"] < 0.8 * size["int8"]
    reloaded = load_compact(tmp_path / "sparse_int8.pt")
    assert all(torch.equal(reloaded.values[n], v) for n, v in sparse.values.items())


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import torch
    import metarecipe.kernels
    from metarecipe.kernels.compact import load_compact
    model = load_compact(sys.argv[1])
    feats, lengths = torch.load(sys.argv[2], weights_only=True)
    texts = model.recognize(feats, lengths, metarecipe.kernels.BeamSearchOptions(beam=4))
    print(json.dumps({"texts": texts, "modules": sorted(m for m in sys.modules if m.startswith("metarecipe"))}))
""")


@pytest.mark.parametrize("int8", [False, True])
def test_exported_model_decodes_the_same_in_a_fresh_process_with_only_torch_and_kernels(tmp_path, int8):
    model = small_model(8)
    feats, lengths = random_batch(9, lengths=(90, 71, 44, 60))
    compact = export_compact(model, TOKENS, tmp_path / "model.pt", int8=int8)
    torch.save((feats, lengths), tmp_path / "feats.pt")
    (tmp_path / "run.py").write_text(FRESH_PROCESS)
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "model.pt"),
                           str(tmp_path / "feats.pt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert all(m in ("metarecipe", "metarecipe._C", "metarecipe.errors") or m.startswith("metarecipe.kernels")
               for m in found["modules"]), found["modules"]
    options = BeamSearchOptions(beam=4)
    assert found["texts"] == compact.recognize(feats, lengths, options)  # the model before export
    assert sum(1 for t in found["texts"] if t) >= 3  # an untrained model still emits tokens: a sensitive check
    if not int8:  # the float32 export decodes as the training model does
        with torch.no_grad():
            log_probs, out_lengths = model(feats, lengths)
        scores = {str(i): log_probs[i, :out_lengths[i]] for i in range(len(lengths))}
        texts = best_texts(decode(scores, TOKENS, options), TOKENS)
        assert found["texts"] == [texts[str(i)] for i in range(len(lengths))]


def test_bad_input_fails_before_any_work(tmp_path):
    out = tmp_path / "out.pt"
    save_model(tmp_path / "tf.pt", small_model(encoder="transformer", d_model=16, attention_heads=2,
                                               transformer_layers=1), TOKENS)
    save_model(tmp_path / "pnn.pt", ProgressiveCTCModel([small_model()]), TOKENS)
    save_model(tmp_path / "ok.pt", small_model(), TOKENS)
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["params"]["gru1_bw_w_hh"] = torch.zeros(9, 24)
    torch.save(seal(payload), tmp_path / "shape.pt")  # resealed: the shape check, not the hash, must catch it
    cases = [("tf.pt", {}, "transformer encoder layers are not supported"),
             ("pnn.pt", {}, "ProgressiveCTCModel .* cannot be compressed"),
             ("shape.pt", {}, r"parameter gru1_bw_w_hh should be \(8, 24\), found \(9, 24\)"),
             ("ok.pt", {"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1"),
             ("ok.pt", {"sparsity": -0.5}, r"sparsity must be in \[0, 1\)"),
             ("ok.pt", {"keep_units": 0.0}, r"keep_units must be in \(0, 1\]"),
             ("ok.pt", {"distill": 1.5}, r"distill: .* must lie in \[0, 1\], got 1.5"),
             ("ok.pt", {"finetune_data": str(tmp_path)}, "nothing is pruned"),
             ("ok.pt", {"keep_units": 0.5, "finetune_data": str(tmp_path)}, "wav.scp: missing")]
    for name, options, message in cases:
        with pytest.raises(ValueError, match=message):
            compress_model(tmp_path / name, out, CompressConfig(**options))
        assert not out.exists()
    export_compact(small_model(), TOKENS, tmp_path / "compact.pt")
    payload = torch.load(tmp_path / "compact.pt", weights_only=True)
    payload["tensors"]["head_weight"] = torch.zeros(15, len(TOKENS))
    torch.save(seal(payload), tmp_path / "bad_compact.pt")
    with pytest.raises(ValueError, match=r"bad_compact.pt: tensor head_weight should be \(16, 13\) for this "
                                         r"config, found \(15, 13\)"):
        load_compact(tmp_path / "bad_compact.pt")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress")
    data = get_corpus("commonvoice")(make_release(tmp / "cv", "cv-21.0"), tmp / "data", splits=("train",))["de/train"]
    compute_feats(data, nj=1, progress=False)
    return tmp, data


def test_cli_prunes_fine_tunes_quantizes_and_decode_reads_the_result(data_dir, capsys):
    tmp, data = data_dir
    tokens = TokenTable.from_texts(line.split(" ", 1)[1] for line in (data / "text").read_text().splitlines())
    model = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=8, d_model=32, gru_hidden=24))
    save_model(tmp / "adapted.pt", model, tokens)
    out = tmp / "pruned_int8" / "model.pt"
    assert main(["compress", str(tmp / "adapted.pt"), str(out), "--keep-units", "0.5", "--keep-channels", "0.5",
                 "--sparsity", "0.3", "--int8", "--finetune-data", str(data), "--finetune-minutes", "0.02",
                 "--finetune-steps", "10", "--distill", "0.5"]) == 0
    summary = json.loads((out.parent / "model.json").read_text())
    assert summary["shape"]["gru_hidden"] == 12 and summary["shape"]["conv_channels"] == 4
    assert len(summary["finetune_history"]) >= 2 and summary["bytes"] == out.stat().st_size
    weights = [v for n, v in load_compact(out).values.items() if n.endswith(("_weight", "_w_ih", "_w_hh"))
               and not n.startswith("norm")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert 0.3 <= zeros < 0.32  # the fine-tune kept the pruned weights at zero
    assert main(["decode", str(out), str(data), str(tmp / "decode"), "--beam", "4", "--threads", "1"]) == 0
    decoded = json.loads((tmp / "decode" / "decode.json").read_text())
    assert decoded["threads"] == 1 and decoded["rtf"] > 0 and decoded["audio_seconds"] > 0
    utts = [u for p in load_pools([data], tokens).values() for u in p]
    assert len(log_probs_of(load_compact(out), utts)) == len(utts) == decoded["utterances"]
    capsys.readouterr()
    assert main(["compress", str(tmp / "adapted.pt"), str(tmp / "x.pt"), "--sparsity", "1"]) == 1
    assert "sparsity must be in [0, 1), got 1" in capsys.readouterr().err and not (tmp / "x.pt").exists()
    assert main(["compress", str(tmp / "adapted.pt"), str(tmp / "x.pt"), "--finetune-minutes", "-1"]) == 1
    assert "--finetune-minutes: must be above 0, got -1.0" in capsys.readouterr().err and not (tmp / "x.pt").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_kl_matches_the_float64_reference(seed):
    g = torch.Generator().manual_seed(seed)
    teacher, student = (torch.randn(2, 3, 9, 5, generator=g).log_softmax(-1) for _ in range(2))
    lengths = torch.randint(1, 10, (2, 3), generator=g)
    expected = torch.zeros(2, dtype=torch.float64)
    for n in range(2):
        frames = [(teacher[n, b, t].double(), student[n, b, t].double())
                  for b in range(3) for t in range(int(lengths[n, b]))]
        expected[n] = sum((p.exp() * (p - q)).sum() for p, q in frames) / len(frames)
    assert torch.allclose(masked_kl(teacher, student, lengths).double(), expected, atol=1e-6)
    assert torch.allclose(masked_kl(teacher, teacher, lengths), torch.zeros(2), atol=1e-6)


def test_distillation_objective_mixes_ctc_and_follows_the_unpruned_model(data_dir, tmp_path):
    tmp, data = data_dir
    tokens = TokenTable.from_texts(line.split(" ", 1)[1] for line in (data / "text").read_text().splitlines())
    teacher = BatchedCTCModel(ModelConfig(vocab_size=len(tokens), conv_channels=8, d_model=32, gru_hidden=24))
    utts = [u for p in load_pools([data], tokens).values() for u in p][:3]
    tasks = collate([utts], len(utts))
    student = prune_structured(teacher, 0.5, 0.5)
    with torch.no_grad():
        params = student.stacked(1)
        ctc = task_losses(student, params, tasks)
        assert torch.allclose(distillation_losses(teacher, 0.0)(student, params, tasks), ctc)
        kl = distillation_losses(teacher, 1.0)(student, params, tasks)
        mixed = distillation_losses(teacher, 0.25)(student, params, tasks)
        assert kl > 0 and torch.allclose(mixed, 0.75 * ctc + 0.25 * kl)
        assert torch.allclose(distillation_losses(teacher, 1.0)(teacher, teacher.stacked(1), tasks), torch.zeros(1),
                              atol=1e-6)
    save_model(tmp_path / "adapted.pt", teacher, tokens)
    summary = compress_model(tmp_path / "adapted.pt", tmp_path / "pruned.pt", CompressConfig(
        keep_units=0.5, keep_channels=0.5, finetune_data=str(data), distill=1.0,
        finetune=AdaptConfig(minutes=0.02, max_steps=20, eval_every=2, patience=10)))
    history = [h["held_out_loss"] for h in summary["finetune_history"]]
    assert min(history[1:]) < history[0]  # the held-out KL from the unpruned model fell
