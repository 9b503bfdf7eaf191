"""Training: ``fit(config)`` into a run folder, the run-folder contract, and experiments (train, then
evaluate the best checkpoint on the held-out split)."""
