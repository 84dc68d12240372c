"""Synthetic data: generation backends, MAGPIE, Self-Instruct, responses, judges, binarization."""
