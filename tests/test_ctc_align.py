"""metarecipe.kernels.ctc_align: the best CTC path, against brute force and the float64 torch reference."""

import itertools
import math

import pytest
import torch
from kernel_inputs import fresh_seed

from metarecipe.kernels.backends import available_backends
from metarecipe.kernels.ctc_align import ctc_forced_align

BACKENDS = [b for b in ("cpp", "numba", "torch") if b in available_backends()]
FAST = [b for b in BACKENDS if b != "torch"]
SCORE_ATOL = 1e-5


def min_frames(labels: list[int]) -> int:
    """Frames a path through labels needs: one per label, plus a blank between equal neighbours."""
    return len(labels) + sum(a == b for a, b in itertools.pairwise(labels))


def align_problem(seed: int, batch: int = 8, frames: int = 40, vocab: int = 4, max_labels: int = 10,
                  dtype=torch.float64):
    """log_probs (B, T, V) sharpened so that few paths come close, targets (B, U) from a small vocabulary (so
    with repeated labels), variable T_b and U_b. Row 1 has one frame too few (infeasible), row 2 exactly enough,
    row 3 an empty target."""
    gen = torch.Generator().manual_seed(seed)
    log_probs = (3 * torch.randn(batch, frames, vocab, generator=gen, dtype=torch.float64)).log_softmax(-1)
    targets = torch.randint(1, vocab, (batch, max_labels), generator=gen)
    target_lengths = torch.randint(0, max_labels + 1, (batch,), generator=gen)
    lengths = torch.randint(0, frames + 1, (batch,), generator=gen)
    lengths[0], target_lengths[1], target_lengths[2], target_lengths[3] = frames, max_labels, max_labels // 2, 0
    lengths[1] = min_frames(targets[1].tolist()) - 1
    lengths[2] = min_frames(targets[2, : max_labels // 2].tolist())
    return log_probs.to(dtype), lengths, targets, target_lengths


def frame_labels(alignment, b: int, frames: int, targets: torch.Tensor, blank: int = 0) -> list[int]:
    """The token of each frame on the path the spans describe (blank outside them)."""
    labels = [blank] * frames
    for j in range(int((alignment.starts[b] >= 0).sum())):
        for t in range(int(alignment.starts[b, j]), int(alignment.ends[b, j])):
            labels[t] = int(targets[b, j])
    return labels


def assert_same(actual, expected, seed, what=""):
    """Paths exactly equal, scores within SCORE_ATOL."""
    assert torch.equal(actual.starts, expected.starts), f"starts {what} (seed {seed})"
    assert torch.equal(actual.ends, expected.ends), f"ends {what} (seed {seed})"
    torch.testing.assert_close(actual.path_scores, expected.path_scores, atol=SCORE_ATOL, rtol=0,
                               msg=f"path_scores {what} (seed {seed})")
    torch.testing.assert_close(actual.token_scores, expected.token_scores, atol=SCORE_ATOL, rtol=0,
                               msg=f"token_scores {what} (seed {seed})")


def assert_valid_spans(alignment, log_probs, lengths, targets, target_lengths, seed):
    """Spans lie in order inside the utterance, equal neighbours with a frame between them; the path score is
    the sum of the log-probs along the path (blank frames included), a token's score the mean over its run."""
    for b in range(log_probs.shape[0]):
        n, frames, score = int(target_lengths[b]), int(lengths[b]), float(alignment.path_scores[b])
        starts, ends = alignment.starts[b].tolist(), alignment.ends[b].tolist()
        assert starts[n:] == ends[n:] == [-1] * (len(starts) - n), f"padding of row {b} (seed {seed})"
        assert alignment.token_scores[b, n:].eq(0).all(), f"padding of row {b} (seed {seed})"
        if score == -math.inf:
            assert frames < min_frames(targets[b, :n].tolist()) and starts[:n] == ends[:n] == [-1] * n, f"seed {seed}"
            continue
        assert frames >= min_frames(targets[b, :n].tolist()), f"row {b} should be infeasible (seed {seed})"
        for j in range(n):
            assert 0 <= starts[j] < ends[j] <= frames, f"row {b} token {j} (seed {seed})"
            if j > 0:
                gap = 1 if targets[b, j] == targets[b, j - 1] else 0
                assert ends[j - 1] + gap <= starts[j], f"row {b} tokens {j - 1}, {j} (seed {seed})"
            run = log_probs[b, starts[j]:ends[j], targets[b, j]].double().mean()
            assert float(alignment.token_scores[b, j]) == pytest.approx(float(run), abs=SCORE_ATOL), f"seed {seed}"
        path = frame_labels(alignment, b, frames, targets)
        total = sum(float(log_probs[b, t, k]) for t, k in enumerate(path))
        assert score == pytest.approx(total, abs=1e-9), f"row {b}: path score != sum along the spans (seed {seed})"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backends_match_reference_on_random_batches(backend, dtype):
    seed = fresh_seed()
    for trial in range(4):
        inputs = align_problem(seed + trial, batch=8, frames=30 + 10 * trial, vocab=3 + trial, dtype=dtype)
        expected = ctc_forced_align(*inputs, backend="torch")
        actual = ctc_forced_align(*inputs, backend=backend)
        assert actual.starts.dtype == actual.ends.dtype == torch.int64
        assert actual.token_scores.dtype == torch.float32 and actual.path_scores.dtype == torch.float64
        assert_same(actual, expected, seed + trial, f"{backend} vs torch")
        assert_valid_spans(actual, *inputs, seed + trial)
        assert actual.path_scores[1] == -math.inf and actual.path_scores[2] > -math.inf, f"seed {seed + trial}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_path_scores_higher_than_the_best_one(backend):
    """Brute force over every frame labelling of tiny utterances that collapses to the target."""
    seed = fresh_seed()
    vocab, frames = 3, 7
    sequences = torch.tensor(list(itertools.product(range(vocab), repeat=frames)))  # (V^T, T)
    for trial in range(3):
        log_probs, lengths, targets, target_lengths = align_problem(seed + trial, batch=5, frames=frames,
                                                                    vocab=vocab, max_labels=3)
        found = ctc_forced_align(log_probs, lengths, targets, target_lengths, backend=backend)
        for b in range(5):
            n, length = int(target_lengths[b]), int(lengths[b])
            target = targets[b, :n].tolist()
            paths = sequences[:: vocab ** (frames - length), :length]  # every labelling of T_b frames
            scores = log_probs[b, torch.arange(length), paths].sum(1)
            collapses = torch.tensor([[k for k, _ in itertools.groupby(p) if k != 0] == target
                                      for p in paths.tolist()], dtype=torch.bool)
            best = scores[collapses].max().item() if collapses.any() else -math.inf
            assert found.path_scores[b].item() == pytest.approx(best, abs=1e-9), f"row {b} (seed {seed + trial})"
            if best > -math.inf and (scores[collapses] > best - 1e-9).sum() == 1:
                argmax = paths[collapses][scores[collapses].argmax()].tolist()
                assert frame_labels(found, b, length, targets) == argmax, f"row {b} (seed {seed + trial})"


def test_ties_are_broken_the_same_way_on_every_backend():
    """Equal scores everywhere: the path advances at every frame up to the last token, then stays in the final
    blank (tokens come as early as the lattice allows)."""
    seed = fresh_seed()
    log_probs = torch.full((3, 6, 4), math.log(0.25), dtype=torch.float64)
    targets = torch.tensor([[1, 2, 2], [3, 0, 0], [1, 1, 0]])
    lengths, target_lengths = torch.tensor([6, 6, 5]), torch.tensor([3, 1, 2])
    results = {b: ctc_forced_align(log_probs, lengths, targets, target_lengths, backend=b) for b in BACKENDS}
    for found in results.values():
        assert found.starts.tolist() == [[0, 1, 3], [0, -1, -1], [0, 2, -1]]
        assert found.ends.tolist() == [[1, 2, 4], [1, -1, -1], [1, 3, -1]]
    # quantised scores: many exact ties inside the lattice
    gen = torch.Generator().manual_seed(seed)
    levels = torch.log(torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64))
    quantised = levels[torch.randint(0, 3, (6, 25, 4), generator=gen)]
    inputs = (quantised, torch.tensor([25, 24, 20, 12, 25, 9]), torch.randint(1, 4, (6, 8), generator=gen),
              torch.tensor([8, 5, 7, 3, 0, 4]))
    expected = ctc_forced_align(*inputs, backend="torch")
    for backend in FAST:
        assert_same(ctc_forced_align(*inputs, backend=backend), expected, seed, f"{backend} on ties")


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_labels_need_a_blank_between_them(backend):
    log_probs = torch.randn(3, 4, 3, dtype=torch.float64).log_softmax(-1)
    targets = torch.tensor([[1, 1], [1, 1], [1, 2]])
    found = ctc_forced_align(log_probs, torch.tensor([2, 3, 2]), targets, torch.tensor([2, 2, 2]), backend=backend)
    assert found.path_scores[0] == -math.inf and found.starts[0].tolist() == found.ends[0].tolist() == [-1, -1]
    assert found.starts[1].tolist() == [0, 2] and found.ends[1].tolist() == [1, 3]
    assert found.starts[2].tolist() == [0, 1] and found.ends[2].tolist() == [1, 2]
    expected = log_probs[1, 0, 1] + log_probs[1, 1, 0] + log_probs[1, 2, 1]
    assert found.path_scores[1].item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_hypotheses_align_to_blanks(backend):
    log_probs = torch.randn(3, 5, 4, dtype=torch.float64).log_softmax(-1)
    lengths = torch.tensor([5, 3, 0])
    found = ctc_forced_align(log_probs, lengths, torch.zeros(3, 0, dtype=torch.int64), [0, 0, 0], backend=backend)
    assert found.starts.shape == found.ends.shape == found.token_scores.shape == (3, 0)
    expected = torch.stack([log_probs[b, : lengths[b], 0].sum() for b in range(3)])
    torch.testing.assert_close(found.path_scores, expected, atol=1e-12, rtol=0)
    # an empty input aligns only an empty target
    found = ctc_forced_align(log_probs, lengths, torch.tensor([[1], [2], [3]]), [1, 0, 1], backend=backend)
    assert found.path_scores[0] > -math.inf and found.starts[0, 0] >= 0
    assert found.path_scores[2] == -math.inf and found.starts[1:, 0].tolist() == [-1, -1]


@pytest.mark.parametrize("backend", FAST)
def test_masked_scores_steer_the_path_and_can_leave_none(backend):
    """-inf log-probs (impossible tokens): the path avoids them; an utterance where every path crosses one has
    no finite path."""
    seed = fresh_seed()
    log_probs, lengths, targets, target_lengths = align_problem(seed, batch=6, frames=20, vocab=4, max_labels=5)
    log_probs[:, :4, 1] = -math.inf  # label 1 impossible in the first frames
    log_probs[4, :, 2] = -math.inf  # label 2 impossible in row 4
    targets[4, 0], target_lengths[4] = 2, max(1, int(target_lengths[4]))
    inputs = (log_probs, lengths, targets, target_lengths)
    found = ctc_forced_align(*inputs, backend=backend)
    assert_same(found, ctc_forced_align(*inputs, backend="torch"), seed)
    assert found.path_scores[4] == -math.inf and (found.starts[4] == -1).all()
    for b in range(6):
        for j in range(int(target_lengths[b])):
            if targets[b, j] == 1 and found.starts[b, j] >= 0:
                assert found.starts[b, j] >= 4, f"seed {seed}"


@pytest.mark.parametrize("backend", FAST)
def test_long_utterances_match_reference(backend):
    seed = fresh_seed()
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(2, 1500, 32, generator=gen).log_softmax(-1)
    targets = torch.randint(1, 32, (2, 450), generator=gen)
    inputs = (log_probs, torch.tensor([1500, 1200]), targets, torch.tensor([450, 400]))
    assert_same(ctc_forced_align(*inputs, backend=backend), ctc_forced_align(*inputs, backend="torch"), seed)


def _good_args():
    return {"log_probs": torch.randn(2, 10, 5).log_softmax(-1), "lengths": [10, 8],
            "targets": torch.tensor([[1, 2], [3, 0]]), "target_lengths": [2, 1]}


@pytest.mark.parametrize("change, message", [
    ({"log_probs": torch.randn(2, 10, 5).half()}, "log_probs must be a float32 or float64"),
    ({"log_probs": torch.randn(10, 5)}, "log_probs must be (B, T, V)"),
    ({"log_probs": torch.full((2, 10, 5), math.nan)}, "log_probs[0, 0, 0] is NaN"),
    ({"lengths": [11, 8]}, "lengths[0] = 11 exceeds the 10 frames"),
    ({"lengths": [10, -1]}, "lengths[1] = -1 is negative"),
    ({"lengths": [10]}, "lengths must have shape (2,)"),
    ({"target_lengths": [3, 1]}, "target_lengths[0] = 3 exceeds the 2 columns"),
    ({"targets": torch.tensor([1, 2, 3])}, "targets must be (B, U) = (2, U) padded"),
    ({"targets": torch.tensor([[1, 5], [3, 0]])}, "targets[0][1] = 5 is not a label"),
    ({"targets": torch.tensor([[1, 0], [3, 0]])}, "targets[0][1] = 0 is not a label"),
    ({"blank": 5}, "blank must be an int in [0, 5)"),
    ({"backend": "cuda"}, "backend for ctc_forced_align must be one of"),
])
def test_bad_arguments_raise_value_error_naming_them(change, message):
    with pytest.raises(ValueError) as err:
        ctc_forced_align(**{**_good_args(), **change})
    assert message in str(err.value)
