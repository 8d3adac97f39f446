"""CTC prefix beam search with numba: the algorithm of ``csrc/beam_search_cpu.cpp`` (docs/beam_search.md).

One utterance per call (the front loops over the batch). The LM is looked up by binary search in the sorted
n-gram keys instead of the C++ hash table; prefixes live in growable arrays and a typed dict maps
(parent, token) to the child prefix.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types

_jit = numba.njit(cache=True, nogil=True)
NEG_INF = -np.inf
FORBIDDEN = -2


@_jit
def _log_add(a, b):
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


@_jit
def _lm_score(lm, node, word):
    """(ln P(word | node), next node) by the back-off rule of the LMArrays lm; a word outside the LM scores as
    <unk>."""
    total = 0.0
    while True:
        key = (np.int64(node) << 32) | np.int64(word)
        i = np.searchsorted(lm.keys, key)
        if i < lm.keys.shape[0] and lm.keys[i] == key:
            return total + lm.logprob[i], lm.next_node[i]
        if node == 0:
            if word == lm.unk_word:
                raise ValueError("the LM tables have no <unk> unigram")
            word = lm.unk_word
            continue
        total += lm.backoff[node]
        node = lm.suffix[node]


@_jit
def _trie_child(lm, trie_node, token):
    for i in range(lm.child_start[trie_node], lm.child_start[trie_node + 1]):
        if lm.child_token[i] == token:
            return lm.child_node[i]
    return -1


@_jit
def _grow(array, size):
    if size < array.shape[0]:
        return array
    bigger = np.empty(2 * array.shape[0], dtype=array.dtype)
    bigger[:array.shape[0]] = array
    return bigger


@_jit
def decode_one(log_probs, frames, options, lm):
    """log_probs (T, V) float32; options the SearchOptions namedtuple and lm the LMArrays namedtuple of
    metarecipe.kernels.beam_search (integer arrays int64, float arrays float64; mode 0: no LM). Returns (labels
    of the n-best concatenated, offsets (K + 1,), scores (K, 3): total, acoustic, LM)."""
    beam_size, beam_threshold, token_threshold = options.beam, options.beam_threshold, options.token_threshold
    token_beam, blank_skip, blank, space = options.token_beam, options.blank_skip, options.blank, options.space
    weight, bonus, oov = options.lm_weight, options.insertion_bonus, options.oov_penalty
    mode, unk_word = lm.mode, lm.unk_word
    vocab = log_probs.shape[1]

    cap = 1024
    parent = np.empty(cap, np.int64)
    token = np.empty(cap, np.int64)
    lm_node = np.empty(cap, np.int64)
    word_node = np.empty(cap, np.int64)
    lm_total = np.empty(cap, np.float64)
    lookahead = np.empty(cap, np.float64)
    stamp = np.empty(cap, np.int64)
    slot = np.empty(cap, np.int64)
    parent[0], token[0], lm_node[0], word_node[0] = -1, -1, lm.start_node if mode > 0 else 0, 0
    lm_total[0], lookahead[0], stamp[0], slot[0] = 0.0, 0.0, -1, 0
    num_prefixes = 1
    children = numba.typed.Dict.empty(key_type=types.int64, value_type=types.int64)

    beam = np.zeros(1, np.int64)
    pb = np.zeros(1, np.float64)
    pnb = np.full(1, NEG_INF)
    for t in range(frames):
        lp = log_probs[t]
        if lp[blank] >= blank_skip:  # a frame the blank dominates: every prefix stays as it is
            for k in range(beam.shape[0]):
                last = token[beam[k]]
                repeat = pnb[k] + lp[last] if last >= 0 else NEG_INF
                pb[k] = _log_add(pb[k], pnb[k]) + lp[blank]
                pnb[k] = repeat
            continue
        best_token = NEG_INF
        for v in range(vocab):
            if v != blank and lp[v] > best_token:
                best_token = lp[v]
        tokens = np.array([v for v in range(vocab) if v != blank and lp[v] >= best_token + token_threshold])
        if tokens.shape[0] > token_beam:
            tokens = tokens[np.argsort(-lp[tokens], kind="mergesort")[:token_beam]]

        size = beam.shape[0] * (tokens.shape[0] + 2)
        next_prefix = np.empty(size, np.int64)
        next_pb = np.empty(size, np.float64)
        next_pnb = np.empty(size, np.float64)
        count = 0
        for k in range(beam.shape[0]):
            prefix = beam[k]
            last = token[prefix]
            total = _log_add(pb[k], pnb[k])
            for step in range(tokens.shape[0] + 2):
                if step == 0:
                    target, add_pb, add_pnb = prefix, total + lp[blank], NEG_INF
                elif step == 1:
                    if last < 0:
                        continue
                    target, add_pb, add_pnb = prefix, NEG_INF, pnb[k] + lp[last]
                else:
                    c = tokens[step - 2]
                    key = prefix * vocab + c
                    if key in children:
                        target = children[key]
                    else:  # a new prefix: its LM fields follow from the parent's and c
                        target = num_prefixes
                        node, wnode, score, ahead, allowed = lm_node[prefix], word_node[prefix], lm_total[prefix], \
                            lookahead[prefix], True
                        if mode == 0:
                            score += bonus
                        elif mode == 1:
                            word = lm.token_word[c] if lm.token_word[c] >= 0 else unk_word
                            lp_word, node = _lm_score(lm, node, word)
                            score += weight * lp_word + bonus
                        elif c == space:
                            if wnode != 0:
                                word = lm.node_word[wnode] if wnode >= 0 else -1
                                if word < 0 and options.lexicon_only:
                                    allowed = False
                                else:
                                    lp_word, node = _lm_score(lm, node, word if word >= 0 else unk_word)
                                    score += weight * lp_word + bonus + (0.0 if word >= 0 else oov)
                                    wnode, ahead = 0, 0.0
                        else:
                            wnode = _trie_child(lm, wnode, c) if wnode >= 0 else -1
                            if wnode < 0 and options.lexicon_only:
                                allowed = False
                            elif wnode >= 0:
                                ahead = weight * lm.node_smear[wnode]
                            else:
                                ahead = weight * _lm_score(lm, 0, unk_word)[0] + oov
                        if not allowed:
                            children[key] = FORBIDDEN
                            continue
                        children[key] = target
                        num_prefixes += 1
                        parent = _grow(parent, num_prefixes)
                        token = _grow(token, num_prefixes)
                        lm_node = _grow(lm_node, num_prefixes)
                        word_node = _grow(word_node, num_prefixes)
                        lm_total = _grow(lm_total, num_prefixes)
                        lookahead = _grow(lookahead, num_prefixes)
                        stamp = _grow(stamp, num_prefixes)
                        slot = _grow(slot, num_prefixes)
                        parent[target], token[target], lm_node[target], word_node[target] = prefix, c, node, wnode
                        lm_total[target], lookahead[target], stamp[target] = score, ahead, -1
                    if target == FORBIDDEN:
                        continue
                    add_pb, add_pnb = NEG_INF, (pb[k] if c == last else total) + lp[c]
                if stamp[target] != t:
                    stamp[target], slot[target] = t, count
                    next_prefix[count], next_pb[count], next_pnb[count] = target, add_pb, add_pnb
                    count += 1
                else:
                    j = slot[target]
                    next_pb[j] = _log_add(next_pb[j], add_pb)
                    next_pnb[j] = _log_add(next_pnb[j], add_pnb)

        scores = np.empty(count, np.float64)
        for j in range(count):
            p = next_prefix[j]
            scores[j] = _log_add(next_pb[j], next_pnb[j]) + lm_total[p] + lookahead[p]
        floor = scores.max() - beam_threshold
        order = np.argsort(-scores, kind="mergesort")
        kept = [j for j in order[:beam_size] if scores[j] >= floor]
        beam = np.array([next_prefix[j] for j in kept], np.int64)
        pb = np.array([next_pb[j] for j in kept], np.float64)
        pnb = np.array([next_pnb[j] for j in kept], np.float64)

    finals = np.empty(beam.shape[0], np.float64)
    acoustic = np.empty(beam.shape[0], np.float64)
    for k in range(beam.shape[0]):
        prefix = beam[k]
        acoustic[k] = _log_add(pb[k], pnb[k])
        score, node, wnode = lm_total[prefix], lm_node[prefix], word_node[prefix]
        if mode == 2 and wnode != 0:  # the last word, finished or not (then <unk>, lexicon or not)
            word = lm.node_word[wnode] if wnode >= 0 else -1
            lp_word, node = _lm_score(lm, node, word if word >= 0 else unk_word)
            score += weight * lp_word + bonus + (0.0 if word >= 0 else oov)
        if mode > 0:
            score += weight * _lm_score(lm, node, lm.end_word)[0]
        finals[k] = acoustic[k] + score

    order = [k for k in np.argsort(-finals, kind="mergesort")[:options.nbest] if finals[k] > NEG_INF]
    offsets = np.zeros(len(order) + 1, np.int64)
    out_scores = np.empty((len(order), 3), np.float64)
    labels = []
    for i, k in enumerate(order):
        path = []
        p = beam[k]
        while p > 0:
            path.append(token[p])
            p = parent[p]
        for j in range(len(path) - 1, -1, -1):
            labels.append(path[j])
        offsets[i + 1] = len(labels)
        out_scores[i, 0], out_scores[i, 1], out_scores[i, 2] = finals[k], acoustic[k], finals[k] - acoustic[k]
    return np.array(labels, np.int64), offsets, out_scores
