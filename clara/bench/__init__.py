"""Benchmarks (`clara bench ...`): performance goals are measured here, not in timed tests."""
