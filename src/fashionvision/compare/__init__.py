"""Both families evaluated on one split, and the comparison report."""
