"""Files on disk: atomic writes, content hashes, tensor fingerprints, checkpoints. Knows nothing of runs."""
