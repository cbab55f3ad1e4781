"""Benchmarks, run from the repository root as modules: ``python3 -m bench.<name>``.

See ``bench/README.md`` for each benchmark's method and ``bench/RESULTS.md`` for the numbers.
"""
