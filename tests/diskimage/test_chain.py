"""Chains of increments made straight through the writer: what a header may name as a parent, how deep a
chain may go, loops, and a parent whose chunk is not what the increment recorded."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import blake3
import pytest

from recovery.diskimage import format as f
from recovery.diskimage.reader import BadChunk, ImageReader
from recovery.diskimage.writer import ImageWriter, new_header
from recovery.engine import imagedir
from recovery.engine.clone import increment as clone_increment
from recovery.errors import ImageError, PassphraseError, TargetWriteError
from tests.diskimage.helpers import MIB, disk_bytes, write_image

SIZE = 4 * MIB


def increment(
    path: Path, parent: ImageReader | f.Parent, disk: bytes, *, image_id: bytes | None = None
) -> tuple[bytes, bytes]:
    """An increment of ``parent`` holding every chunk of ``disk`` as the parent's: its (id, root)."""
    named = (
        parent
        if isinstance(parent, f.Parent)
        else f.Parent(parent.header.image_id, parent.root, Path(parent.path).name)
    )
    header, _ = new_header(SIZE, MIB, 512, None, named)
    if image_id is not None:
        header = dataclasses.replace(header, image_id=image_id)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    writer = ImageWriter(fd, str(path), header, None)
    try:
        writer.start({"made by": "tests"})
        for at in range(0, SIZE, MIB):
            writer.parent(at, MIB, blake3.blake3(disk[at : at + MIB]).digest())
        root = writer.finish({"format": "usb4-recovery image", "version": "2.0"})
    finally:
        writer.close()
        os.close(fd)
    return header.image_id, bytes.fromhex(root)


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, bytes]:
    disk = bytes(disk_bytes(SIZE, seed=3))
    path = tmp_path / "base.img"
    write_image(path, disk)
    return path, disk


def test_an_increment_reads_its_parents_chunks_and_has_the_same_root(base: tuple[Path, bytes]) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        increment(path.parent / "inc.img", parent, disk)
        root = parent.root
    with ImageReader(str(path.parent / "inc.img")) as image:
        assert image.read(0, SIZE) == disk and image.root == root
        assert image.header.major == f.INCREMENT_MAJOR and len(image.chain) == 2


@pytest.mark.parametrize("name", ["../base.img", "sub/base.img", "/tmp/base.img", "..", ".", "", "a\nb.img"])
def test_a_parent_named_by_anything_but_a_plain_name_is_refused(base: tuple[Path, bytes], name: str) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        named = f.Parent(parent.header.image_id, parent.root, name)
    increment(path.parent / "inc.img", named, disk)
    with pytest.raises(ImageError, match="is not a plain file name") as raised:
        ImageReader(str(path.parent / "inc.img"))
    assert "\n" not in raised.value.message


def test_a_missing_or_different_parent_is_a_one_line_error_naming_it(base: tuple[Path, bytes]) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        increment(path.parent / "inc.img", parent, disk)
    os.rename(path, path.parent / "kept.img")
    with pytest.raises(ImageError, match=r"increment of base\.img, which cannot be opened: .* does not exist"):
        ImageReader(str(path.parent / "inc.img"))
    write_image(path, disk)  # the same bytes, another image (another id)
    with pytest.raises(ImageError, match="another image now"):
        ImageReader(str(path.parent / "inc.img"))


def test_a_parent_chunk_that_is_not_the_recorded_one_is_a_bad_chunk(base: tuple[Path, bytes]) -> None:
    path, disk = base
    other = bytearray(disk)
    other[5] ^= 1  # what the source held when the increment was saved differs from the parent's chunk
    with ImageReader(str(path)) as parent:
        named = f.Parent(parent.header.image_id, parent.root, "base.img")
    increment(path.parent / "inc.img", named, bytes(other))
    with ImageReader(str(path.parent / "inc.img")) as image:
        assert image.read(MIB, MIB) == disk[MIB : 2 * MIB]
        with pytest.raises(BadChunk, match=r"at byte 0 .* holds other bytes for it"):
            image.read(0, MIB)


def test_a_chain_is_at_most_max_chain_images_deep(base: tuple[Path, bytes]) -> None:
    path, disk = base
    below = path
    for n in range(1, f.MAX_CHAIN):
        with ImageReader(str(below)) as parent:
            increment(path.parent / f"inc{n}.img", parent, disk)
        below = path.parent / f"inc{n}.img"
    with ImageReader(str(below)) as deepest:
        assert len(deepest.chain) == f.MAX_CHAIN and deepest.read(0, SIZE) == disk
    with ImageReader(str(below)) as parent:
        increment(path.parent / "one-more.img", parent, disk)
    with pytest.raises(ImageError, match=f"chain of more than {f.MAX_CHAIN} images"):
        ImageReader(str(path.parent / "one-more.img"))


def test_increments_that_name_each_other_are_refused(tmp_path: Path) -> None:
    disk = bytes(disk_bytes(SIZE, seed=4))
    a_id, b_id = os.urandom(16), os.urandom(16)
    _, root = increment(tmp_path / "probe.img", f.Parent(b_id, bytes(32), "b.img"), disk)  # the root of such entries
    increment(tmp_path / "a.img", f.Parent(b_id, root, "b.img"), disk, image_id=a_id)
    increment(tmp_path / "b.img", f.Parent(a_id, root, "a.img"), disk, image_id=b_id)
    with pytest.raises(ImageError, match="a chain that loops"):
        ImageReader(str(tmp_path / "a.img"))
    increment(tmp_path / "self.img", f.Parent(a_id, root, "self.img"), disk, image_id=a_id)
    with pytest.raises(ImageError, match="a chain that loops"):
        ImageReader(str(tmp_path / "self.img"))


