"""Fixed machines, disks and clone events, so screens render the same every run."""

from __future__ import annotations

import dataclasses

from recovery import events
from recovery.engine.peer.jobs import JobStarted
from recovery.protocol.messages import DiskInfo, Identity, PartitionInfo
from recovery.tui.config import WizardConfig
from recovery.tui.job import JobView
from recovery.tui.links import LinkReport
from recovery.tui.model import Choice
from recovery.tui.state import PeerView

GIB = 1 << 30
MIB = 1 << 20
HERE, THERE = "rescue-laptop", "new-laptop"


def ident(path: str, size: int, host: str, serial: str | None) -> Identity:
    return Identity(
        path=path, size=size, kind="disk", host_id=host, fingerprint="0" * 64, serial=serial, storage=(f"=blk:{path}",)
    )


def disk(
    path: str,
    size: int,
    host: str,
    *,
    model: str,
    serial: str,
    parts: tuple[PartitionInfo, ...] = (),
    ptable: str | None = "gpt",
    refusal: str | None = None,
    blank: bool | None = None,
) -> DiskInfo:
    return DiskInfo(
        path=path,
        size=size,
        model=model,
        serial=serial,
        transport="nvme",
        ptable=ptable,
        partitions=parts,
        refusal=refusal,
        identity=ident(path, size, host, serial),
        boot_medium=refusal == "it is the boot stick of this appliance",
        blank=blank,
    )


LOCAL = (
    disk(
        "/dev/nvme0n1",
        512 * GIB,
        "here",
        model="Samsung SSD 980 PRO",
        serial="S69ENF0R123456",
        parts=(
            PartitionInfo(1, MIB, 512 * MIB, "vfat", "EFI", 31 * MIB),
            PartitionInfo(2, 513 * MIB, 480 * GIB, "ext4", "root", 51 * GIB, "Debian GNU/Linux 12 (bookworm)"),
            PartitionInfo(3, 481 * GIB, 31 * GIB, "swap", None, None),
        ),
    ),
    disk(
        "/dev/sda",
        15 * GIB,
        "here",
        model="SanDisk Cruzer",
        serial="4C530001230921",
        parts=(PartitionInfo(1, MIB, 1 * GIB, "vfat", "U4RECOVERY", 600 * MIB),),
        refusal="it is the boot stick of this appliance",
    ),
)
PEER = (
    disk("/dev/nvme0n1", 1024 * GIB, "there", model="WD Blue SN580", serial="23411Z800123", ptable=None, blank=True),
    disk(
        "/dev/sda",
        256 * GIB,
        "there",
        model="Crucial MX500",
        serial="2131E5A1B2C3",
        parts=(PartitionInfo(1, MIB, 255 * GIB, "ntfs", "Data", 120 * GIB, "Windows"),),
    ),
    disk(
        "/dev/sdb",
        15 * GIB,
        "there",
        model="SanDisk Cruzer",
        serial="4C530001230922",
        parts=(PartitionInfo(1, MIB, 1 * GIB, "vfat", "U4RECOVERY", 600 * MIB),),
        refusal="it is the boot stick of this appliance",
    ),
)
LINKS = LinkReport(
    modules=(
        ("thunderbolt", "USB4/Thunderbolt bus", True),
        ("thunderbolt_net", "IP over the cable", True),
        ("thunderbolt_stream", "USB4STREAM", False),
    ),
    hosts_on_cable=(),
    addresses=("192.168.1.20",),
)
PEER_VIEW = PeerView(
    hostname=THERE,
    software="usb4-recovery 0.2.0",
    machine_id="3d1219c7c4c54b7f9e0a1c2d3e4f5a6b",
    link="tcp",
    address="192.168.1.31:7554",
    speed="1 Gb/s (eth0)",
    security="paired; data encrypted by default on this link",
    session="4714336dad7f",
    drives=True,
    disks=len(PEER),
)
PASSIVE_VIEW = PeerView(
    hostname=THERE,
    software="usb4-recovery 0.2.0",
    machine_id=None,
    link="tbnet",
    address="[fe80::2]:7554",
    speed="40.0 Gb/s x 2 lanes",
    security="paired; data encrypted by default on this link",
    session="4714336dad7f",
    drives=False,
    disks=0,
)
CODE = "4821-0937"


def config(**kw: object) -> WizardConfig:
    """A wizard that reads nothing from this machine and neither listens nor connects."""
    base: dict[str, object] = dict(
        hostname=HERE,
        listen=None,
        connect=None,
        cable=False,
        code=CODE,
        inventory=lambda: LOCAL,
        links=lambda: LINKS,
        ansi=False,
    )
    base.update(kw)
    return WizardConfig(**base)  # type: ignore[arg-type]


