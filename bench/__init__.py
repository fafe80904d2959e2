"""rnnflow's benchmarks: `python -m bench` (or `make bench`); results in artifacts/bench/, summary in BENCHMARKS.md.

Benchmarks are not tests: nothing under tests/ times anything. Each suite writes one JSON file
(the machine, the options, the exact command of every row, every raw timing and the median),
and bench/summarize.py turns whatever JSON exists into BENCHMARKS.md.
"""
