#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced by build-image.sh and tests/image/linux_disk.sh.

# The first Debian archive URL from the host's apt configuration, so that the
# build uses whatever mirror this machine is set up for.
default_mirror() {
	local f line url
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		while read -r line; do
			case $line in
			URIs:*) url=${line#URIs:} ;;
			deb\ *) url=$(awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit }}' <<<"$line") ;;
			*) continue ;;
			esac
			for url in $url; do
				if [[ $url =~ /debian/?$ ]]; then
					printf '%s\n' "${url%/}"
					return 0
				fi
			done
		done <"$f"
	done
	return 1
}
