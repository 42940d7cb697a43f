"""An emulated Thunderbolt/USB4 kernel for two hosts joined by a pretend cable.

Models the USB4STREAM driver as merged for Linux 7.2
(``drivers/thunderbolt/stream.c``), the XDomain HopID pools it allocates
from (``drivers/thunderbolt/xdomain.c``: ``tb_xdomain_alloc_in_hopid`` and
friends, ``ida_free``'s warning), the property exchange between the hosts,
and the part of thunderbolt-net that takes HopIDs
(``drivers/net/thunderbolt/main.c``). docs/links.md lists the driver facts
the link relies on; each has one test in tests/links/test_fakekernel.py.

Modelled: ConfigFS group and stream mkdir/rmdir (name checks, the global
index pool, the device node), attribute writes (HopIDs checked only while
attached and stored as is otherwise; EBUSY while open; ring_size and
throttling limits), attach at mkdir and at plug (adoption of the peer's
values only when both HopIDs are <= 0, allocation failures ignored), detach
(values kept), rmdir (HopIDs released, the advertisement kept), the
published properties reaching the peer after a delay with a ``change``
uevent on its service device, the character device opened non-blocking
(ENXIO, EINVAL, ENOMEM when the rings do not fit), rings of 4 KiB frames
with ``ring_size - 1`` transmit slots, short writes, end-to-end flow
control, bytes lost when nobody receives them, read() giving 0 once for the
CLOSE frame, write() still accepting bytes after the peer closed, the
last close sending CLOSE only if a slot is free and dropping what is
queued after 500 ms, CRC-flagged frames delivered (and not waking the
reader), POLLHUP|POLLERR and ENXIO after an unplug, thunderbolt-net's
transmit HopID taken from the bottom and its receive HopID required to be
exactly the peer's, and the kernel log lines those paths print.

Not modelled: blocking opens and reads (the project never uses them), the
real DMA and its timing (the wire moves frames as fast as Python can, or at
a set rate), suspend and resume, hardware beyond one cable between two
hosts, the wedged router paths that repeated opens have caused on real
hardware, the 7.3 driver beyond an attribute file named ``busy_poll``, and
the network data path of thunderbolt-net (tests use real sockets for that).
"""

from tests.links.fakekernel.fabric import Fabric, FakeHost
from tests.links.fakekernel.fs import FakeDevice, FakeOps

__all__ = ["Fabric", "FakeDevice", "FakeHost", "FakeOps"]
