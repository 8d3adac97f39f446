"""Decoding a data directory: acoustic model log-probabilities, then greedy or beam search, as text."""

from __future__ import annotations

import torch
from tqdm import tqdm

from metarecipe.decode.greedy import greedy_decode
from metarecipe.io.pools import Utterance, pad_features
from metarecipe.kernels.beam_search import BeamSearchOptions, Hypothesis, LMTables, ctc_beam_search
from metarecipe.kernels.compact import CompactCTCModel
from metarecipe.models.ctc_model import BatchedCTCModel
from metarecipe.text.tokens import TokenTable


def acoustic_log_probs(model: BatchedCTCModel | CompactCTCModel, feats: torch.Tensor,
                       lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """feats (B, T, F) normalised, lengths (B,) -> log-probabilities (B, T', V) and lengths (B,), on the CPU, of a
    training model (run on its device) or a compact one."""
    with torch.no_grad():
        if isinstance(model, CompactCTCModel):
            return model.log_probs(feats, lengths)
        device = next(iter(model.params.values())).device
        stacked = {name: p.unsqueeze(0) for name, p in model.params.items()}
        log_probs, out_lengths = model.functional_forward(stacked, feats[None].to(device), lengths[None].to(device))
        return log_probs[0].cpu(), out_lengths[0].cpu()


def log_probs_of(model: BatchedCTCModel | CompactCTCModel, utts: list[Utterance], batch_utts: int = 16,
                 progress: bool = False) -> dict[str, torch.Tensor]:
    """utt id -> (T', V) log-probabilities (on the CPU) of the model (acoustic_log_probs), batched by length."""
    out = {}
    ordered = sorted(utts, key=lambda u: u.frames)
    for start in tqdm(range(0, len(ordered), batch_utts), desc="acoustic model", unit="batch",
                      disable=not progress):
        chunk = ordered[start:start + batch_utts]
        log_probs, lengths = acoustic_log_probs(model, *pad_features(chunk))
        for utt, scores, length in zip(chunk, log_probs, lengths.tolist(), strict=True):
            out[utt.utt] = scores[:length].clone()
    return out


def pad(log_probs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_max, V) padded log-probabilities and (B,) lengths of a list of (T_b, V) tensors."""
    lengths = torch.tensor([lp.shape[0] for lp in log_probs], dtype=torch.int64)
    return torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True), lengths


def decode(log_probs: dict[str, torch.Tensor], tokens: TokenTable, options: BeamSearchOptions | None = None,
           lm: LMTables | None = None, greedy: bool = False, batch_utts: int = 64,
           backend: str | None = None, progress: bool = False) -> dict[str, list[Hypothesis]]:
    """utt id -> n-best list (greedy: the collapsed argmax path, one entry scored 0)."""
    names = list(log_probs)
    results = {}
    for start in tqdm(range(0, len(names), batch_utts), desc="decoding", unit="batch", disable=not progress):
        chunk = names[start:start + batch_utts]
        scores, lengths = pad([log_probs[n] for n in chunk])
        if greedy:
            found = [[Hypothesis(h, 0.0, 0.0, 0.0)] for h in greedy_decode(scores, lengths, tokens.blank)]
        else:
            found = ctc_beam_search(scores, lengths, options, lm, tokens.blank, tokens.ids["<space>"], backend)
        results.update(zip(chunk, found, strict=True))
    return results


def best_texts(nbest: dict[str, list[Hypothesis]], tokens: TokenTable) -> dict[str, str]:
    """utt id -> the best hypothesis as text ("" when the search kept none)."""
    return {utt: " ".join(tokens.decode(hyps[0].tokens).split()) if hyps else "" for utt, hyps in nbest.items()}
