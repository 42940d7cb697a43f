#!/bin/sh
# Run on the booted stick: the sample disk saved as an image onto a FAT "USB drive" mounted there,
# then checked and described (tests/image/test_boot.py).
set -e
work=$(mktemp -d)
python3 -c "from recovery.demo import build_sample_disk as b; b(\"$work/s.raw\", 64)"
truncate -s 128M "$work/drive.raw"
mkfs.vfat -n BACKUP "$work/drive.raw" >/dev/null
mkdir "$work/drive"
mount -o loop "$work/drive.raw" "$work/drive"
recovery image save --source "$work/s.raw" --output "$work/drive/laptop.img" --json >/dev/null
recovery image verify "$work/drive/laptop.img" --json >/dev/null && echo "verified=yes"
echo "parts=$(recovery image info "$work/drive/laptop.img" --json | grep -o '"fstype":"[a-z0-9]*"' | tr '\n' ' ')"
umount "$work/drive"
rm -rf "$work"
