"""The performance suite: explorer against the tools people use today, on the same work, in one process.

Run ``python -m benchmarks`` (``make bench``); see :mod:`benchmarks.__main__` for options. Modules:
:mod:`~benchmarks.timing` (interleaved runner, medians, IQR), :mod:`~benchmarks.peers` (the other tools),
:mod:`~benchmarks.suites` (the comparisons), :mod:`~benchmarks.memory` (peak memory in fresh processes),
:mod:`~benchmarks.report` (RESULTS.md, results.json, results.png).
"""
