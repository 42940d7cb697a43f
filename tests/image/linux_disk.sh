#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Make a small Linux system disk for the fitted-clone boot test (tests/image/test_fitted_boot.py): GPT, an
# EFI system partition (FAT32: systemd-boot, the kernel and its initramfs) and an ext4 root, with Debian
# bookworm's generic kernel, initramfs-tools and systemd. It boots by UUID: the kernel's root=UUID=, and
# /etc/fstab mounts the root and the ESP by theirs. On the serial console, systemd starts a getty.
#
# usage: linux_disk.sh OUTPUT [SIZE_MIB]   (root; mmdebstrap, sfdisk, mkfs.vfat, mtools, systemd-boot-efi)

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../../debian-mirror.sh
. "$here/../../debian-mirror.sh"

output=${1:?usage: linux_disk.sh OUTPUT [SIZE_MIB]}
size_mib=${2:-3072}
esp_mib=128
suite=bookworm
mirror=${MIRROR:-$(default_mirror)} || { echo "linux_disk.sh: no Debian mirror in /etc/apt" >&2; exit 1; }
boot_efi=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -r "$boot_efi" ] || { echo "linux_disk.sh: $boot_efi is missing (systemd-boot-efi)" >&2; exit 1; }

work=$(mktemp -d)
loop=
cleanup() {
	mountpoint -q "$work/mnt" && umount "$work/mnt"
	if [ -n "$loop" ]; then
		partx --delete "$loop" 2>/dev/null || true
		losetup --detach "$loop"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

mmdebstrap --mode=root --variant=minbase --quiet \
	--aptopt='APT::Install-Recommends "false"' \
	--aptopt='Acquire::Languages "none"' \
	--include=systemd-sysv,udev,linux-image-amd64,initramfs-tools,zstd,e2fsprogs,dosfstools,kmod \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	"$suite" "$work/root" "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"

rm -f "$output"
truncate -s "${size_mib}M" "$output"
sfdisk --quiet "$output" <<EOF
label: gpt
size=${esp_mib}MiB, type=uefi, name="EFI system"
type=linux, name="root"
EOF
loop=$(losetup --find --show "$output")
partx --add "$loop" 2>/dev/null || true
mkfs.vfat -F 32 -n ESP "${loop}p1" >/dev/null
mkfs.ext4 -q -F -L root -E nodiscard "${loop}p2"
esp_uuid=$(blkid -p -s UUID -o value "${loop}p1")
root_uuid=$(blkid -p -s UUID -o value "${loop}p2")

echo fitted >"$work/root/etc/hostname"
cat >"$work/root/etc/fstab" <<EOF
UUID=$root_uuid / ext4 errors=remount-ro 0 1
UUID=$esp_uuid /boot/efi vfat umask=0077 0 2
EOF
mkdir -p "$work/root/boot/efi" "$work/mnt"
mount "${loop}p2" "$work/mnt"
cp -a "$work/root/." "$work/mnt/"
umount "$work/mnt"

mkdir -p "$work/esp/EFI/BOOT" "$work/esp/loader/entries"
cp "$boot_efi" "$work/esp/EFI/BOOT/BOOTX64.EFI"
cp "$work/root"/boot/vmlinuz-* "$work/esp/vmlinuz"
cp "$work/root"/boot/initrd.img-* "$work/esp/initrd.img"
printf 'timeout 0\ndefault debian.conf\n' >"$work/esp/loader/loader.conf"
cat >"$work/esp/loader/entries/debian.conf" <<EOF
title Debian (fitted-clone test)
linux /vmlinuz
initrd /initrd.img
options root=UUID=$root_uuid ro console=ttyS0 systemd.show_status=error
EOF
MTOOLS_SKIP_CHECK=1 mcopy -s -i "${loop}p1" "$work/esp/EFI" "$work/esp/loader" "$work/esp/vmlinuz" \
	"$work/esp/initrd.img" ::/
echo "linux_disk.sh: $output (root UUID $root_uuid)"
