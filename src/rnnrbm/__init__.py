"""rnnrbm: energy-based models of binary data and sequences on PyTorch.

RBM core (Bernoulli and Gaussian-Bernoulli), deep models, and the temporal family (RTRBM,
RNN-RBM, LSTM-RTRBM, RNN-NADE) built on one conditional-RBM core.
"""

from __future__ import annotations

from rnnrbm.models import RBM, GaussianBernoulliRBM
from rnnrbm.version import __version__

__all__ = ["RBM", "GaussianBernoulliRBM", "__version__"]
