"""Corpus preparation throughput: ``prepare_corpus`` with 1 and 2 workers and a cached re-run.

    python benchmarks/bench_prepare.py                 # 10,000 synthetic MIDI files
    python benchmarks/bench_prepare.py --files 200

The corpus is written first (not timed) with mido: short varied pieces (8 to 64 beats, one to
four voices, random pitches and durations, a key signature, tempo 60 to 180 bpm). Timed, each
into a fresh output folder: ``prepare_corpus`` with 1 worker and with 2 workers (a process pool,
its start-up included; below ``2 · MIN_FILES_PER_WORKER`` files it parses in-process, and
``workers_used`` says so), then a re-run over the 1-worker corpus, which finds every file cached.
Prints one JSON object: seconds, files/s and frames/s of each run and the cache speed-up (the
1-worker time over the cached re-run's).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mido
import numpy as np

from rnnrbm.data.corpus import prepare_corpus
from rnnrbm.music.midi import MidiReadOptions

TICKS = 480  # per beat
KEYS = ["C", "G", "D", "A", "E", "F", "Bb", "Eb", "Am", "Em", "Dm", "Gm"]


def _piece(rng: np.random.Generator) -> mido.MidiFile:
    """A short piece: a tempo, a key signature and 1-4 voices of random notes."""
    f = mido.MidiFile(ticks_per_beat=TICKS)
    meta = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(int(rng.integers(60, 181)))),
            mido.MetaMessage("key_signature", key=KEYS[int(rng.integers(len(KEYS)))]),
        ]
    )
    f.tracks.append(meta)
    beats = int(rng.integers(8, 65))
    for voice in range(int(rng.integers(1, 5))):
        track, low = mido.MidiTrack(), 36 + 12 * voice
        t = 0
        while t < beats * TICKS:
            length = int(rng.choice([1, 2, 4])) * TICKS // 2
            pitch = int(rng.integers(low, low + 19))
            track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
            track.append(mido.Message("note_off", note=pitch, velocity=0, time=length))
            t += length
        f.tracks.append(track)
    return f


def write_corpus(folder: Path, n: int, seed: int = 0) -> int:
    """``n`` pieces in 100-file sub-folders; returns their total size in bytes."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        _piece(rng).save(sub / f"piece{i:05d}.mid")
    return sum(p.stat().st_size for p in folder.rglob("*.mid"))


def _timed(midi: Path, out: Path, workers: int, options: MidiReadOptions) -> dict[str, Any]:
    r = prepare_corpus(midi, out, options=options, workers=workers)
    return {
        "workers": workers,
        "workers_used": r.workers,
        "parsed": r.parsed,
        "cached": r.cached,
        "skipped": len(r.skipped),
        "seconds": round(r.seconds, 3),
        "files_per_s": round(r.files_per_s, 1),
        "frames_per_s": round(r.frames_per_s),
        "pieces": r.pieces,
        "frames": r.frames,
        "shards": r.shards,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--frames-per-beat", type=int, default=2)
    args = ap.parse_args()
    options = MidiReadOptions(frames_per_beat=args.frames_per_beat, transpose_to_c=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        size = write_corpus(root / "midi", args.files)
        written = time.perf_counter() - t0
        one = _timed(root / "midi", root / "c1", 1, options)
        two = _timed(root / "midi", root / "c2", 2, options)
        cached = _timed(root / "midi", root / "c1", 1, options)
        index = [(root / c / "index.json").read_bytes() for c in ("c1", "c2")]
    result = {
        "files": args.files,
        "megabytes": round(size / 2**20, 2),
        "write_seconds": round(written, 2),
        "workers_1": one,
        "workers_2": two,
        "cached_rerun": cached,
        "speedup_2_workers": round(one["seconds"] / two["seconds"], 2),
        "cache_speedup": round(one["seconds"] / max(cached["seconds"], 1e-9), 1),
        "same_index_1_and_2_workers": index[0] == index[1],
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
