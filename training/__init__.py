"""Offline: data, splits, evaluation, baselines, and the Bert4CMR model (needs the train extra)."""
