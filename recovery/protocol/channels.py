"""The two channels of every connection, as numbered on the wire."""

CONTROL, DATA = 0, 1
CHANNELS = (CONTROL, DATA)
