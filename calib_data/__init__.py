"""Inputs the UNet is run on: check samples for accuracy reports (and, later, calibration sets)."""
