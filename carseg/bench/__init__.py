"""Benchmarks (`make bench-*`): tables on the console, JSON files for the record."""
