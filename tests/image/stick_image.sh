#!/bin/sh
# Run on the booted stick: an image saved from the sample disk, then mounted and read (tests/image/test_boot.py).
set -e
work=$(mktemp -d)
python3 -c "from recovery.demo import build_sample_disk as b; b(\"$work/s.raw\", 64)"
recovery image save --source "$work/s.raw" --output "$work/s.img" --yes --json >/dev/null
mkdir "$work/m"
recovery image mount "$work/s.img" "$work/m" --json >"$work/mount.log" 2>&1 &
for _ in $(seq 120); do grep -q '"image_mount"' "$work/mount.log" && break; sleep 1; done
echo "hostname=$(cat "$work/m/p1/etc/hostname")"
echo "fat=$(find "$work/m/p2" -type f | wc -l)"
recovery image unmount "$work/m" --json >/dev/null
wait
rm -rf "$work"
