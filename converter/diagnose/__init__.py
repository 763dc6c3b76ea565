"""`rkconvert diagnose`: why a conversion fails, reduced to a repro, and what fixes it."""
