"""Control messages: round trips, byte-at-a-time decoding, and malformed input
always rejected with the codec's own error."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import RemoteProtocolError
from recovery.protocol import messages as m
from recovery.protocol.schema import SchemaError

IDENTITY = m.Identity(
    path="/dev/sdb",
    size=10**12,
    kind="disk",
    host_id="h",
    fingerprint="ab" * 32,
    wwn="naa.5000",
    serial="S1",
    model="Disk",
    storage=("=blk:8:16",),
)
SAMPLES: list[m.Message] = [
    m.Hello(
        host=m.HostInfo("pc", "id", "usb4-recovery 0.2.0", uuid="u", machine_id="m"),
        role="sender",
        nonce="00" * 16,
        caps=("zstd",),
    ),
    m.Pake(role="driver", attempt=1, msg="41" * 33),
    m.Confirm(attempt=1, mac="ab" * 32),
    m.PairFailed(attempt=2, reason="wrong_code", message="no"),
    m.Inventory(
        disks=(
            m.DiskInfo(
                path="/dev/sda",
                size=1,
                partitions=(m.PartitionInfo(number=1, start=1048576, size=2, fstype="ext4", label="root", used=1),),
            ),
        )
    ),
    m.Bye(reason="done"),
    m.Request(source="/dev/sda", mode="used", level="auto", source_identity=IDENTITY),
    m.Plan(
        session="s",
        source=IDENTITY,
        size=10**12,
        mode="exact",
        chunk_size=4 << 20,
        codecs=("zstd", "raw"),
        map=m.MapSummary(
            extents=3,
            bytes=10,
            digest="cd" * 32,
            parts=(m.MapPart(number=1, start=0, size=5, fstype="ext4", method="used", bytes=3),),
        ),
        frames=3,
        encrypted=True,
        target=IDENTITY,
    ),
    m.Accept(target=IDENTITY),
    m.Accept(
        target=IDENTITY,
        delta=m.DeltaOffer(frames=2, bytes=8192, since="2026-12-01 10:00:00", source_desc="pc:sda", trusted=True),
    ),
    m.Digests(first=0, digests="ab" * 64, ranges="00" * 12 + "01" * 12),
    m.Refuse(code="refused", message="too small"),
    m.Ack(seq=5, bytes=100),
    m.Progress(phase="transfer", done=1, total=2, link_busy=0.5, work_busy=0.25, write_busy=1.0),
    m.Progress(phase="verify", done=1, total=2),
    m.Done(frames=3, bytes=10, list_digest="ef" * 32, source_digest=None),
    m.Summary(
        frames=3,
        bytes_written=10,
        list_digest="ef" * 32,
        target_digest="01" * 32,
        verified=False,
        mismatches=(m.Range(offset=0, length=4096),),
        seconds=1.5,
    ),
    m.Error(code="integrity", message="bad"),
    m.Cancel(reason="user"),
    m.Activity(
        what="reviewing the clone", step=6, steps=6, review=(m.ReviewLine("DESTROYS", "everything on sdb of b"),)
    ),
    m.Ping(),
    m.Measure(),
    m.Measured(target=IDENTITY),
    m.Measured(refused="refusing to write /dev/sdb: it holds the mounted filesystem /"),
    m.FindImages(folder="/media/usb"),
    m.Images(
        folder="/media/usb",
        images=(
            m.ImageEntry("laptop.img", 1 << 30, 1 << 34, 4096, "/dev/nvme0n1, 16 GiB", "pc", "2026-12-06", "exact"),
            m.ImageEntry(name="old.img", file_bytes=4096, encrypted=True, problem="incomplete"),
        ),
        places=("/media/usb", "/srv/images"),
        free=1 << 40,
        more=3,
    ),
    m.Request(source="/media/usb/laptop.img", mode="used", level="auto", image=True),
    m.Request(source="/media/usb/laptop.img", mode="used", level="auto", image=True, passphrase="correct horse"),
    m.Request(
        source="/dev/sda",
        mode="used",
        level="auto",
        source_identity=IDENTITY,
        fit="shrink",
        target=IDENTITY,
        sizes=(m.PartSize(2, 120 << 30),),
    ),
]
SAMPLES.append(  # a plan that saves an image instead of writing a pinned target
    dataclasses.replace(next(s for s in SAMPLES if isinstance(s, m.Plan)), target=None, image="/media/usb/laptop.img")
)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: s.type)
def test_round_trip_whole_and_byte_at_a_time(msg: m.Message) -> None:
    data = m.encode_preamble() + m.encode_message(msg) + m.encode_message(msg)
    dec = m.ControlDecoder()
    dec.receive_data(data)
    assert dec.next_message() == msg and dec.next_message() == msg and dec.next_message() is None
    slow = m.ControlDecoder()
    got = []
    for b in data:
        slow.receive_data(bytes([b]))
        while (x := slow.next_message()) is not None:
            got.append(x)
    assert got == [msg, msg] and slow.buffered == 0


def test_unknown_fields_are_ignored() -> None:
    body = json.dumps({"type": "ack", "seq": 1, "bytes": 2, "future_field": [1, 2]}).encode()
    assert m.decode_body(body) == m.Ack(seq=1, bytes=2)


def test_an_unknown_type_marked_optional_is_skipped_and_any_other_refused() -> None:
    dec = m.ControlDecoder()
    dec.receive_data(
        m.encode_preamble()
        + m.frame_record(b'{"type": "resume_hint", "optional": true, "x": 1}')
        + m.encode_message(m.Ping())
    )
    assert dec.next_message() == m.Ping()
    with pytest.raises(SchemaError, match="unknown control message type"):
        m.decode_body(b'{"type": "resume_hint", "x": 1}')


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"type": "ack", "seq": 1' + b"0" * 5000 + b', "bytes": 0}', "not valid"),  # a 5000-digit integer
        (b'{"type": "refuse", "code": "x", "message": "\\ud800"}', "lone surrogate"),
        (
            b'{"type": "request", "source": "/dev/s\\u0000da", "mode": "used", "level": "auto"}',
            "control character 0x00",
        ),
        (b'{"type": "refuse", "code": "x", "message": "a\\u001b[2Jfake screen"}', "control character 0x1b"),
        (
            b'{"type": "activity", "what": "x", "review": [{"label": "a", "text": "\\u001b[2J"}]}',
            "control character 0x1b",
        ),
        (
            b'{"type": "activity", "what": "x", "review": [' + b",".join([b'{"label": "a", "text": "b"}'] * 17) + b"]}",
            "17 items, at most 16",
        ),
        (b'{"type": "activity", "what": "x", "review": [{"label": "' + b"a" * 17 + b'", "text": ""}]}', "at most 16"),
        (
            b'{"type": "images", "optional": true, "images": [{"name": "a\\u001b[2J", "file_bytes": 1}]}',
            "control character 0x1b",
        ),
        (
            b'{"type": "images", "optional": true, "images": ['
            + b",".join([b'{"name": "a", "file_bytes": 1}'] * 65)
            + b"]}",
            "65 items, at most 64",
        ),
        (b'{"type": "images", "optional": true, "places": ["' + b"a" * 4097 + b'"]}', "at most 4096"),
        (b'{"type": "find_images", "optional": true, "folder": "' + b"a" * 4097 + b'"}', "at most 4096"),
    ],
)
def test_hostile_values_are_refused_cleanly(body: bytes, words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        m.decode_body(body)


@pytest.mark.parametrize(
    "body, words",
    [
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "nope"}', "unknown control message"),
        (b'{"type": "ack", "seq": -1, "bytes": 0}', "outside"),
        (b'{"type": "ack", "seq": true, "bytes": 0}', "integer"),
        (b'{"type": "ack", "bytes": 0}', "missing field"),
        (b'{"type": "refuse", "code": "x", "message": "' + b"a" * 2000 + b'"}', "at most"),
        (b'{"type": "plan", "session": "s"}', "missing"),
        (b'{"type": "progress", "phase": "x", "done": 1, "total": 1, "write_busy": 1e999}', "out of range"),
        (b'{"type": "progress", "phase": "x", "done": 1, "total": 1, "link_busy": 1.5}', "out of range"),
        (
            b'{"type": "hello", "host": {"hostname": "a", "host_id": "b", "software": "c"}, "role": "boss", '
            b'"nonce": "x"}',
            "not one of",
        ),
        (b"[" * 100000 + b"]" * 100000, "not valid"),
    ],
)
def test_malformed_bodies_name_the_problem(body: bytes, words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        m.decode_body(body)


def test_oversized_length_is_refused_before_buffering() -> None:
    dec = m.ControlDecoder()
    dec.receive_data(m.encode_preamble() + m.MESSAGE_LENGTH.pack(m.MAX_MESSAGE + 1))
    with pytest.raises(SchemaError, match="exceeds"):
        dec.next_message()


def test_other_major_version_names_both_and_says_which_machine_to_upgrade() -> None:
    dec = m.ControlDecoder()
    dec.receive_data(m.encode_preamble((3, 7)))
    with pytest.raises(m.VersionMismatch, match=r"3\.7.*2\.1.*newer") as newer:
        dec.next_message()
    assert newer.value.hint == "upgrade usb4-recovery on this machine"
    dec = m.ControlDecoder()
    dec.receive_data(m.encode_preamble((1, 0)))
    with pytest.raises(m.VersionMismatch, match=r"1\.0.*2\.1.*older") as older:
        dec.next_message()
    assert older.value.hint == "upgrade usb4-recovery on the other machine"


def test_newer_minor_version_is_accepted() -> None:
    dec = m.ControlDecoder()
    dec.receive_data(m.encode_preamble((2, 9)) + m.encode_message(m.Ping()))
    assert dec.next_message() == m.Ping() and dec.peer_version == (2, 9)


@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_protocol_errors(data: bytes) -> None:
    dec = m.ControlDecoder()
    dec.receive_data(m.encode_preamble() + data)
    try:
        while dec.next_message() is not None:
            pass
    except RemoteProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.sampled_from(sorted(m.MESSAGE_TYPES)), st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_json_objects_of_any_shape_only_raise_schema_errors(kind: str, fields: dict[str, object]) -> None:
    try:
        msg = m.decode_body(json.dumps({**fields, "type": kind}).encode())
    except SchemaError:
        return
    assert msg is not None and msg.type == kind


def test_an_images_passphrase_round_trips_is_bounded_and_never_in_a_repr() -> None:
    plan = dataclasses.replace(
        next(s for s in SAMPLES if isinstance(s, m.Plan)), target=None, image="/x/a.img", passphrase="é" * 1024
    )
    assert m.decode_body(m.encode_body(plan)) == plan
    request = m.Request(source="/x/a.img", mode="used", level="auto", image=True, passphrase="k")
    assert m.decode_body(m.encode_body(request)) == request  # an old image's passphrase may be one character
    assert "passphrase=" not in repr(plan) + repr(request) and "é" not in repr(plan)
    older = json.loads(m.encode_body(request))
    del older["passphrase"]  # a peer without capability "image-passphrase"
    assert m.decode_body(json.dumps(older).encode()) == dataclasses.replace(request, passphrase=None)
    for fields in (json.loads(m.encode_body(request)), json.loads(m.encode_body(plan))):
        with pytest.raises(SchemaError, match=r"\.passphrase: string of 0 characters, at least 1"):
            m.decode_body(json.dumps({**fields, "passphrase": ""}).encode())
        with pytest.raises(SchemaError, match=r"\.passphrase: string of 1025 characters, at most 1024"):
            m.decode_body(json.dumps({**fields, "passphrase": "a" * 1025}).encode())
        with pytest.raises(SchemaError, match="control character 0x1b"):
            m.decode_body(json.dumps({**fields, "passphrase": "a\u001b[2J"}).encode())


def test_the_sizes_a_request_carries_are_bounded_and_absent_from_an_older_peers() -> None:
    request = m.Request(source="/dev/sda", mode="used", level="auto", fit="shrink", target=IDENTITY,
                        sizes=(m.PartSize(1, 1 << 20), m.PartSize(3, 40 << 30)))  # fmt: skip
    assert m.decode_body(m.encode_body(request)) == request
    fields = json.loads(m.encode_body(request))
    del fields["sizes"]  # a peer without capability "fit-sizes"
    assert m.decode_body(json.dumps(fields).encode()) == dataclasses.replace(request, sizes=())
    for bad, said in (
        ([{"number": 0, "size": 1}], r"sizes\[0\]\.number: 0 outside 1\.\.65536"),
        ([{"number": 1, "size": 0}], r"sizes\[0\]\.size: 0 outside"),
        ([{"number": 1, "size": 1}] * 129, r"sizes: 129 items, at most 128"),
    ):
        with pytest.raises(SchemaError, match=said):
            m.decode_body(json.dumps({**fields, "sizes": bad}).encode())


def test_a_repair_request_is_bounded_and_absent_from_an_older_peers() -> None:
    """Capability "delta-repair": a resend that names the chunks found changed; at most MAX_REPAIR of them."""
    resend = m.Resend(seq=9, epoch=1, reason="changed", repair=(m.Range(0, 1 << 20), m.Range(4 << 20, 1 << 20)))
    assert m.decode_body(m.encode_body(resend)) == resend
    fields = json.loads(m.encode_body(resend))
    del fields["repair"]  # a peer without the capability
    assert m.decode_body(json.dumps(fields).encode()) == dataclasses.replace(resend, repair=())
    too_many = [{"offset": 0, "length": 1}] * (m.MAX_REPAIR + 1)
    with pytest.raises(SchemaError, match=rf"repair: {m.MAX_REPAIR + 1} items, at most {m.MAX_REPAIR}"):
        m.decode_body(json.dumps({**fields, "repair": too_many}).encode())


def test_a_full_round_of_repair_fits_in_one_message() -> None:
    """MAX_REPAIR ranges at offsets of a 16 TiB disk and a long reason: within the message limit."""
    ranges = tuple(m.Range((1 << 44) + i * (1 << 20), 1 << 14) for i in range(m.MAX_REPAIR))
    resend = m.Resend(seq=(1 << 40), epoch=(1 << 32) - 1, reason="x" * 512, repair=ranges)
    body = m.encode_body(resend)
    assert len(body) <= m.MAX_MESSAGE
    assert m.decode_body(body) == resend
