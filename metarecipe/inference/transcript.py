"""A transcript: segments of speech, their words with times and confidences from the CTC forced alignment.

A word is the run of tokens between word boundaries (<space>). Its start is the first frame of its first token
on the best CTC path, its end one past the last frame of its last token, in seconds from the start of the
recording; its confidence is exp of the mean, over its tokens, of each token's mean log-probability on its
frames (a per-frame posterior, geometric mean), in (0, 1].

CTC emits a token in a frame or two, and a word's last token well before the word's sound has died away (0.2 s
early on the asterisk prompts); between words the next word's first token bounds that, but the last word of a
segment would end early. It ends where the segment's speech ends instead (endpoint.last_word_end,
`extend_last_word`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from metarecipe.text.tokens import SPACE, TokenTable


@dataclass
class Word:
    word: str
    start: float  # seconds from the start of the recording
    end: float
    confidence: float  # in (0, 1]


@dataclass
class Segment:
    """A stretch of speech the voice-activity detector found, and what was recognised in it."""

    start: float  # seconds from the start of the recording
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


def words_of(token_ids: list[int], starts: list[int], ends: list[int], token_scores: list[float],
             tokens: TokenTable, offset: float, frame_seconds: float) -> list[Word]:
    """The words of a hypothesis (U token ids) given per token its first frame, one-past-last frame and mean
    log-probability (each a list of U); frames are `frame_seconds` long and frame 0 lies at `offset` seconds."""
    space = tokens.ids[SPACE]
    words, run = [], []
    for k, token in enumerate([*token_ids, space]):
        if token != space:
            run.append(k)
            continue
        if run:
            first, last = run[0], run[-1]
            mean = sum(token_scores[i] for i in run) / len(run)
            words.append(Word(tokens.decode(token_ids[i] for i in run),
                              round(offset + starts[first] * frame_seconds, 3),
                              round(offset + ends[last] * frame_seconds, 3), round(math.exp(min(mean, 0.0)), 4)))
        run = []
    return words


def extend_last_word(words: list[Word], speech_end: float | None) -> list[Word]:
    """The words with the last one ending at `speech_end` (seconds from the start of the recording; None: not
    known) when that is after its end."""
    if not words or speech_end is None or speech_end <= words[-1].end:
        return words
    last = words[-1]
    return [*words[:-1], Word(last.word, last.start, round(speech_end, 3), last.confidence)]


@dataclass
class Transcript:
    """What a recording says: its segments in order."""

    name: str  # the file, or "-" for standard input, or "array"
    duration: float  # seconds
    segments: list[Segment]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]
