"""Browser tests (a package, so that the harness module is importable from conftest and benchmarks)."""
