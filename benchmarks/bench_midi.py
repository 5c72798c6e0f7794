"""MIDI → piano-roll throughput (issue 5's figure): files/s and frames/s of ``read_midi_folder``.

    python benchmarks/bench_midi.py                # 200 files written from Nottingham tunes
    python benchmarks/bench_midi.py --files 500 --json

The corpus is written first (not timed) from real pieces: the first ``--files`` training tunes
of the bundled-format Nottingham set when ``../shared`` is beside the checkout, else the bundled
JSB Chorales (repeated), each with a key signature so transposition to C reads it, at
``--frames-per-beat`` 2. Timed: ``read_midi_folder`` with the default options (header/size bounds,
parsing by pretty_midi on mido, beat-aligned grid, drums dropped, transposition to C), the
best of ``--repeats`` passes. Prints frames read, files/s and frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pretty_midi
import torch

from rnnrbm.data.polyphonic import load_bundled_jsb, load_polyphonic
from rnnrbm.music.midi import MidiReadOptions, read_midi_folder, roll_to_pretty_midi


def _pieces(n: int) -> tuple[list, str]:
    try:
        rolls = load_polyphonic("nottingham")["train"]
        name = "Nottingham train"
    except (FileNotFoundError, OSError, ValueError):
        rolls = load_bundled_jsb()["train"]
        name = "bundled JSB Chorales train"
    return [rolls[i % len(rolls)] for i in range(n)], name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--frames-per-beat", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # parsing is single-threaded Python; say so in the figure
    pieces, source = _pieces(args.files)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, roll in enumerate(pieces):
            pm = roll_to_pretty_midi(roll, frames_per_beat=args.frames_per_beat, tempo_bpm=120.0)
            pm.key_signature_changes.append(pretty_midi.KeySignature(0, 0.0))
            pm.write(str(folder / f"piece{i:04d}.mid"))
        size = sum(p.stat().st_size for p in folder.iterdir())
        options = MidiReadOptions(frames_per_beat=args.frames_per_beat)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rolls, skipped = read_midi_folder(folder, options)
            best = min(best, time.perf_counter() - t0)
    frames = sum(r.roll.shape[0] for r in rolls)
    result = {
        "files": len(rolls),
        "skipped": len(skipped),
        "source": source,
        "megabytes": round(size / 2**20, 2),
        "frames": frames,
        "seconds": round(best, 3),
        "files_per_s": round(len(rolls) / best, 1),
        "frames_per_s": round(frames / best),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v}")


if __name__ == "__main__":
    main()
