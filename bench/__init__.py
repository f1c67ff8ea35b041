"""Benchmarks: each `bench/<name>.py` has a `main()` that prints ratios against a baseline measured in the same run
and returns its figures; `python -m bench.run` (`make bench`) runs them all."""
