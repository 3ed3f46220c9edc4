"""Benchmarks: `make bench` runs them all (`python -m bench`). Never part of `make test`."""
