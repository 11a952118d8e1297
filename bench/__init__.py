"""End-to-end benchmark of G2P Bridge with the Example Bank: ``python -m bench.run --help``."""
