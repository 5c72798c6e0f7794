"""Models: RBM, GaussianBernoulliRBM, deep stacks and the temporal family.

Importing this package registers every model type for checkpoints and the CLI.
"""

from rnnrbm.models.rbm import RBM, GaussianBernoulliRBM

__all__ = ["RBM", "GaussianBernoulliRBM"]

# The temporal family (registers "rnn-rbm", "rtrbm", "lstm-rtrbm", "rnn-nade").
from rnnrbm.models.sequence import (
    LSTMRTRBM,
    RNNNADE,
    RNNRBM,
    RTRBM,
    SEQUENCE_MODELS,
    SequenceModel,
    build_sequence_model,
)

__all__ += [
    "LSTMRTRBM",
    "RNNNADE",
    "RNNRBM",
    "RTRBM",
    "SEQUENCE_MODELS",
    "SequenceModel",
    "build_sequence_model",
]

from rnnrbm.models.dbm import DBM  # noqa: E402  (registers "dbm")
from rnnrbm.models.dbn import DBN  # noqa: E402  (registers "dbn")

__all__ += ["DBM", "DBN"]
