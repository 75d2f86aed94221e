"""Cython twins of the hot pieces of wire/, storage/ and phy/ (see pystack._accel)."""
