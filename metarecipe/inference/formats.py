"""A transcript as text, JSON, CTM (Kaldi/NIST word times), SRT or WebVTT subtitles."""

from __future__ import annotations

import dataclasses
import json

from metarecipe.inference.transcript import Transcript, Word

FORMATS = ("text", "json", "ctm", "srt", "vtt")
# Subtitle cues (SRT, WebVTT): at most this long and this many characters, the usual limits of readable subtitles
# (two lines of about 42 characters shown for at most 7 seconds).
CUE_SECONDS = 7.0
CUE_CHARACTERS = 84


def render(transcript: Transcript, fmt: str) -> str:
    """The transcript in format `fmt` (one of FORMATS), ending in a newline."""
    if fmt == "text":
        return transcript.text + "\n"
    if fmt == "json":
        return json.dumps(dataclasses.asdict(transcript) | {"text": transcript.text}, ensure_ascii=False,
                          indent=1) + "\n"
    if fmt == "ctm":
        name = ctm_name(transcript.name)
        return "".join(f"{name} 1 {w.start:.3f} {w.end - w.start:.3f} {w.word} {w.confidence:.4f}\n"
                       for w in transcript.words)
    if fmt in ("srt", "vtt"):
        return subtitles(transcript, fmt)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def ctm_name(name: str) -> str:
    """A recording id for CTM: the name without spaces."""
    return "_".join(name.split()) or "-"


def cues(words: list[Word]) -> list[list[Word]]:
    """Words grouped into subtitle cues of at most CUE_SECONDS and CUE_CHARACTERS each (a longer word alone)."""
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if current and word.end - current[0].start <= CUE_SECONDS and \
                sum(len(w.word) + 1 for w in current) + len(word.word) <= CUE_CHARACTERS:
            current.append(word)
        else:
            groups.append([word])
    return groups


def timestamp(seconds: float, separator: str) -> str:
    """hh:mm:ss,mmm (SRT: separator ",") or hh:mm:ss.mmm (WebVTT: ".")."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(transcript: Transcript, fmt: str) -> str:
    """SRT (numbered cues, "," before milliseconds) or WebVTT (a header, "." before milliseconds)."""
    separator = "," if fmt == "srt" else "."
    blocks = []
    for number, group in enumerate((g for s in transcript.segments for g in cues(s.words)), start=1):
        timing = f"{timestamp(group[0].start, separator)} --> {timestamp(group[-1].end, separator)}"
        text = " ".join(w.word for w in group)
        blocks.append(f"{number}\n{timing}\n{text}\n" if fmt == "srt" else f"{timing}\n{text}\n")
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(blocks)
