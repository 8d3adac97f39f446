"""Model files carry the SHA-256 of their content, and every reader checks it: a damaged file is an error naming
it, never a model that runs (issue 17: 4 KiB flipped in an adapted model decoded silently)."""

import re

import pytest
import torch

from metarecipe.compress import export_compact
from metarecipe.io.model_files import load_model, load_rates, save_model, save_rates
from metarecipe.kernels.compact import DIGEST_KEY, ModelFileError, load_compact, payload_digest, seal
from metarecipe.models import BatchedCTCModel, ModelConfig, ProgressiveCTCModel
from metarecipe.text.tokens import TokenTable

TOKENS = TokenTable(["<blk>", "<space>", "<unk>"] + list("abcdefghij"))


def model(gru_hidden=8, seed=0) -> BatchedCTCModel:
    torch.manual_seed(seed)
    return BatchedCTCModel(ModelConfig(vocab_size=len(TOKENS), num_mel_bins=20, conv_channels=4, d_model=12,
                                       gru_hidden=gru_hidden, gru_layers=1)).eval()


def write_plain(path):
    save_model(path, model(), TOKENS, {"note": "plain"})
    return load_model


def write_progressive(path):
    save_model(path, ProgressiveCTCModel([model()]), TOKENS)
    return load_model


def write_compact(path):
    export_compact(model(), TOKENS, path)
    return load_compact


def write_int8(path):
    export_compact(model(), TOKENS, path, int8=True)
    return load_compact


def write_rates(path):
    source = model()
    save_rates(path, {n: torch.full_like(p, 0.1) for n, p in source.params.items()})
    return lambda p: load_rates(p, source)


WRITERS = [write_plain, write_progressive, write_compact, write_int8, write_rates]


def flip(path, start: int, length: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:start + length] = bytes(b ^ 0xFF for b in data[start:start + length])
    path.write_bytes(bytes(data))


def tensor_bytes(payload) -> bytes:
    """The raw bytes of the largest tensor of a payload, as torch.save stores them."""
    tensors = []

    def walk(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(payload)
    largest = max(tensors, key=lambda t: t.numel() * t.element_size())
    return largest.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("write", WRITERS, ids=lambda w: w.__name__)
def test_one_byte_flipped_inside_a_tensor_is_an_error_naming_the_file(tmp_path, write):
    path = tmp_path / "model.pt"
    read = write(path)
    read(path)  # the intact file loads
    stored = tensor_bytes(torch.load(path, weights_only=True))
    offset = path.read_bytes().find(stored)
    assert offset > 0  # torch.save stores tensor data uncompressed
    flip(path, offset + len(stored) // 2, 1)
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: damaged .*does not match the SHA-256"):
        read(path)


def test_4_kib_flipped_in_the_middle_of_a_model_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "adapted.pt"
    save_model(path, model(gru_hidden=64), TOKENS)
    flip(path, path.stat().st_size // 2, 4096)
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: damaged model file"):
        load_model(path)


@pytest.mark.parametrize("change", ["info", "tokens", "drop digest"])
def test_an_edited_payload_without_a_matching_digest_is_refused(tmp_path, change):
    """A non-tensor field changed (or the digest gone) and saved again with torch.save: the hash catches it."""
    path = tmp_path / "model.pt"
    save_model(path, model(), TOKENS, {"note": "plain"})
    payload = torch.load(path, weights_only=True)
    if change == "info":
        payload["info"]["note"] = "edited"
    elif change == "tokens":
        payload["tokens"][3], payload["tokens"][4] = payload["tokens"][4], payload["tokens"][3]
    else:
        del payload[DIGEST_KEY]
    torch.save(payload, path)
    message = "holds no content hash" if change == "drop digest" else "does not match the SHA-256"
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: .*{message}"):
        load_model(path)


def test_the_digest_covers_dtypes_and_shapes_and_ignores_key_order():
    weights = torch.arange(6, dtype=torch.float32)
    payload = {"format": "x", "tensors": {"w": weights.view(2, 3), "b": torch.zeros(2)}, "info": {"a": 1, "b": "c"}}
    reordered = {"info": {"b": "c", "a": 1}, "tensors": {"b": torch.zeros(2), "w": weights.view(2, 3)},
                 "format": "x"}
    assert payload_digest(payload) == payload_digest(reordered) == payload_digest(seal(payload))
    same_bytes = [{**payload, "tensors": {**payload["tensors"], "w": weights.view(3, 2)}},
                  {**payload, "tensors": {**payload["tensors"], "w": weights.view(torch.int32).view(2, 3)}},
                  {**payload, "info": {"a": 1.0, "b": "c"}}]
    assert len({payload_digest(p) for p in [payload, *same_bytes]}) == 4


def test_a_file_that_is_no_model_is_an_error_naming_it(tmp_path):
    for name, content in (("text.pt", b"not a model"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match=f"^{re.escape(str(tmp_path / name))}: not a readable model file"):
            load_model(tmp_path / name)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="foreign.pt: not a metarecipe model file: it holds no content hash"):
        load_model(tmp_path / "foreign.pt")
