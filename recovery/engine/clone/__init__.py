"""One clone: the sender's and the receiver's steps, the two pipelines, source and target I/O, the
read-back and the filesystem checks, and what both sides record of the frames."""
