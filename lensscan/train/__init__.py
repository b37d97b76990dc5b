"""Training (Ray Train), ensembling and evaluation."""
