"""`rkconvert matrix`: many builds from one file, locally (on Ray: see executors)."""
