"""Experiments over many runs: a sweep's grid and results table (`grid`), a comparison of learning
modes (`comparison`, with its `plots`), and the statistics both use (`stats`)."""
