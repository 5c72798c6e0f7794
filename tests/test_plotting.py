"""Tests for ``rnnrbm.plotting``: exact tiling, note names, valid PNGs written atomically."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from rnnrbm import plotting
from rnnrbm.validation import InputError, InputTypeError

Image = pytest.importorskip("PIL.Image")  # pillow ships with matplotlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path) -> np.ndarray:
    """Check the file is a complete, decodable PNG and return its pixels (H, W, channels)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 100
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def only_file(folder, name) -> None:
    """The target exists and no temp file was left beside it."""
    assert sorted(p.name for p in folder.iterdir()) == [name]


# ---------------------------------------------------------------------------------- note names
@pytest.mark.parametrize(
    "midi, name",
    [
        (60, "C4"),
        (21, "A0"),
        (108, "C8"),
        (69, "A4"),
        (61, "C#4"),
        (59, "B3"),
        (0, "C-1"),
        (127, "G9"),
    ],
)
def test_note_name(midi, name):
    assert plotting.note_name(midi) == name


def test_note_name_errors():
    with pytest.raises(InputError, match=r"midi: expected a MIDI note number in 0\.\.127, got 128"):
        plotting.note_name(128)
    with pytest.raises(InputError, match="midi"):
        plotting.note_name(-1)
    with pytest.raises(InputTypeError, match="midi: expected an integer"):
        plotting.note_name(60.0)


# ---------------------------------------------------------------------------------- tiling
def test_tile_images_exact_unscaled():
    images = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 0.0, 0.25, 0.75]])
    got = plotting.tile_images(images, (2, 2), n_cols=2, scale=False, pad_value=-1.0)
    s = -1.0
    expected = np.array(
        [
            [0.1, 0.2, s, 0.5, 0.6],
            [0.3, 0.4, s, 0.7, 0.8],
            [s, s, s, s, s],
            [0.9, 0.0, s, s, s],
            [0.25, 0.75, s, s, s],
        ]
    )
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float64


def test_tile_images_scaled_per_tile_and_layouts():
    images = torch.tensor(
        [[[2.0, 4.0, 6.0]], [[-1.0, -1.0, -1.0]], [[0.0, 10.0, 5.0]]]  # (3, 1, 3) and a constant
    )
    got = plotting.tile_images(images, (1, 3), n_cols=3)
    expected = np.array([[0.0, 0.5, 1.0, 1.0, 0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.5]])
    np.testing.assert_array_equal(got, expected)
    # (N, H*W) and (N, H, W) give the same picture; numpy and torch inputs too.
    flat = images.reshape(3, 3)
    np.testing.assert_array_equal(plotting.tile_images(flat.numpy(), (1, 3), n_cols=3), got)
    # Default columns ceil(√N); n_cols is capped at N.
    five = np.random.default_rng(0).random((5, 4))
    assert plotting.tile_images(five, (2, 2)).shape == (2 * 3 - 1, 3 * 3 - 1)
    assert plotting.tile_images(five, (2, 2), n_cols=10).shape == (2, 5 * 3 - 1)
    assert plotting.tile_images(five, (2, 2), n_cols=1).shape == (5 * 3 - 1, 2)
    scaled = plotting.tile_images(five, (2, 2), n_cols=5)
    for k in range(5):
        tile = scaled[:, 3 * k : 3 * k + 2]
        assert tile.min() == 0.0 and tile.max() == 1.0


def test_tile_images_errors():
    with pytest.raises(InputError, match=r"images: expected shape \(N, 6\) or \(N, 2, 3\)"):
        plotting.tile_images(np.zeros((4, 5)), (2, 3))
    with pytest.raises(InputError, match=r"images: expected shape"):
        plotting.tile_images(np.zeros((4, 3, 2)), (2, 3))
    with pytest.raises(InputError, match="at least one image"):
        plotting.tile_images(np.zeros((0, 6)), (2, 3))
    with pytest.raises(InputError, match="image_shape: expected \\(height, width\\)"):
        plotting.tile_images(np.zeros((1, 6)), (6,))
    with pytest.raises(InputError, match="finite values"):
        plotting.tile_images(np.full((1, 6), np.nan), (2, 3))
    with pytest.raises(InputError, match="n_cols"):
        plotting.tile_images(np.zeros((1, 6)), (2, 3), n_cols=0)


# ---------------------------------------------------------------------------------- saving
def test_save_filter_tiles(tmp_path):
    W = torch.randn(12, 30, generator=torch.Generator().manual_seed(0))
    out = plotting.save_filter_tiles(W, (3, 4), tmp_path / "filters.png", max_filters=9)
    assert out == tmp_path / "filters.png"
    pixels = read_png(out)
    assert pixels.std() > 10  # a picture, not a blank page
    only_file(tmp_path, "filters.png")
    with pytest.raises(
        InputError, match=r"W: expected weights of shape \(n_visible=12, n_hidden\)"
    ):
        plotting.save_filter_tiles(W.T, (3, 4), tmp_path / "bad.png")


