"""Peer contestants of scripts/benchmark_peers.py (issue 9): one module per model family."""
