"""Benchmarks: `federation bench` (see BENCHMARKS.md)."""
