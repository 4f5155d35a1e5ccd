"""Single-location regression (arXiv 2410.01537)."""
