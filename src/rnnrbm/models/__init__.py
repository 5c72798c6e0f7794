"""Models: RBM, GaussianBernoulliRBM, deep stacks and the temporal family.

Importing this package registers every model type for checkpoints and the CLI.
"""

from rnnrbm.models.rbm import RBM, GaussianBernoulliRBM

__all__ = ["RBM", "GaussianBernoulliRBM"]
