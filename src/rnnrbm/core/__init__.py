"""Math on raw tensors: RBM conditionals and sampling, NADE, contrastive losses, partition
functions and monitors. No I/O."""
