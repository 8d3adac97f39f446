"""An NGramLM in the decoder's form: a back-off state machine over word ids, and the tokens' link to it.

unit "token": the LM's words are the CTC token symbols (a character LM trained on ``text_units(..., "char")``,
whose vocabulary uses the token table's ``<space>``), scored on every token. unit "word": the LM's words are
spelled in tokens into a trie the search walks through, and a word is scored when the space token ends it.
"""

from __future__ import annotations

import math

import numpy as np

from metarecipe.kernels.beam_search import LMTables
from metarecipe.text.lm import NGramLM
from metarecipe.text.tokens import UNK, TokenTable

LN10 = math.log(10.0)
SPECIAL_WORDS = ("<s>", "</s>", "<unk>")


def _nodes(lm: NGramLM) -> dict[tuple[int, ...], int]:
    """Node ids: 0 the empty context, then every n-gram of order < N."""
    nodes = {(): 0}
    for table in lm.ngrams[:lm.order - 1]:
        for gram in table:
            nodes[gram] = len(nodes)
    return nodes


def _longest_node(gram: tuple[int, ...], nodes: dict[tuple[int, ...], int]) -> int:
    while gram not in nodes:
        gram = gram[1:]
    return nodes[gram]


def state_machine(lm: NGramLM) -> dict[str, np.ndarray | int]:
    """The back-off arrays of LMTables (natural log) for lm."""
    nodes = _nodes(lm)
    backoff = np.zeros(len(nodes), np.float32)
    suffix = np.full(len(nodes), -1, np.int32)
    for gram, node in nodes.items():
        if gram:
            backoff[node] = lm.ngrams[len(gram) - 1][gram][1] * LN10
            suffix[node] = _longest_node(gram[1:], nodes)
    keys, logprob, next_node = [], [], []
    for order, table in enumerate(lm.ngrams, start=1):
        for gram, (log10_prob, _) in table.items():
            if gram[:-1] not in nodes:
                continue  # its context is not in the model: the back-off rule never reaches it
            keys.append((nodes[gram[:-1]] << 32) | gram[-1])
            logprob.append(log10_prob * LN10)
            next_node.append(nodes[gram] if order < lm.order else _longest_node(gram[1:], nodes))
    keys = np.array(keys, np.int64)
    order = np.argsort(keys, kind="stable")
    bos = (lm.word_ids["<s>"],)
    return {"keys": keys[order], "logprob": np.array(logprob, np.float32)[order],
            "next_node": np.array(next_node, np.int32)[order], "backoff": backoff, "suffix": suffix,
            "start_node": nodes.get(bos, 0), "end_word": lm.word_ids["</s>"], "unk_word": lm.word_ids["<unk>"]}


def _spelling_trie(lm: NGramLM, tokens: TokenTable) -> dict[str, np.ndarray]:
    """The LM's words spelled in tokens (words with a character outside the token table are left out)."""
    children: list[dict[int, int]] = [{}]
    node_word = [-1]
    word_logprob = {gram[0]: value[0] * LN10 for gram, value in lm.ngrams[0].items()}
    best_below: list[float] = [-math.inf]
    for word_id, word in enumerate(lm.vocab):
        spelling = tokens.encode(word)
        if word in SPECIAL_WORDS or not spelling or tokens.ids[UNK] in spelling:
            continue
        score = word_logprob.get(word_id, -math.inf)
        node = 0
        for token in spelling:
            if token not in children[node]:
                children[node][token] = len(children)
                children.append({})
                node_word.append(-1)
                best_below.append(-math.inf)
            node = children[node][token]
            best_below[node] = max(best_below[node], score)
        node_word[node] = word_id
    start = np.zeros(len(children) + 1, np.int32)
    start[1:] = np.cumsum([len(c) for c in children])
    child_token = np.array([t for c in children for t in sorted(c)], np.int32)
    child_node = np.array([c[t] for c in children for t in sorted(c)], np.int32)
    return {"child_start": start, "child_token": child_token, "child_node": child_node,
            "node_word": np.array(node_word, np.int32), "node_smear": np.array(best_below, np.float32)}


def lm_tables(lm: NGramLM, tokens: TokenTable, unit: str) -> LMTables:
    """The decoder's tables of lm over tokens: unit "token" (the LM's words are token symbols) or "word"."""
    if unit == "token":
        token_word = np.array([lm.word_ids.get(symbol, -1) for symbol in tokens.symbols], np.int32)
        token_word[tokens.blank] = -1
        if (token_word[1:] < 0).all():
            raise ValueError("no token symbol is a word of this LM: is it a word LM? (use unit 'word')")
        return LMTables("token", token_word=token_word, **state_machine(lm))
    if unit == "word":
        return LMTables("word", **state_machine(lm), **_spelling_trie(lm, tokens))
    raise ValueError(f"LM unit must be 'token' or 'word', got {unit!r}")

