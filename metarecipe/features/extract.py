"""Feature extraction for a data directory, split over `nj` processes into Kaldi ark/scp files.

Job j writes <feat_dir>/raw_fbank.<j>.{ark,scp}, utt2num_frames.<j> and skipped.<j>.tsv under temporary
names, renames them, and writes its done-marker raw_fbank.<j>.done last, recording a digest of the job's
inputs (utterances, wav.scp values, segments, fbank settings) and the size and SHA-256 of each output. A re-run
reuses a job only when its marker matches its inputs and outputs and it skipped no utterance: a killed run
re-run gives the same features, a truncated or changed ark is redone, and restored audio is picked up again.

Only derived tables are written into the data directory: feats.scp, utt2num_frames and cmvn.scp
(per-speaker statistics in <feat_dir>/cmvn.ark) over the utterances with features, and feats_skipped.tsv
(`utt<TAB>reason`, also <feat_dir>/skipped.tsv) listing those whose audio could not be read. The source tables
(text, wav.scp, utt2spk, ...) are never rewritten. The statistics of the whole set go to
<feat_dir>/global_cmvn.mat (Kaldi matrix), and the fbank settings every ark of <feat_dir> was made with to
<feat_dir>/fbank.json (`read_fbank_record`), so that features of perturbed audio can be computed identically.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import kaldiio
from tqdm import tqdm

from metarecipe.config import from_mapping
from metarecipe.data.audio import AudioError, read_audio
from metarecipe.data.datadir import SKIPPED_FEATURES, DataDir, printable, read_data_dir
from metarecipe.features.cmvn import compute_cmvn
from metarecipe.features.fbank import FbankConfig, compute_fbank
from metarecipe.features.tables import FeatureError
from metarecipe.io.atomic import atomic_path, write_text_atomic
from metarecipe.io.kaldi_tables import read_table

FBANK_RECORD = "fbank.json"  # in the feature directory: the FbankConfig of its arks


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


def _run_job(job: int, items: list[tuple[str, str, float, float]], feat_dir: str, config: FbankConfig,
             inputs: str):
    """Extracts one job's utterances (utt, wav.scp value, start, end); returns (job, frames, skipped). The
    done-marker, written last, records `inputs` (the job's digest) and the size and SHA-256 of every output."""
    feat_dir = Path(feat_dir)
    ark, scp = feat_dir / f"raw_fbank.{job}.ark", feat_dir / f"raw_fbank.{job}.scp"
    frames, skipped = {}, {}
    with atomic_path(ark) as ark_tmp, atomic_path(scp) as scp_tmp, \
            kaldiio.WriteHelper(f"ark,scp:{ark_tmp},{scp_tmp}") as writer:
        for utt, spec, start, end in items:
            try:
                feats = compute_fbank(read_audio(spec, config.sample_rate, start, end), config)
            except AudioError as err:
                skipped[utt] = printable(" ".join(str(err).split()))  # one line: the reason is a table value
                continue
            if feats.shape[0] == 0:
                skipped[utt] = "shorter than one frame"
                continue
            writer(utt, feats)
            frames[utt] = feats.shape[0]
    write_text_atomic(scp, scp.read_text(encoding="utf-8").replace(f" {ark_tmp}:", f" {ark}:"))
    write_text_atomic(feat_dir / f"utt2num_frames.{job}", "".join(f"{u} {n}\n" for u, n in frames.items()))
    write_text_atomic(feat_dir / f"skipped.{job}.tsv", "".join(f"{u}\t{r}\n" for u, r in skipped.items()))
    outputs = {path.name: _file_digest(path) for path in _job_outputs(feat_dir, job)}
    marker = {"inputs": inputs, "utterances": len(frames), "skipped": len(skipped), "outputs": outputs}
    write_text_atomic(feat_dir / f"raw_fbank.{job}.done", json.dumps(marker, indent=1))
    return job, frames, skipped


def _job_outputs(feat_dir: Path, job: int) -> list[Path]:
    return [feat_dir / name for name in (f"raw_fbank.{job}.ark", f"raw_fbank.{job}.scp", f"utt2num_frames.{job}",
                                         f"skipped.{job}.tsv")]


def _file_digest(path: Path) -> dict:
    """{"size", "sha256"} of a file, or {} when there is none."""
    if not path.is_file():
        return {}
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


def _job_inputs(items: list[tuple[str, str, float, float]], feat_dir: Path, config: FbankConfig) -> str:
    """SHA-256 of what a job's outputs depend on: its utterances, their audio specs and spans, the fbank settings
    and where the ark goes (the scp names it)."""
    record = {"items": items, "fbank": asdict(config), "feat_dir": str(feat_dir)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


def _job_is_done(feat_dir: Path, job: int, inputs: str) -> bool:
    """Whether the job's marker records these inputs, no skipped utterance (their audio may be back) and outputs
    that are all still there unchanged."""
    try:
        marker = json.loads((feat_dir / f"raw_fbank.{job}.done").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("inputs") != inputs or marker.get("skipped") != 0:
        return False
    recorded = marker.get("outputs")
    return isinstance(recorded, dict) and all(
        path.name in recorded and recorded[path.name] == _file_digest(path) for path in _job_outputs(feat_dir, job))


def compute_feats(data_dir, feat_dir=None, nj: int = 2, config: FbankConfig | None = None,
                  progress: bool = True) -> dict:
    """Extracts fbank features of a data directory (see the module docstring); returns a summary with the
    number of utterances with features, frames, skipped utterances and jobs run."""
    config = config or FbankConfig()
    data_dir = Path(data_dir)
    data = read_data_dir(data_dir, features=False)  # the feature tables are rewritten: earlier ones may be stale
    if not data.utterances:
        raise FeatureError(f"{data_dir}: no utterances (utt2spk is empty)")
    feat_dir = (Path(feat_dir) if feat_dir is not None else data_dir / "fbank").resolve()  # scp paths absolute
    feat_dir.mkdir(parents=True, exist_ok=True)
    chunks = job_splits(data, nj)
    items = {j: [(u, data.wav_scp[data.recording_of(u)], data.segments[u].start if data.segments else 0.0,
                  data.segments[u].end if data.segments else -1.0) for u in chunks[j]] for j in range(nj)}
    inputs = {j: _job_inputs(items[j], feat_dir, config) for j in range(nj)}
    pending = [j for j in range(nj) if not _job_is_done(feat_dir, j, inputs[j])]
    if len(pending) == 1:  # one job: in this process (a worker's start-up would cost more than the job saves)
        for j in tqdm(pending, desc=f"fbank {data_dir}", disable=not progress, unit="job"):
            _run_job(j, items[j], str(feat_dir), config, inputs[j])
    elif pending:
        context = multiprocessing.get_context("spawn")  # workers start clean: no inherited threads or locks
        with ProcessPoolExecutor(max_workers=min(nj, len(pending)), mp_context=context) as pool:
            futures = [pool.submit(_run_job, j, items[j], str(feat_dir), config, inputs[j]) for j in pending]
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"fbank {data_dir}",
                               disable=not progress, unit="job"):
                future.result()
    write_text_atomic(feat_dir / FBANK_RECORD, json.dumps(asdict(config), indent=1) + "\n")
    return _combine(data, data_dir, feat_dir, nj, len(pending))


def read_fbank_record(feat_dir: Path) -> FbankConfig | None:
    """The fbank settings the arks of a feature directory were made with (its fbank.json), None where compute-feats
    wrote none (features of an earlier version), or FeatureError naming the file when it is damaged."""
    path = Path(feat_dir) / FBANK_RECORD
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise FeatureError(f"{path}: cannot read ({err}); re-run `metarecipe compute-feats`") from err
    try:
        return from_mapping(FbankConfig, json.loads(text))
    except ValueError as err:  # not JSON, or not FbankConfig's fields (ConfigError)
        raise FeatureError(f"{path}: not a record of fbank settings ({err}); re-run `metarecipe compute-feats`") \
            from None


def _combine(data: DataDir, data_dir: Path, feat_dir: Path, nj: int, jobs_run: int) -> dict:
    """Writes the derived tables of the data directory from the jobs' outputs: feats.scp, utt2num_frames and
    cmvn.scp (per-speaker statistics in feat_dir/cmvn.ark) over the utterances with features, and the skipped
    ones with their reasons in feats_skipped.tsv (and feat_dir/skipped.tsv). The source tables stay as they are."""
    feats, frames, skipped = {}, {}, {}
    for j in range(nj):
        feats.update(read_table(feat_dir / f"raw_fbank.{j}.scp"))
        frames.update(read_table(feat_dir / f"utt2num_frames.{j}"))
        skipped.update(read_table(feat_dir / f"skipped.{j}.tsv"))
    report = "".join(f"{u}\t{r}\n" for u, r in sorted(skipped.items()))
    write_text_atomic(feat_dir / "skipped.tsv", report)
    write_text_atomic(data_dir / SKIPPED_FEATURES, report)
    with_feats = [u for u in data.utterances if u in feats]
    write_text_atomic(data_dir / "feats.scp", "".join(f"{u} {feats[u]}\n" for u in with_feats))
    write_text_atomic(data_dir / "utt2num_frames", "".join(f"{u} {frames[u]}\n" for u in with_feats))
    if not with_feats:
        (data_dir / "cmvn.scp").unlink(missing_ok=True)  # no statistics of an earlier run stay behind
        raise FeatureError(f"{data_dir}: no utterance gave features; each is listed with the reason in "
                           f"{data_dir / SKIPPED_FEATURES}")
    cmvn_ark, cmvn_scp = feat_dir / "cmvn.ark", data_dir / "cmvn.scp"
    global_stats = 0.0
    with atomic_path(cmvn_ark) as ark_tmp, atomic_path(cmvn_scp) as scp_tmp, \
            kaldiio.WriteHelper(f"ark,scp:{ark_tmp},{scp_tmp}") as writer:
        for speaker, utts in data.spk2utt.items():
            if any(u in feats for u in utts):  # a speaker without features has no statistics
                stats = compute_cmvn(kaldiio.load_mat(feats[u]) for u in utts if u in feats)
                writer(speaker, stats)
                global_stats = global_stats + stats
    write_text_atomic(cmvn_scp, cmvn_scp.read_text(encoding="utf-8").replace(f" {ark_tmp}:", f" {cmvn_ark}:"))
    with atomic_path(feat_dir / "global_cmvn.mat") as global_tmp:
        kaldiio.save_mat(str(global_tmp), global_stats)
    return {"utterances": len(with_feats), "frames": sum(int(frames[u]) for u in with_feats),
            "skipped": len(skipped), "jobs_run": jobs_run}
