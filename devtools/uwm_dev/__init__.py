"""uwm-dev: the developers' tools (test bed, demo, benchmarks), kept out of the operator's package and image."""
