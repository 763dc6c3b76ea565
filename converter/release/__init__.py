"""`rkconvert release` and `rkconvert verify`: a finished build as a tarball for the board, with a
manifest read from the artifact itself, and the checks that the bundle is what its manifest says."""
