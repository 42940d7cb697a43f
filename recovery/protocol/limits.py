"""The limits both sides hold to (pure): what a plan, a frame stream and a resend may be at most.

One place, so the frame codec, the plan's schema, the sender's checks of its own options and the
receiver's checks of a peer's plan cannot drift apart.
"""

from __future__ import annotations

CHUNK_ALIGN = 4096  # a chunk size is a multiple of this
MAX_CHUNK_SIZE = 16 << 20  # the largest chunk, whatever a plan says
MERGE_GAP = 1 << 20  # frames in one grid cell are further apart than this
MAX_FRAMES = 8 << 20  # a plan may announce no more (32 TiB at the default 4 MiB chunk): the receiver
# keeps 57 bytes per frame (engine/clone/framelist.py) and journals 1.3 per ZERO
# frame in a run, 66 per DATA frame
MAX_PASSES = 16  # passes after the first (rescue mode, replacements)
MAX_EPOCH = (1 << 32) - 1  # resends open epochs 1, 2, ... up to this
RESENDS_PER_FRAME = 3  # a frame damaged this many more times ends the clone
RESENDS_PER_CLONE = 64  # and this many resends in all
MAX_REPAIR = 65536  # ranges a delta's receiver asks for in one repair round (resend.repair): chunks sent as
# SAME found changed on the target, and runs of blocks of chunks sent as BLOCKS that differ there
MAX_REPAIR_BYTES = 64 << 30  # ... and the bytes they cover
DELTA_BLOCK = 16 << 10  # a BLOCKS frame's digests are of this many bytes each (the last one of a chunk: fewer)
# The sender sends at most this many BLOCKS frames in one clone, of at most this many bytes in all (then DATA
# frames): should all their blocks differ, their ranges fill at most half the rounds a clone's passes leave
# (MAX_PASSES, one for a resume's replacements, one to spare) and their bytes the other half
MAX_BLOCKS_FRAMES = (MAX_PASSES - 2) // 2 * MAX_REPAIR
MAX_BLOCKS_BYTES = (MAX_PASSES - 2) // 2 * MAX_REPAIR_BYTES
MAX_PARTS = 128  # partitions a plan may name (a GPT's usual table); the receiver checks each
# An image's passphrase typed in the wizard, sent to the peer that saves or restores it (capability
# "image-passphrase"): at most this many characters, so at most 4096 bytes in UTF-8 (recovery.diskimage.seal)
MAX_PASSPHRASE_CHARS = 1024
