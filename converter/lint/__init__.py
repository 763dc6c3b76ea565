"""`rkconvert lint`: what the target would refuse, run on the CPU or convert wrongly, and the pass that fixes it."""
