#!/bin/sh
# Run on the booted stick: the sample disk saved as an image (exact mode), mounted with `recovery image
# mount` (its disk a FUSE file through mfusepy and the stick's libfuse3, the filesystems read-only), read
# through it, then taken down from another command (tests/image/test_boot.py).
set -e
work=$(mktemp -d)
python3 -c "from recovery.demo import build_sample_disk as b; b(\"$work/s.raw\", 64)"
recovery image save --source "$work/s.raw" --output "$work/s.img" --mode exact --json >/dev/null
echo "binding=$(python3 -c 'import mfusepy as m; print(m.__name__, m.fuse_version_major)')"
mkdir "$work/m"
recovery image mount "$work/s.img" "$work/m" --json >"$work/mount.json" 2>"$work/mount.err" &
pid=$!
for _ in $(seq 600); do
    grep -q '"image_mount"' "$work/mount.json" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
done
echo "mounted=$(grep '"image_mount"' "$work/mount.json" || echo "none: $(tail -c 600 "$work/mount.err")")"
echo "fuse=$(findmnt -n -o FSTYPE "$work/m/disk" || true)"
[ "$(b3sum --no-names "$work/m/disk")" = "$(b3sum --no-names "$work/s.raw")" ] && echo "disk=same"
echo "hostname=$(cat "$work/m/p1/etc/hostname" || true)"
recovery image unmount "$work/m" --json >/dev/null || echo "unmount=failed"
rc=0
wait "$pid" || rc=$?
echo "mount_rc=$rc left=$(find "$work/m" -mindepth 1 | wc -l) loops=$(losetup -a | grep -c "$work" || true)"
rm -rf "$work"
