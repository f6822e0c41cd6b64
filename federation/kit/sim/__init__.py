"""Simulated clusters, Endpoint Pickers and load for the demo and benchmarks (real runtime)."""
