"""Training, evaluation and benchmarking tools built on top of the trackers package."""
