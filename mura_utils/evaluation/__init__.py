"""Evaluation: predictions tables, the metrics and their bootstrap intervals, paired comparisons,
test-time mirroring, and evaluation on other datasets (cross-dataset and the external set)."""
