#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Check a built thunderbolt_stream.ko: its vermagic must name the kernel it is
# meant for, or the kernel refuses to load it.  Usage: check-module.sh KVER KO
set -eu

kver=$1
ko=$2

[ -f "$ko" ] || {
	printf 'thunderbolt_stream: %s not built\n' "$ko" >&2
	exit 1
}
vermagic=$(modinfo -F vermagic "$ko")
release=${vermagic%% *}
if [ "$release" != "$kver" ]; then
	printf 'thunderbolt_stream: %s has vermagic "%s", expected kernel %s\n' "$ko" "$vermagic" "$kver" >&2
	exit 1
fi
printf 'thunderbolt_stream: %s vermagic "%s" matches %s\n' "$ko" "$vermagic" "$kver"
