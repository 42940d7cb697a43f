"""The wire protocol, pure: codecs and the connection state table, no I/O.

See docs/protocol.md for the format. Nothing here reads or writes a file,
socket or device, so every parser can be fed arbitrary bytes in tests.
"""
