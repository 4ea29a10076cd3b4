"""Peer contestants of scripts/benchmark_peers.py: one module per model family."""
