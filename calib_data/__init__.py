"""Inputs the UNet is run on: prompt sets and sampler schedules, the check samples of accuracy reports, and
calibration sets recorded along the sampler's trajectories (written in the toolkit's dataset format)."""
