"""An interrupted save resumes: the image file records its own chunks, so the same commands again send
only the rest, and the finished image is checked like any other. Real processes over real TCP through
a relay that plays a slow link and can be cut; the receiver killed as a reboot would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.diskimage import format as f
from recovery.diskimage.reader import ImageReader
from recovery.diskimage.verify import check_image
from recovery.errors import LinkError
from tests.e2e.relay import RelayedClone
from tests.helpers import MIB, b3sum, fill_random

SIZE = 64 * MIB
RATE = 16e6


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    fill_random(path, SIZE, seed=4)
    with open(path, "r+b") as f:
        for mib in range(4, SIZE // MIB, 12):
            f.seek(mib * MIB)
            f.write(bytes(3 * MIB))
    return path


def Save(source: Path, image: Path, *extra: str, rate: float | None = None) -> RelayedClone:
    return RelayedClone(str(source), ("--image", str(image), *extra), rate=rate)


@pytest.mark.parametrize("how", ["cable", "receiver"])
def test_an_interrupted_save_resumes_and_sends_only_the_rest(source: Path, tmp_path: Path, how: str) -> None:
    image = tmp_path / "disk.img"
    first = Save(source, image, rate=RATE)
    first.durable(16 * MIB)
    if how == "cable":
        first.relay.cut()
        assert first.rx.wait(30) == LinkError.exit_code
        assert "records how far it got in" in first.rx.stderr and str(image) in first.rx.stderr
    else:
        first.rx.kill()
    first.tx.wait(30)
    first.relay.close()
    assert image.exists()
    with pytest.raises(Exception, match="incomplete"):
        ImageReader(str(image))

    second = Save(source, image)
    assert second.rx.wait(60) == 0, second.rx.stderr
    assert second.tx.wait(60) == 0, second.tx.stderr
    second.relay.close()
    [resumed] = [e for e in second.rx.events if e["event"] == "resume"]
    assert resumed["bytes"] >= 16 * MIB
    assert second.relay.passed <= SIZE - resumed["bytes"] + 2 * MIB  # only the rest crossed the link
    summary = second.rx.event("summary")
    assert summary["verified"] is True and summary["image_digest"] == b3sum(str(source))
    with ImageReader(str(image)) as img:
        checked = check_image(img, whole=True)
        assert not checked.bad and checked.disk_digest == b3sum(str(source))


def test_an_unfinished_image_of_another_disk_is_not_replaced_without_yes(source: Path, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    first = Save(source, image, rate=RATE)
    first.durable(8 * MIB)
    first.rx.kill()
    first.tx.wait(30)
    first.relay.close()
    size = image.stat().st_size

    other = tmp_path / "other.raw"
    fill_random(other, 32 * MIB, seed=9)
    second = Save(other, image)
    assert second.rx.wait(60) == 3
    assert "unfinished image of" in second.rx.event("error")["message"]
    second.tx.wait(30)
    second.relay.close()
    assert image.stat().st_size == size  # untouched
    third = Save(other, image, "--yes")
    assert third.rx.wait(60) == 0, third.rx.stderr
    assert third.tx.wait(60) == 0
    third.relay.close()
    assert not [e for e in third.rx.events if e["event"] == "resume"]
    os.unlink(image)


def test_an_interrupted_increment_resumes_as_an_increment(source: Path, tmp_path: Path) -> None:
    base = tmp_path / "disk-1.img"
    full = Save(source, base)
    assert full.rx.wait(60) == 0, full.rx.stderr
    full.tx.wait(60)
    full.relay.close()
    with open(source, "r+b") as disk:  # half of the 4 MiB chunks change
        for mib in range(0, SIZE // MIB, 8):
            disk.seek(mib * MIB)
            disk.write(os.urandom(4 * MIB))

    image = tmp_path / "disk-2.img"
    first = Save(source, image, rate=RATE / 4)
    first.durable(8 * MIB)
    first.rx.kill()
    first.tx.wait(30)
    first.relay.close()

    second = Save(source, image)
    assert second.rx.wait(60) == 0, second.rx.stderr
    assert second.tx.wait(60) == 0, second.tx.stderr
    second.relay.close()
    assert second.rx.event("resume")["bytes"] >= 8 * MIB
    summary = second.rx.event("summary")
    assert summary["verified"] is True and summary["image_digest"] == b3sum(str(source))
    assert summary["parent"] == "disk-1.img"
    with ImageReader(str(image)) as img:
        assert img.header.parent is not None and img.header.parent.name == "disk-1.img"
        # The chunks before the cut that did not change; after a resume no delta is offered: the rest is stored.
        assert 0 < sum(e.codec is f.Codec.PARENT for e in img.entries()) <= SIZE // MIB // 8
        checked = check_image(img, whole=True)
        assert not checked.bad and checked.disk_digest == b3sum(str(source))
