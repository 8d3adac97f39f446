"""Feature extraction for a data directory, split over `nj` processes into Kaldi ark/scp files.

Job j writes <feat_dir>/raw_fbank.<j>.{ark,scp}, utt2num_frames.<j> and skipped.<j>.tsv under temporary
names, renames them, and writes its done-marker raw_fbank.<j>.done last: a killed run re-run skips the
finished jobs and gives the same features. Afterwards the data directory receives feats.scp,
utt2num_frames and cmvn.scp (per-speaker statistics in <feat_dir>/cmvn.ark); utterances whose audio could
not be read are listed in <feat_dir>/skipped.tsv and dropped from the data directory. The statistics of the
whole set go to <feat_dir>/global_cmvn.mat (Kaldi matrix).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import kaldiio
from tqdm import tqdm

from metarecipe.data.audio import AudioError, read_audio
from metarecipe.data.datadir import DataDir, read_data_dir, read_key_values, subset_data_dir, write_data_dir
from metarecipe.features.cmvn import compute_cmvn
from metarecipe.features.fbank import FbankConfig, compute_fbank


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def job_splits(data: DataDir, nj: int) -> list[list[str]]:
    """Utterances in nj contiguous chunks of about equal duration (equal count without utt2dur)."""
    utts = data.utterances
    weights = [data.utt2dur.get(u, 1.0) for u in utts]
    total, chunks, current, acc = sum(weights), [], [], 0.0
    for utt, weight in zip(utts, weights, strict=True):
        current.append(utt)
        acc += weight
        if acc >= total * (len(chunks) + 1) / nj and len(chunks) < nj - 1:
            chunks.append(current)
            current = []
    chunks.append(current)
    return chunks + [[] for _ in range(nj - len(chunks))]


def _run_job(job: int, items: list[tuple[str, str, float, float]], feat_dir: str, config: FbankConfig):
    """Extracts one job's utterances (utt, wav.scp value, start, end); returns (job, frames, skipped)."""
    feat_dir = Path(feat_dir)
    ark, scp = feat_dir / f"raw_fbank.{job}.ark", feat_dir / f"raw_fbank.{job}.scp"
    ark_tmp, scp_tmp = feat_dir / f".raw_fbank.{job}.ark.tmp", feat_dir / f".raw_fbank.{job}.scp.tmp"
    frames, skipped = {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{ark_tmp},{scp_tmp}") as writer:
        for utt, spec, start, end in items:
            try:
                feats = compute_fbank(read_audio(spec, config.sample_rate, start, end), config)
            except AudioError as err:
                skipped[utt] = str(err)
                continue
            if feats.shape[0] == 0:
                skipped[utt] = "shorter than one frame"
                continue
            writer(utt, feats)
            frames[utt] = feats.shape[0]
    lines = scp_tmp.read_text(encoding="utf-8").replace(f" {ark_tmp}:", f" {ark}:")
    os.replace(ark_tmp, ark)
    scp_tmp.unlink()
    _write_text(scp, lines)
    _write_text(feat_dir / f"utt2num_frames.{job}", "".join(f"{u} {n}\n" for u, n in frames.items()))
    _write_text(feat_dir / f"skipped.{job}.tsv", "".join(f"{u}\t{r}\n" for u, r in skipped.items()))
    _write_text(feat_dir / f"raw_fbank.{job}.done", "")
    return job, frames, skipped


def _settings_match(feat_dir: Path, settings: dict) -> bool:
    path = feat_dir / "fbank.json"
    return path.exists() and json.loads(path.read_text()) == settings


def compute_feats(data_dir, feat_dir=None, nj: int = 2, config: FbankConfig | None = None,
                  progress: bool = True) -> dict:
    """Extracts fbank features of a data directory (see the module docstring); returns a summary with the
    number of utterances, frames, skipped utterances and jobs run."""
    config = config or FbankConfig()
    data_dir = Path(data_dir)
    feat_dir = (Path(feat_dir) if feat_dir is not None else data_dir / "fbank").resolve()  # scp paths absolute
    feat_dir.mkdir(parents=True, exist_ok=True)
    data = read_data_dir(data_dir)
    chunks = job_splits(data, nj)
    settings = {"fbank": asdict(config), "nj": nj, "utterances": len(data.utterances)}
    if not _settings_match(feat_dir, settings):  # other settings: earlier jobs do not count
        for marker in feat_dir.glob("raw_fbank.*.done"):
            marker.unlink()
        _write_text(feat_dir / "fbank.json", json.dumps(settings, indent=1))
    pending = [j for j in range(nj) if not (feat_dir / f"raw_fbank.{j}.done").exists()]
    if pending:
        items = {j: [(u, data.wav_scp[data.recording_of(u)], data.segments[u].start if data.segments else 0.0,
                      data.segments[u].end if data.segments else -1.0) for u in chunks[j]] for j in pending}
        context = multiprocessing.get_context("spawn")  # workers start clean: no inherited threads or locks
        with ProcessPoolExecutor(max_workers=min(nj, len(pending)), mp_context=context) as pool:
            futures = [pool.submit(_run_job, j, items[j], str(feat_dir), config) for j in pending]
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"fbank {data_dir}",
                               disable=not progress, unit="job"):
                future.result()
    return _combine(data, data_dir, feat_dir, nj, len(pending))


def _combine(data: DataDir, data_dir: Path, feat_dir: Path, nj: int, jobs_run: int) -> dict:
    """Joins the jobs' outputs into the data directory and writes per-speaker CMVN statistics."""
    feats, frames, skipped = {}, {}, {}
    for j in range(nj):
        feats.update(read_key_values(feat_dir / f"raw_fbank.{j}.scp"))
        frames.update(read_key_values(feat_dir / f"utt2num_frames.{j}"))
        skipped.update(read_key_values(feat_dir / f"skipped.{j}.tsv"))
    if not feats:
        raise RuntimeError(f"{data_dir}: no utterance gave features (see {feat_dir}/skipped.tsv)")
    _write_text(feat_dir / "skipped.tsv", "".join(f"{u}\t{r}\n" for u, r in sorted(skipped.items())))
    if skipped:
        data = subset_data_dir(data, [u for u in data.utterances if u in feats])
        write_data_dir(data, data_dir)
    _write_text(data_dir / "feats.scp", "".join(f"{u} {feats[u]}\n" for u in data.utterances))
    _write_text(data_dir / "utt2num_frames", "".join(f"{u} {frames[u]}\n" for u in data.utterances))
    cmvn_ark, cmvn_scp = feat_dir / "cmvn.ark", feat_dir / ".cmvn.scp.tmp"
    global_stats = 0.0
    with kaldiio.WriteHelper(f"ark,scp:{cmvn_ark},{cmvn_scp}") as writer:
        for speaker, utts in data.spk2utt.items():
            stats = compute_cmvn(kaldiio.load_mat(feats[u]) for u in utts)
            writer(speaker, stats)
            global_stats = global_stats + stats
    os.replace(cmvn_scp, data_dir / "cmvn.scp")
    global_tmp = feat_dir / ".global_cmvn.mat.tmp"
    kaldiio.save_mat(str(global_tmp), global_stats)
    os.replace(global_tmp, feat_dir / "global_cmvn.mat")
    return {"utterances": len(data.utterances), "frames": sum(int(frames[u]) for u in data.utterances),
            "skipped": len(skipped), "jobs_run": jobs_run}
