"""Resuming an interrupted clone: the receiver's journal of what is durable, and both sides
agreeing where the stream starts."""
