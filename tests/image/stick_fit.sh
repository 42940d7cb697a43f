#!/bin/sh
# Run on the booted stick: the sample disk shrunk onto a smaller disk (recovery send --fit shrink) with the
# stick's own copy-on-write view (a device-mapper snapshot), over a local --via pipe (tests/image/test_boot.py).
set -e
work=$(mktemp -d)
python3 -c "from recovery.demo import build_sample_disk as b; b(\"$work/s.raw\", 128)"
truncate -s 100M "$work/t.raw"
src=$(losetup --find --show --read-only "$work/s.raw")
tgt=$(losetup --find --show "$work/t.raw")
before=$(b3sum --no-names "$src")
if recovery send --source "$src" --fit shrink --json \
    --via "recovery receive --target $tgt --from - --yes --json" >"$work/tx.json" 2>"$work/tx.err"; then
    echo "sent=yes"
else
    echo "sent=no $(tail -c 600 "$work/tx.err")"
fi
echo "view=$(grep -o '"view": *"[a-z-]*"' "$work/tx.json" | head -1)"
grep -o '"verified": *[a-z]*' "$work/tx.json" | head -1
[ "$(b3sum --no-names "$src")" = "$before" ] && echo "source=unchanged"
partx --add "$tgt" 2>/dev/null || true
e2fsck -fn "${tgt}p1" >/dev/null 2>&1 && echo "ext4=clean"
echo "leftover=$(dmsetup ls | grep -c usb4-recovery || true)"
partx --delete "$tgt" || true
losetup --detach "$src" "$tgt"
rm -rf "$work"
