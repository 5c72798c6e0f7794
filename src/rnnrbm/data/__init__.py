"""Pure data I/O: the polyphonic benchmarks, the bundled default dataset, batching."""
