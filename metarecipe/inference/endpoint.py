"""Where a segment's speech ends, to the 10 ms frame: the end its last word is extended to.

CTC emits a word's last token well before its sound has died away (0.16-0.26 s early on the en and fr dev
voices), and the voice-activity detector's end of speech, from 32 ms frames and a recurrent model's memory, is
early or late by up to about 0.1 s depending on the voice. The end used is the end of the last 10 ms frame within
MAX_END_EXTENSION after the word's CTC end whose energy is END_MARGIN_DB above the segment's noise floor (the
FLOOR_PERCENTILE-th percentile of its frame energies; a segment carries the detector's padding of non-speech either
side), but no later than the detector's end (`last_word_end`).

END_MARGIN_DB was chosen on en and fr dev (24 utterances each in a recording made as benchmarks/transcribe.py makes
it, the meta-trained model): segment-final word ends within 0.1 s of the speech were 85% / 85% at the detector's
end, and 96/94, 98/94, 98/96, 94/94 and 92/92% with this rule at 10, 15, 20, 25 and 30 dB.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.01
# The most a segment's last word is extended: a word's sound outlasts its last CTC token by a few hundred
# milliseconds; a later end means speech the hypothesis has no word for.
MAX_END_EXTENSION = 0.5
END_MARGIN_DB = 20.0
FLOOR_PERCENTILE = 10.0


def frame_energies_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """(F,) log energy in dB of the whole 10 ms frames of samples (N,) at `rate` Hz."""
    hop = round(rate * FRAME_SECONDS)
    frames = np.asarray(samples[: len(samples) // hop * hop], np.float64).reshape(-1, hop)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


def energy_speech_end(samples: np.ndarray, rate: int, after: float, before: float) -> float | None:
    """Seconds from the start of a segment's samples (N,) at `rate` Hz to the end of its last 10 ms frame lying
    in [after, before) seconds with energy END_MARGIN_DB above the segment's floor; None if no frame there is."""
    energies = frame_energies_db(samples, rate)
    if not len(energies):
        return None
    loud = energies >= np.percentile(energies, FLOOR_PERCENTILE) + END_MARGIN_DB
    first, stop = max(int(after / FRAME_SECONDS), 0), min(int(np.ceil(before / FRAME_SECONDS)), len(energies))
    found = np.flatnonzero(loud[first:stop])
    return None if not len(found) else (first + found[-1] + 1) * FRAME_SECONDS


def last_word_end(samples: np.ndarray, rate: int, word_end: float, detector_end: float | None) -> float | None:
    """Seconds from the start of a segment's samples (N,) at `rate` Hz to where its speech ends, given its last
    word's CTC end and the detector's end of speech (None where the segment was split, not ended: the speech goes
    on); None where nothing is heard after the word's end."""
    if detector_end is None:
        return None
    heard = energy_speech_end(samples, rate, word_end, word_end + MAX_END_EXTENSION)
    return None if heard is None else min(heard, detector_end)