def choice() -> Choice:
    return Choice(send=True, source=LOCAL[0], target=PEER[0])


def job(*, passive: bool = False, finished: bool = False, stage: str = "transfer", failed: bool = False) -> JobView:
    """A clone of 51 GiB of a 512 GiB disk, half copied (or finished, or half read back)."""
    started = JobStarted(
        role="receiver" if passive else "sender",
        driver="peer" if passive else "here",
        peer=HERE if passive else THERE,
        source=f"{HERE}:/dev/nvme0n1, Samsung SSD 980 PRO S69ENF0R123456, 512.0 GiB"
        if passive
        else "/dev/nvme0n1, Samsung SSD 980 PRO S69ENF0R123456, 512.0 GiB",
        target="/dev/nvme0n1, WD Blue SN580 23411Z800123, 1.0 TiB"
        if passive
        else f"{THERE}:/dev/nvme0n1, WD Blue SN580 23411Z800123, 1.0 TiB",
        log="/var/log/usb4-recovery/clone-20261125-101500-sender.jsonl",
        action=f"{HERE} is OVERWRITING /dev/nvme0n1, WD Blue SN580 23411Z800123, 1.0 TiB with its disk /dev/nvme0n1"
        if passive
        else "",
    )
    view = JobView(started, host=THERE if passive else HERE, clock=lambda: 1081.0, started_at=1000.0)
    view.apply(events.Phase("map", "finding what to copy"))
    view.apply(
        events.PlanMade(
            role=started.role,
            source=started.source,
            target=started.target,
            mode="used",
            size=512 * GIB,
            to_send=51 * GIB,
            chunk_size=4 * MIB,
        )
    )
    view.apply(events.Phase("transfer", "sending 13056 chunks"))
    stages = {"read": 0.41, "compress": 0.33, "link": 0.97, "decompress": 0.21, "write": 0.52}
    rounds = 80 if stage != "transfer" or finished else 40
    for i in range(1, rounds + 1):
        rate = (330 + 40 * ((i * 7) % 5) - (120 if i in (17, 18) else 0)) * MIB
        done = min(51 * GIB, i * 653 * MIB)
        view.apply(
            events.Progress(
                phase="transfer",
                done=done,
                total=51 * GIB,
                rate=rate,
                eta=(51 * GIB - done) / rate,
                wire=i * 410 * MIB,
                durable=done - 64 * MIB,
                level="3",
                stages=stages,
                bottleneck="link",
            )
        )
    if stage == "verify" or finished:
        view.apply(events.Phase("verify", "reading /dev/nvme0n1 back to check it"))
        view.apply(events.Progress(phase="verify", done=20 * GIB, total=51 * GIB, rate=1.1 * GIB, eta=28.0))
    view.ended_at = 1161.4 if finished or failed else None
    if finished:
        view.apply(
            events.Summary(
                role="sender",
                mode="used",
                source=started.source,
                target=started.target,
                size=512 * GIB,
                bytes_read=51 * GIB,
                bytes_sent=33 * GIB,
                bytes_written=50 * GIB,
                zero_bytes=1 * GIB,
                seconds=161.4,
                list_digest="6c1f" * 16,
                image_digest=None,
                verified=True,
                checks=[
                    {"number": 1, "check": "fsck.vfat -n", "ok": True, "message": ""},
                    {"number": 2, "check": "e2fsck -fn", "ok": True, "message": ""},
                    {"number": 2, "check": "blkid -p", "ok": True, "message": ""},
                ],
            )
        )
        view.ended_at = 1161.4
    return view


def interrupted(target: DiskInfo, source: DiskInfo, **kw: object) -> DiskInfo:
    """``target`` holding an interrupted clone of ``source`` (as its resume journal says): 344 MiB of 1 GiB."""
    from recovery.engine.resume import journal
    from recovery.protocol.messages import Unfinished

    assert source.identity is not None
    base: dict[str, object] = dict(
        source=journal.target_key(source.identity),
        source_desc=f"{HERE}:{source.path}, {source.model} {source.serial}, 512.0 GiB",
        done=344 * MIB,
        total=GIB,
        since="2026-12-06 14:02:11",
        mode="used",
        source_host=HERE,
        source_name=source.path.rsplit("/", 1)[-1],
        source_model=source.model or "",
    )
    base.update(kw)
    return dataclasses.replace(target, unfinished=Unfinished(**base), blank=False)  # type: ignore[arg-type]
