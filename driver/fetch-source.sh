#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Copy drivers/thunderbolt/stream.c out of the distribution's kernel source.
# Usage: fetch-source.sh KVER DEST [KSRC]
#   KSRC: a linux-source tarball (.tar.xz/.tar.gz/.tar) or an unpacked tree;
#         default /usr/src/linux-source-X.Y.tar.xz (Debian's linux-source-X.Y).
set -eu

kver=$1
dest=$2
ksrc=${3:-}
member=drivers/thunderbolt/stream.c

die() {
	printf 'thunderbolt_stream: %s\n' "$*" >&2
	exit 1
}

# 7.2.13+deb14-amd64 -> 7.2
series=$(printf '%s\n' "$kver" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
[ -n "$series" ] || die "cannot read a kernel series from release '$kver'"

if [ -z "$ksrc" ]; then
	for f in "/usr/src/linux-source-$series.tar.xz" "/usr/src/linux-source-$series.tar.bz2" \
		"/usr/src/linux-source-$series.tar.gz" "/usr/src/linux-source-$series"; do
		if [ -e "$f" ]; then
			ksrc=$f
			break
		fi
	done
fi
[ -n "$ksrc" ] ||
	die "no kernel source for $series found; install the source of the same kernel version (Debian: apt install linux-source-$series) or pass KSRC=tarball-or-tree"

# Source and running/target kernel must be the same version: the driver talks
# to the core module through internal interfaces.
if command -v dpkg-query >/dev/null 2>&1; then
	hv=$(dpkg-query -W -f '${Version}' "linux-headers-$kver" 2>/dev/null || true)
	sv=$(dpkg-query -W -f '${Version}' "linux-source-$series" 2>/dev/null || true)
	if [ -n "$hv" ] && [ -n "$sv" ] && [ "$hv" != "$sv" ]; then
		die "linux-source-$series is version $sv but linux-headers-$kver is $hv; install matching versions"
	fi
fi

tmp="$dest.tmp"
if [ -d "$ksrc" ]; then
	[ -f "$ksrc/$member" ] || die "$ksrc has no $member"
	cp "$ksrc/$member" "$tmp"
else
	# The tarball has one top directory (linux-source-X.Y/); match any.
	tar -xOf "$ksrc" --wildcards --occurrence=1 "*/$member" >"$tmp" 2>/dev/null ||
		die "cannot extract $member from $ksrc"
	[ -s "$tmp" ] || die "$ksrc has no $member"
fi
mv "$tmp" "$dest"
printf 'thunderbolt_stream: using %s from %s\n' "$member" "$ksrc"
