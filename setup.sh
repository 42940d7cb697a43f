#!/usr/bin/env bash
# Set up this machine for usb4-recovery, as root on Debian 12 (or newer):
# the Debian packages the tool calls, and a Python virtualenv in .venv with
# the app installed.
#
#   ./setup.sh         what `recovery` and `recovery demo` need
#   ./setup.sh --dev   also what the tests need (linters, QEMU and OVMF for
#                      the boot tests, mmdebstrap and friends for the image)
set -euo pipefail
cd "$(dirname "$0")"

dev=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

# What the app runs: partclone for used blocks; blkid, sfdisk, wipefs, losetup
# and partx (util-linux, fdisk) for disks; each filesystem's read-only checker
# for the check after a used-mode copy (e2fsprogs, xfsprogs, btrfs-progs,
# ntfs-3g, dosfstools, exfatprogs, f2fs-tools); mkfs and mtools for the demo's
# sample disk; b3sum so users can check digests; iproute2 for links;
# qemu-utils (qemu-img) to export images as qcow2 and VHDX; fuse3 (libfuse3,
# which the mfusepy package loads) for `recovery image mount` to serve an
# image's disk as a file (the stick's Debian has no mfusepy either:
# build-image.sh fetches the wheel the lock pins with this venv's pip and
# installs it there, with the image's own fuse3); fatresize to shrink and
# grow FAT16/FAT32 partitions in a fitted clone (--fit).
packages=(partclone zstd b3sum util-linux fdisk e2fsprogs dosfstools mtools
          xfsprogs btrfs-progs ntfs-3g exfatprogs f2fs-tools iproute2 qemu-utils
          fuse3 fatresize python3 python3-venv)
if [ "$dev" = 1 ]; then
    # Tests: shellcheck for the scripts, gdisk/sfdisk for images, exfat-fuse to
    # fill exFAT test filesystems (this kernel has no exfat), nc for the bench
    # harness (tests/bench/compare.py), python3-fusepy to serve failing disks
    # (reads that fail at chosen sectors) and gddrescue's ddrescuelog to read
    # the rescue's mapfile as ddrescue's own tools do, bmap-tools to write an
    # exported image as bmaptool does, libhivex-bin (hivexsh, hivexget) to make
    # and read the Windows registry hive that names a machine, QEMU+OVMF for the boot
    # tests (OVMF also with Secure Boot and Microsoft's keys), mmdebstrap and
    # systemd-boot for building the image; sbsigntool, binutils, openssl and
    # kmod for check-signatures.sh on the built image.
    packages+=(shellcheck gdisk exfat-fuse netcat-openbsd python3-fusepy gddrescue bmap-tools libhivex-bin
               qemu-system-x86 ovmf mmdebstrap systemd-boot-efi cpio xz-utils ca-certificates sbsigntool binutils openssl kmod)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: run as root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python side comes from a lock file: exactly the versions the tests
# passed with, each file checked against its hash (requirements/refresh.sh
# makes the locks from pyproject.toml's ranges). pip and the build backend
# are locked too, and the app itself is installed with no further downloads.
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
lock=requirements/app.txt
if [ "$dev" = 1 ]; then
    lock=requirements/test.txt
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
# (setuptools warns about every editable install: its words go to a log, shown on failure)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . \
    >.venv/install-app.log 2>&1 || {
    cat .venv/install-app.log >&2
    exit 1
}
.venv/bin/python -m pip check >/dev/null || {
    .venv/bin/python -m pip check >&2
    echo "setup.sh: .venv holds packages that do not fit together (above); remove .venv and run again" >&2
    exit 1
}
echo "setup.sh: ready (.venv/bin/recovery, Python packages from $lock)"
