"""One module per CLI verb; see `neurocnn.cli`."""
