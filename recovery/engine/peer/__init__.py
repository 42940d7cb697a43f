"""Meeting a peer: the connections a program waits for, the pairing, the control channel, and the
session of clones two paired machines run (one drives, the other serves)."""
