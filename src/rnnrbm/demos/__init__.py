"""Demos: the music demo (an RNN-RBM on JSB Chorales, then a generated chorale) and the image
demo (RBM / DBN / DBM on 8×8 digits or MNIST: filters and sample chains)."""

from rnnrbm.demos.digits import run_image_demo
from rnnrbm.demos.music import run_music_demo

__all__ = ["run_image_demo", "run_music_demo"]
