"""Metrics: pure functions of samples, densities and chains, each tested against a known answer, and their
declarations (metrics/catalogue.py). Nothing here imports the harness (bench/)."""