def test_parent_entries_are_refused_in_a_full_image_and_an_encrypted_image_is_never_an_increment(
    tmp_path: Path, base: tuple[Path, bytes]
) -> None:
    path, _ = base
    raw = bytearray(path.read_bytes())
    with ImageReader(str(path)) as image:
        index = image.footer.index_pos
    raw[index + 60] = f.Codec.PARENT  # the first entry's codec
    with pytest.raises(ImageError, match="unknown codec"):
        list(f.decode_entries(bytes(raw[index : index + 64]), f.decode_header(bytes(raw[:4096])), index))
    with pytest.raises(TargetWriteError, match="never an increment"):
        new_header(SIZE, MIB, 512, b"secret", f.Parent(bytes(16), bytes(32), "base.img"))


def test_a_folder_listing_says_an_increment_without_its_parent_cannot_be_restored(base: tuple[Path, bytes]) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        increment(path.parent / "inc.img", parent, disk)
    assert imagedir.describe(str(path.parent / "inc.img")).problem == ""
    os.remove(path)
    said = imagedir.describe(str(path.parent / "inc.img")).problem
    assert said == "it is an increment of base.img, which is missing here or another image"


def test_a_fifo_or_device_under_the_parents_name_is_refused_without_waiting(base: tuple[Path, bytes]) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        increment(path.parent / "inc.img", parent, disk)
    os.remove(path)
    os.mkfifo(path)  # a crafted folder: opening it for reading would wait for a writer forever
    said: list[BaseException] = []
    thread = threading.Thread(target=lambda: said.extend(_raised(str(path.parent / "inc.img"))), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck open go
        thread.join(10)
        pytest.fail("opening an increment whose parent is a FIFO waited for a writer")
    assert isinstance(said[0], ImageError) and "is not an image file" in said[0].message
    assert "missing here or another image" in imagedir.describe(str(path.parent / "inc.img")).problem


def _raised(path: str) -> list[BaseException]:
    """What opening the image at ``path`` raised (nothing when it opened)."""
    try:
        ImageReader(path).close()
    except Exception as e:  # noqa: BLE001 - the test looks at what it was
        return [e]
    return []


def test_an_encrypted_parent_is_an_image_error_not_a_request_for_a_passphrase(base: tuple[Path, bytes]) -> None:
    path, disk = base
    write_image(path, disk, passphrase=b"secret")
    with ImageReader(str(path), b"secret") as parent:
        increment(path.parent / "inc.img", parent, disk)
    with pytest.raises(ImageError, match=r"increment of base\.img, which is encrypted") as raised:
        ImageReader(str(path.parent / "inc.img"))
    assert not isinstance(raised.value, PassphraseError)


def test_a_parent_of_another_id_is_refused_before_its_index_or_its_own_parent_is_read(
    base: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        named = f.Parent(os.urandom(16), parent.root, "inc.img")  # itself, by another id: no loop by ids
    increment(path.parent / "inc.img", named, disk)
    walks: list[str] = []
    walk = ImageReader._walk_index
    monkeypatch.setattr(ImageReader, "_walk_index", lambda self: walks.append(self.path) or walk(self))
    with pytest.raises(ImageError, match="another image now"):
        ImageReader(str(path.parent / "inc.img"))
    assert len(walks) == 1  # the increment's own index only, not the same file's again and again


def test_a_save_opens_few_earlier_images_however_many_cannot_be_built_on(
    base: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        increment(path.parent / "orphan.img", f.Parent(os.urandom(16), parent.root, "gone.img"), disk)
    for n in range(40):  # a crafted folder: names that each cost a whole open (and chain) to turn down
        os.link(path.parent / "orphan.img", path.parent / f"copy{n}.img")
    monkeypatch.setattr(
        clone_increment, "_same_clone", lambda entry, own, plan: "2026" if "copy" in entry.name else None
    )
    said: list[object] = []
    fd = os.open(path.parent / "new.img", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert clone_increment.find_parent(str(path.parent / "new.img"), fd, None, said.append) is None  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert 0 < len(said) <= clone_increment.MAX_TRIED


def test_a_special_file_under_the_parents_name_is_never_opened(base: tuple[Path, bytes]) -> None:
    path, disk = base
    with ImageReader(str(path)) as parent:
        increment(path.parent / "inc.img", parent, disk)
    os.remove(path)
    os.mkfifo(path)  # as a device node would be (a watchdog, a tape): opening it at all may act
    writer = threading.Thread(target=lambda: os.close(os.open(path, os.O_WRONLY)), daemon=True)
    writer.start()  # waits until something opens the FIFO for reading
    with pytest.raises(ImageError, match="is not an image file"):
        ImageReader(str(path.parent / "inc.img"))
    writer.join(0.5)
    opened = not writer.is_alive()
    if not opened:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
        writer.join(10)
    assert not opened
