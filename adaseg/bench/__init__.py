"""Benchmarks behind ``adaseg bench``: each module measures and returns plain records."""
