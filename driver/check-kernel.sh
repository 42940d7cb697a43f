#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Refuse, with a reason, to build thunderbolt_stream for a kernel that either
# already has it or cannot use it.  Usage: check-kernel.sh KVER KDIR
set -eu

kver=$1
kdir=$2

die() {
	printf 'thunderbolt_stream: %s\n' "$*" >&2
	exit 1
}

[ -d "$kdir" ] ||
	die "no kernel build tree at $kdir; install the headers for $kver (Debian: linux-headers-$kver)"

conf=
for f in "$kdir/include/config/auto.conf" "$kdir/.config" "/boot/config-$kver"; do
	if [ -r "$f" ]; then
		conf=$f
		break
	fi
done
[ -n "$conf" ] || die "cannot find the configuration of kernel $kver under $kdir"

if grep -Eq '^CONFIG_USB4_STREAM=(y|m)$' "$conf"; then
	die "kernel $kver already provides thunderbolt_stream (CONFIG_USB4_STREAM is set in $conf); use the kernel's own module instead of building this one"
fi
if ! grep -Eq '^CONFIG_USB4_CONFIGFS=(y|m)$' "$conf"; then
	die "kernel $kver is built without CONFIG_USB4_CONFIGFS (see $conf); thunderbolt_stream needs it, so use a kernel that has it"
fi
