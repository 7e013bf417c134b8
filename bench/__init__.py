"""hu-roi benchmarks (run with ``scripts/bench``; see docs/performance.md)."""
