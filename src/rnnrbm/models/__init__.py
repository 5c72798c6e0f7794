"""Models: RBM, GaussianBernoulliRBM, deep stacks and the temporal family."""