def test_save_sample_chains(tmp_path):
    g = torch.Generator().manual_seed(1)
    samples = (torch.rand(4, 3, 16, generator=g) < 0.4).float()
    out = plotting.save_sample_chains(
        samples, (4, 4), str(tmp_path / "chains.png"), steps_per_row=10
    )
    assert out == tmp_path / "chains.png"
    assert read_png(out).std() > 10
    # Gaussian-valued samples are rescaled per tile automatically.
    plotting.save_sample_chains(3 * torch.randn(2, 2, 16, generator=g), (4, 4), tmp_path / "g.png")
    read_png(tmp_path / "g.png")
    with pytest.raises(InputError, match=r"samples: expected shape \(n_rows, n_chains, 16\)"):
        plotting.save_sample_chains(samples[0], (4, 4), tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chains.png", "g.png"]


def test_save_piano_roll(tmp_path):
    roll = np.zeros((96, 88))
    roll[::4, 60 - 21] = 1.0  # middle C on every beat
    roll[:, 69 - 21] = 0.5  # A4 held at probability one half
    out = plotting.save_piano_roll(
        roll, tmp_path / "sub" / "roll.png", title="t", frames_per_beat=4
    )
    pixels = read_png(out)
    assert pixels.shape == (450, 800)  # 8 × 4.5 inches at 100 dpi for T = 96
    assert pixels.min() < 50  # the notes are drawn dark on white
    only_file(tmp_path / "sub", "roll.png")
    plotting.save_piano_roll(torch.zeros(5, 88, dtype=torch.bool), tmp_path / "empty.png")
    with pytest.raises(InputError, match=r"roll: expected shape \(T, 88\)"):
        plotting.save_piano_roll(np.zeros((10, 87)), tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"roll: expected shape \(T, 88\).*\(2, 10, 88\)"):
        plotting.save_piano_roll(np.zeros((2, 10, 88)), tmp_path / "bad.png")
    with pytest.raises(InputError, match="frames_per_beat"):
        plotting.save_piano_roll(roll, tmp_path / "bad.png", frames_per_beat=0)


def test_save_curves(tmp_path):
    curves = {"train": [3.0, 2.0, 1.5, 1.2], "valid": [3.1, float("nan"), 1.9, 1.8]}
    out = plotting.save_curves(curves, tmp_path / "c.png", ylabel="NLL (nats/frame)", title="x")
    assert read_png(out).shape == (400, 640)  # 6.4 × 4 inches at 100 dpi
    plotting.save_curves({"lr": np.array([1e-1, 1e-2, 1e-3])}, tmp_path / "lr.png", log_y=True)
    plotting.save_curves({"pll": torch.tensor([-60.0, -40.0])}, tmp_path / "p.svg")
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "lr.png", "p.svg"]
    with pytest.raises(InputError, match="curves: expected a non-empty dict"):
        plotting.save_curves({}, tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"curves\['a'\]: expected a non-empty 1-D list"):
        plotting.save_curves({"a": []}, tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"curves\['a'\]: expected positive values"):
        plotting.save_curves({"a": [1.0, -1.0]}, tmp_path / "bad.png", log_y=True)
    with pytest.raises(InputError, match="no infinite values"):
        plotting.save_curves({"a": [1.0, float("inf")]}, tmp_path / "bad.png")
    with pytest.raises(InputTypeError, match=r"curves\['a'\]: expected a tensor, array or list"):
        plotting.save_curves({"a": ["x", "y"]}, tmp_path / "bad.png")


def test_bad_suffix(tmp_path):
    with pytest.raises(
        InputError, match=r"path: expected a file name ending in \.png, \.pdf, \.svg"
    ):
        plotting.save_curves({"a": [1.0]}, tmp_path / "c.jpeg")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "c.png"
    plotting.save_curves({"a": [1.0, 2.0]}, target)
    before = target.read_bytes()

    def broken(self, fname, **kwargs):
        fname.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plotting.save_curves({"a": [5.0, 1.0]}, target)
    assert target.read_bytes() == before
    only_file(tmp_path, "c.png")


def test_import_is_lazy_and_pyplot_free(tmp_path):
    # Importing the module loads no matplotlib; saving uses the OO API, never pyplot.
    code = textwrap.dedent(
        f"""
        import sys
        import rnnrbm.plotting as p
        assert "matplotlib" not in sys.modules, "matplotlib imported eagerly"
        p.save_curves({{"a": [1.0, 2.0]}}, {str(tmp_path / "x.png")!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        """
    )
    res = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG_MAGIC
