#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the usb4-recovery appliance: a GPT disk image with one EFI system
# partition holding Debian's signed boot chain (shim signed by Microsoft,
# systemd-boot and the kernel signed by Debian) and an initramfs that is the
# whole system (Debian sid, the distribution kernel's modules, the out-of-tree
# thunderbolt_stream module signed with a key made for this build, and the
# recovery app).  It boots from the stick's removable-media path, with Secure
# Boot on or off, and then runs from RAM.
#
# Two package trees are made with mmdebstrap:
#   tools  the build environment (kernel headers and source, gcc, the signed
#          boot loaders, sbsigntool, openssl, mtools...): the module is
#          compiled and signed and the image assembled here, so the host only
#          needs mmdebstrap.
#   root   what boots: packed as the initramfs after pruning.
# Downloaded packages are kept in the cache directory between builds.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

output=$here/out/usb4-recovery.img
cache=$here/cache
kver=7.2.13+deb14-amd64
suite=sid
mirror=${MIRROR:-}
extra_packages=()
keep_work=0

usage() {
	cat <<EOF
Usage: ./build-image.sh [OPTIONS]

Build the bootable USB4 recovery disk image (run as root). Write the result
to a USB stick with dd; see README.md for how to pick the right device.

Options:
  -o, --output PATH          image file to write (default: out/usb4-recovery.img)
  -k, --kernel-version KVER  Debian kernel release to ship and build the
                             thunderbolt_stream module for
                             (default: $kver; its series X.Y selects
                             linux-source-X.Y)
  -p, --extra-packages LIST  more Debian packages for the image, comma or
                             space separated; may be repeated
      --suite SUITE          Debian suite to build from (default: $suite)
      --mirror URL           Debian mirror (default: \$MIRROR, else the first
                             Debian archive in this host's apt sources)
      --cache DIR            download cache kept between builds
                             (default: cache/ next to this script)
      --keep-work            keep the work directory (for debugging)
  -h, --help                 show this help

Environment:
  SOURCE_DATE_EPOCH  timestamp for every file in the image, the FAT
                     filesystem and the derived GPT/volume IDs (default: the
                     time of the last git commit)
  MIRROR             as --mirror

The image is a GPT disk with one EFI system partition (GPT name
USB4-RECOVERY, FAT label U4RECOVERY). It boots with Secure Boot on or off,
through Debian's signed boot chain (the Debian package of each file):
  EFI/BOOT/BOOTX64.EFI      shim, signed by Microsoft (shim-signed)
  EFI/BOOT/grubx64.efi      systemd-boot, signed by Debian, which shim starts
                            (systemd-boot-efi-amd64-signed)
  EFI/BOOT/mmx64.efi        MokManager, signed by Debian
                            (shim-helpers-amd64-signed)
  usb4-recovery/vmlinuz     the kernel, signed by Debian (linux-binary-KVER)
  usb4-recovery/initrd.zst  the whole system (an initrd is never signed)
The thunderbolt_stream module is signed with a key made for this build: the
private key exists only in memory while the module is signed, then it is
gone. Its certificate, usb4-recovery/module-key.der, must be enrolled with
MOK (mokutil --import, then MokManager at the next boot) before the kernel
loads the module with Secure Boot on.
Check the signatures of an image or a stick: ./check-signatures.sh IMAGE
EOF
}

die() {
	printf 'build-image: error: %s\n' "$*" >&2
	exit 1
}

log() {
	printf '[%4ds] %s\n' "$SECONDS" "$*" >&2
}

while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	-o | --output)
		[ $# -ge 2 ] || die "$1 needs a value"
		output=$2
		shift 2
		;;
	-k | --kernel-version)
		[ $# -ge 2 ] || die "$1 needs a value"
		kver=$2
		shift 2
		;;
	-p | --extra-packages)
		[ $# -ge 2 ] || die "$1 needs a value"
		read -r -a more <<<"${2//,/ }"
		extra_packages+=("${more[@]}")
		shift 2
		;;
	--suite)
		[ $# -ge 2 ] || die "$1 needs a value"
		suite=$2
		shift 2
		;;
	--mirror)
		[ $# -ge 2 ] || die "$1 needs a value"
		mirror=$2
		shift 2
		;;
	--cache)
		[ $# -ge 2 ] || die "$1 needs a value"
		cache=$2
		shift 2
		;;
	--keep-work)
		keep_work=1
		shift
		;;
	*)
		die "unknown option '$1' (see --help)"
		;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mknod need it)"
for tool in mmdebstrap unshare chroot; do
	command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt install mmdebstrap util-linux coreutils)"
done
# The Python packages the suite's Debian does not ship come as the wheels
# requirements/app.txt locks, fetched by the pip of the venv setup.sh makes.
venv_python=$here/.venv/bin/python
"$venv_python" -m pip --version >/dev/null 2>&1 ||
	die "no pip in $here/.venv (it fetches the locked Python packages Debian lacks): run ./setup.sh first"
[[ $kver =~ ^([0-9]+\.[0-9]+)\.[0-9]+.*-amd64$ ]] ||
	die "kernel version '$kver' does not look like a Debian amd64 release (e.g. $kver)"
series=${BASH_REMATCH[1]}

# shellcheck source-path=SCRIPTDIR source=debian-mirror.sh
. "$here/debian-mirror.sh"
if [ -z "$mirror" ]; then
	mirror=$(default_mirror) || die "no Debian mirror found in /etc/apt; pass --mirror URL"
fi

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds"
export SOURCE_DATE_EPOCH

mkdir -p "$cache/debs" "$(dirname "$output")"
cache=$(cd "$cache" && pwd)
outdir=$(cd "$(dirname "$output")" && pwd)
output=$outdir/$(basename "$output")

work=$(mktemp -d "$outdir/.build-image.XXXXXX")
cleanup() {
	local rc=$?
	# Nothing is mounted outside a private mount namespace, but never let rm
	# walk into a mount that a crashed step left behind.
	if findmnt -rn -o TARGET | grep -q "^$work/"; then
		findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l || true
	fi
	if [ "$keep_work" = 1 ]; then
		log "work directory kept: $work"
	else
		rm -rf --one-file-system "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tools=$work/tools
root=$work/root
art=$work/artifacts
mkdir -p "$art"

# ---------------------------------------------------------------------------
# Python packages the suite lacks, as requirements/app.txt locks them

# mfusepy (ctypes over libfuse3): `recovery image mount` serves an image's
# disk through it, and Debian has no Python FUSE binding.  Each is fetched
# first (a wrong lock fails in seconds, not after the trees): exactly the
# locked version, only as the wheel whose sha256 the lock names, checked by
# pip and then once more here.  Only pure-Python wheels (py3-none-any) are
# taken: the host's pip would pick a compiled one for its own Python, not
# the image's.
pip_packages=(mfusepy)
locked() { # the lock's requirement NAME==VERSION with its --hash lines
	awk -v name="$1" '
		index($0, name "==") == 1 { on = 1; print; next }
		on && /^[[:space:]]+--hash=sha256:/ { print; next }
		{ on = 0 }' "$here/requirements/app.txt"
}
locked_version() { sed -e 's/^[^=]*==//' -e 's/[[:space:]].*//;q' "$art/$1.req"; }
mkdir -p "$art/pywheels"
for name in "${pip_packages[@]}"; do
	locked "$name" >"$art/$name.req"
	grep -q -- '--hash=sha256:' "$art/$name.req" ||
		die "requirements/app.txt has no $name==VERSION with --hash lines"
	log "fetching $(head -n1 "$art/$name.req" | cut -d' ' -f1) (hash-checked)"
	"$venv_python" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
		--only-binary=:all: --dest "$art/pywheels/$name" -r "$art/$name.req" >&2 ||
		die "could not fetch $name as requirements/app.txt locks it"
	version=$(locked_version "$name")
	wheels=("$art/pywheels/$name"/*.whl)
	if [ "${#wheels[@]}" != 1 ] || [ "${wheels[0]##*/}" != "$name-$version-py3-none-any.whl" ]; then
		die "expected $name-$version-py3-none-any.whl, got: ${wheels[*]##*/}"
	fi
	sum=$(sha256sum "${wheels[0]}" | cut -d' ' -f1)
	grep -q -- "--hash=sha256:$sum\b" "$art/$name.req" ||
		die "${wheels[0]##*/} (sha256 $sum) is not a wheel requirements/app.txt locks"
done

# ---------------------------------------------------------------------------
# Package trees

# Hooks that keep downloaded .deb files in $cache/debs between builds: link
# them in before apt runs, and link new ones out before mmdebstrap cleans up.
cache_in="mkdir -p \"\$1/var/cache/apt/archives\" && find '$cache/debs' -maxdepth 1 -name '*.deb' -exec cp -l -t \"\$1/var/cache/apt/archives/\" {} + 2>/dev/null || find '$cache/debs' -maxdepth 1 -name '*.deb' -exec cp -t \"\$1/var/cache/apt/archives/\" {} +"
cache_out="find \"\$1/var/cache/apt/archives\" -maxdepth 1 -name '*.deb' -exec cp -ln -t '$cache/debs/' {} + 2>/dev/null || find \"\$1/var/cache/apt/archives\" -maxdepth 1 -name '*.deb' -exec cp -n -t '$cache/debs/' {} +"

mmdebstrap_tree() {
	local target=$1 variant=$2 packages=$3
	shift 3
	mmdebstrap --mode=root --variant="$variant" \
		--aptopt='Acquire::Check-Valid-Until "false"' \
		--aptopt='Acquire::Languages "none"' \
		--aptopt='APT::Install-Recommends "false"' \
		--skip=essential/unlink \
		--setup-hook="$cache_in" \
		--customize-hook="$cache_out" \
		--include="$packages" \
		"$@" \
		"$suite" "$target" \
		"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
}

# Run a command inside the tools tree, with /proc (objtool needs it), the
# image root at /root-image and the artifacts at /artifacts.  The private
# mount namespace drops every mount when the command ends.
in_tools() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --mount --propagation private --fork -- /bin/sh -euc '
		t=$1 r=$2 a=$3
		shift 3
		mount -t proc proc "$t/proc"
		mount -t tmpfs tmpfs "$t/tmp"
		mkdir -p "$t/root-image" "$t/artifacts"
		mount --bind "$r" "$t/root-image"
		mount --bind "$a" "$t/artifacts"
		exec chroot "$t" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			LC_ALL=C.UTF-8 SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"
	' sh "$tools" "$root" "$art" "$@"
}

# The signed boot chain: shim with Microsoft's signature, its helpers
# (MokManager, signed by Debian) and systemd-boot signed by Debian.
boot_packages=(shim-signed shim-helpers-amd64-signed systemd-boot-efi-amd64-signed)
tools_packages=(
	"linux-headers-$kver" "linux-source-$series" make kmod xz-utils
	"${boot_packages[@]}" sbsigntool openssl binutils
	python3-build python3-setuptools python3-installer
	dosfstools mtools gdisk cpio zstd
)

log "tools tree: ${tools_packages[*]}"
mmdebstrap_tree "$tools" apt "$(
	IFS=,
	echo "${tools_packages[*]}"
)" --quiet ||
	die "could not make the tools tree; does $suite have linux-headers-$kver and linux-source-$series? (--kernel-version, --suite)"

mapfile -t image_packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/initramfs/packages.list")
image_packages+=("linux-binary-$kver" "linux-modules-$kver")
image_packages+=("${extra_packages[@]}")

log "root tree: ${image_packages[*]}"
mmdebstrap_tree "$root" essential "$(
	IFS=,
	echo "${image_packages[*]}"
)" --quiet --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' ||
	die "could not make the root tree; are all of these in $suite: ${image_packages[*]}? (--extra-packages)"

# The module's source, headers and the shipped kernel must be one version.
pkgver() { dpkg-query --admindir="$1/var/lib/dpkg" -W -f '${Version}' "$2"; }
v_image=$(pkgver "$root" "linux-binary-$kver")
v_headers=$(pkgver "$tools" "linux-headers-$kver")
v_source=$(pkgver "$tools" "linux-source-$series")
if [ "$v_image" != "$v_headers" ] || [ "$v_image" != "$v_source" ]; then
	die "kernel package versions differ: image $v_image, headers $v_headers, source $v_source (the mirror is mid-update? try again)"
fi
log "kernel $kver, packages $v_image"

# ---------------------------------------------------------------------------
# thunderbolt_stream, built out of tree from the kernel's own source

log "building thunderbolt_stream"
cp -r "$here/driver" "$art/driver"
in_tools make -C /artifacts/driver KVER="$kver" KDIR="/usr/src/linux-headers-$kver" \
	KSRC="/usr/src/linux-source-$series.tar.xz" >"$art/driver.log" 2>&1 || {
	cat "$art/driver.log" >&2
	die "thunderbolt_stream did not build (log above)"
}
in_tools make -C /artifacts/driver KVER="$kver" check >&2

# Sign it with a key made for this build.  The private key is written only to
# the tmpfs that in_tools mounts on /tmp for this one command, so it is gone
# when the command ends and nothing can be signed with it again.  The
# extended key usage 1.3.6.1.4.1.2312.16.1.2 marks the certificate "kernel
# modules only": shim refuses EFI programs signed with such a key, so
# enrolling it trusts this build's module and nothing else.
signer="thunderbolt_stream, USB4 Recovery build $(date -u '+%Y-%m-%d %H:%M:%S')"
log "signing thunderbolt_stream ($signer)"
# shellcheck disable=SC2016 # expanded by the inner shell
in_tools sh -euc '
	umask 077
	openssl req -new -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 \
		-subj "/O=USB4 Recovery/CN=$1" \
		-addext "basicConstraints=critical,CA:FALSE" \
		-addext "keyUsage=critical,digitalSignature" \
		-addext "extendedKeyUsage=codeSigning,1.3.6.1.4.1.2312.16.1.2" \
		-keyout /tmp/module-key.pem -outform DER -out /artifacts/module-key.der 2>/tmp/openssl.log ||
		{ cat /tmp/openssl.log >&2; exit 1; }
	make -s -C /artifacts/driver KDIR="$2" SIGN_KEY=/tmp/module-key.pem \
		SIGN_CERT=/artifacts/module-key.der sign
' sh "$signer" "/usr/src/linux-headers-$kver" >&2
[ "$(in_tools modinfo -F signer /artifacts/driver/thunderbolt_stream.ko)" = "$signer" ] ||
	die "thunderbolt_stream.ko does not carry the signature just made"
chmod 0644 "$art/module-key.der"
moddir=$root/usr/lib/modules/$kver
install -D -m 0644 "$art/driver/thunderbolt_stream.ko" "$moddir/updates/thunderbolt_stream.ko"
# The certificate goes into the system as well: the stick may be gone when
# the first screen offers to enroll it.
install -D -m 0644 "$art/module-key.der" "$root/usr/share/usb4-recovery/module-key.der"

# ---------------------------------------------------------------------------
# The recovery app, as a wheel built from this checkout

log "installing the recovery app"
mkdir -p "$art/src"
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
	# Tracked and not-ignored files: what a fresh clone would build.
	git -C "$here" ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do
			if [ -f "$here/$f" ]; then printf '%s\0' "$f"; fi
		done |
		tar -C "$here" --null -T - -cf - | tar -C "$art/src" -xf -
else
	tar -C "$here" --exclude=./out --exclude=./cache -cf - . | tar -C "$art/src" -xf -
fi
# shellcheck disable=SC2016 # expanded by the inner shell
in_tools sh -euc '
	cd /artifacts/src
	python3 -m build --wheel --no-isolation --outdir /artifacts/wheel . >/artifacts/wheel.log 2>&1 ||
		{ cat /artifacts/wheel.log >&2; exit 1; }
	python3 -m installer --destdir=/root-image --prefix=/usr /artifacts/wheel/*.whl
'
in_tools chroot /root-image python3 -c 'import recovery.appliance' ||
	die "the app installed into the image cannot import recovery.appliance"

log "installing ${pip_packages[*]} (requirements/app.txt)"
in_tools sh -euc 'python3 -m installer --destdir=/root-image --prefix=/usr /artifacts/pywheels/*/*.whl'
# The image's python3 imports the binding at the locked version and it finds
# libfuse (mfusepy raises OSError on import without it); fusermount3 runs.
fuse=$(in_tools chroot /root-image python3 -c '
import importlib.metadata, mfusepy
print(importlib.metadata.version("mfusepy"), mfusepy._libfuse_path, "%d.%d" % (mfusepy.fuse_version_major, mfusepy.fuse_version_minor))
') || die "the image's python3 cannot import mfusepy with its libfuse"
read -r fuse_version fuse_lib fuse_api <<<"$fuse"
[ "$fuse_version" = "$(locked_version mfusepy)" ] ||
	die "the image has mfusepy $fuse_version, requirements/app.txt locks another"
in_tools chroot /root-image fusermount3 -V >/dev/null ||
	die "fusermount3 (fuse3) is missing from the image"
log "mfusepy $fuse_version on $fuse_lib (FUSE $fuse_api)"

# ---------------------------------------------------------------------------
# Configure the root tree

log "configuring the root tree"
cp -a "$here/initramfs/rootfs/." "$root/"
ln -sf usr/lib/systemd/systemd "$root/init"
: >"$root/etc/machine-id"
echo usb4-recovery >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n127.0.1.1 usb4-recovery\n' >"$root/etc/hosts"
systemctl --root="$root" enable recovery-console.service recovery-shell.service recovery-serial.service \
	recovery-headless.service recovery-stream-module.service >/dev/null 2>&1
systemctl --root="$root" set-default multi-user.target >/dev/null 2>&1
# Replaced by the recovery units or pointless in a RAM-only appliance (binfmt_misc:
# nothing foreign runs here, and its unit printed a FAILED line on the console).
for unit in getty@tty1.service getty@tty2.service serial-getty@ttyS0.service getty-static.service \
	systemd-firstboot.service systemd-machine-id-commit.service \
	systemd-remount-fs.service systemd-pstore.service e2scrub_all.timer \
	e2scrub_reap.service fstrim.timer dpkg-db-backup.timer apt-daily.timer \
	apt-daily-upgrade.timer systemd-tmpfiles-clean.timer \
	systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# Record what went in before the package database is dropped: the system's
# packages, those of the boot chain on the stick and the locked wheels.
{
	dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package} ${Version}\n'
	dpkg-query --admindir="$tools/var/lib/dpkg" -W -f '${Package} ${Version}\n' "${boot_packages[@]}"
	for name in "${pip_packages[@]}"; do echo "wheel:$name $(locked_version "$name")"; done
} | LC_ALL=C sort -u >"$art/packages.txt"

# ---------------------------------------------------------------------------
# Prune: only the kernel modules the appliance needs, no docs or package
# manager state, no kernel image (it goes onto the ESP, as Debian signed it).

log "pruning"
cp "$moddir/vmlinuz" "$art/vmlinuz"
rm -f "$moddir/vmlinuz"
rm -rf "${root:?}/boot"
mapfile -t keep_patterns < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/initramfs/modules.list")
(
	cd "$moddir"
	# Modules matching the list, plus everything they depend on (modules.dep
	# lists the full dependency chain of each module).
	{
		for pat in "${keep_patterns[@]}"; do
			find kernel -path "kernel/$pat" -name '*.ko*'
		done
		find updates -name '*.ko*'
	} | LC_ALL=C sort -u >"$art/modules.keep"
	awk -F': *' 'NR == FNR { keep[$1] = 1; next }
		($1 in keep) { n = split($2, d, " "); for (i = 1; i <= n; i++) print d[i] }' \
		"$art/modules.keep" modules.dep >"$art/modules.deps"
	find kernel -name '*.ko*' | LC_ALL=C sort >"$art/modules.all"
	LC_ALL=C sort -u "$art/modules.keep" "$art/modules.deps" -o "$art/modules.keep"
	LC_ALL=C comm -23 "$art/modules.all" "$art/modules.keep" | xargs -r rm -f
	find kernel -depth -type d -empty -delete
)
in_tools chroot /root-image depmod -a "$kver"
for mod in thunderbolt thunderbolt_net thunderbolt_stream; do
	in_tools chroot /root-image modinfo -k "$kver" -F filename "$mod" >/dev/null ||
		die "module $mod is missing from the image"
done

rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man "$root"/usr/share/info \
	"$root"/usr/share/locale "$root"/usr/share/lintian "$root"/usr/share/bug \
	"$root"/usr/share/bash-completion "$root"/usr/share/zsh \
	"$root"/var/cache/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
	"$root"/usr/include "$root"/usr/share/gcc "$root"/usr/share/gdb \
	"$root"/usr/lib/python3/dist-packages/pygments/lexers/__pycache__/_*mapping* \
	"$root"/var/lib/dpkg/info/*.md5sums
# ICU (about 36 MB) comes only for xfsprogs' xfs_scrub; xfs_repair and xfs_db,
# the checkers the app runs, do not use it.
find "$root/usr/lib" -name 'libicu*.so*' -delete
find "$root/usr/lib/python3" "$root/usr/lib/python3."* -depth -type d \
	\( -name tests -o -name test -o -name idlelib -o -name tkinter -o -name turtledemo \) \
	-exec rm -rf {} + 2>/dev/null || true

# ---------------------------------------------------------------------------
# initramfs -> ESP with the signed boot chain -> GPT disk

log "packing the initramfs"
find "$root" -xdev -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# shellcheck disable=SC2016 # expanded by the inner shell
in_tools sh -euc '
	cd /root-image
	find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0 |
		zstd -q -T0 -12 >/artifacts/initrd.zst
'
initrd_mib=$(($(stat -c %s "$art/initrd.zst") / 1048576))
log "initramfs: $initrd_mib MiB"

# The kernel command line of every boot entry (edit it with 'e' at the boot
# menu, or in loader/entries/ on the stick): systemd-boot hands it to the
# kernel, also with Secure Boot on.
base_cmdline="console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet systemd.show_status=error"

# The ESP: shim on the removable-media path starts grubx64.efi from its own
# directory (its built-in default), which here is systemd-boot; shim's
# MokManager sits beside it for enrolling keys.  shim's fallback (fbx64.efi)
# is left out on purpose: it would write boot entries into the machine's
# firmware.  Every EFI file is copied exactly as Debian signed it.
mkdir -p "$art/esp/EFI/BOOT" "$art/esp/usb4-recovery" "$art/esp/loader/entries"
cp "$tools/usr/lib/shim/shimx64.efi.signed" "$art/esp/EFI/BOOT/BOOTX64.EFI"
cp "$tools/usr/lib/shim/mmx64.efi.signed" "$art/esp/EFI/BOOT/mmx64.efi"
cp "$tools/usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed" "$art/esp/EFI/BOOT/grubx64.efi"
cp "$art/vmlinuz" "$art/esp/usb4-recovery/vmlinuz"
cp "$art/initrd.zst" "$art/esp/usb4-recovery/initrd.zst"
cp "$art/module-key.der" "$art/esp/usb4-recovery/module-key.der"
cat >"$art/esp/loader/loader.conf" <<EOF
timeout 3
default 10-wizard.conf
editor yes
auto-entries no
auto-firmware yes
EOF
entry() {
	cat >"$art/esp/loader/entries/$1.conf" <<EOF
title $2
sort-key $1
linux /usb4-recovery/vmlinuz
initrd /usb4-recovery/initrd.zst
options $base_cmdline $3
EOF
}
entry 10-wizard "USB4 Recovery" "recovery.mode=wizard"
entry 20-shell "USB4 Recovery: root shell" "recovery.mode=shell"
entry 30-verbose "USB4 Recovery: wizard, boot messages shown" "recovery.mode=wizard loglevel=7 systemd.show_status=yes"
sed -i 's/ quiet systemd.show_status=error//' "$art/esp/loader/entries/30-verbose.conf"

log "making the disk image"
# shellcheck disable=SC2016 # expanded by the inner shell
in_tools sh -euc '
	epoch=$SOURCE_DATE_EPOCH
	cd /artifacts
	# ESP size: contents + 8 MiB slack, FAT32 needs at least 33 MiB.
	kib=$(du -sk --apparent-size esp | cut -f1)
	mib=$(( (kib / 1024) + 8 ))
	[ "$mib" -ge 40 ] || mib=40
	volid=$(printf "%08x" $(( epoch & 0xffffffff )))
	mkfs.vfat -C -F 32 -n U4RECOVERY -i "$volid" --invariant esp.img $((mib * 1024)) >/dev/null
	find esp -exec touch -h -d "@$epoch" {} +
	export MTOOLS_SKIP_CHECK=1
	mcopy -s -p -m -i esp.img esp/EFI esp/loader esp/usb4-recovery ::/
	# GPT: 1 MiB before the ESP, 1 MiB after (backup table).
	truncate -s $(( (mib + 2) * 1048576 )) disk.img
	h=$(printf "%s" "usb4-recovery $epoch" | sha256sum | cut -c1-32)
	guid() { printf "%s-%s-4%s-8%s-%s" "$(echo "$1" | cut -c1-8)" "$(echo "$1" | cut -c9-12)" \
		"$(echo "$1" | cut -c14-16)" "$(echo "$1" | cut -c18-20)" "$(echo "$1" | cut -c21-32)"; }
	h2=$(printf "%s" "usb4-recovery esp $epoch" | sha256sum | cut -c1-32)
	sgdisk -U "$(guid "$h")" -n 1:2048:+${mib}M -t 1:ef00 -c 1:USB4-RECOVERY \
		-u 1:"$(guid "$h2")" disk.img >/dev/null
	dd if=esp.img of=disk.img bs=1M seek=1 conv=notrunc status=none
	sgdisk -v disk.img >/dev/null
	sgdisk -i 1 disk.img | grep -q "^Partition name: .USB4-RECOVERY.$"
'

log "checking the boot chain's signatures"
cp "$here/check-signatures.sh" "$art/check-signatures.sh"
in_tools bash /artifacts/check-signatures.sh /artifacts/disk.img >&2 ||
	die "the image's boot chain does not check out (above)"

tmp_out=$(mktemp "$outdir/.usb4-recovery.XXXXXX")
mv "$art/disk.img" "$tmp_out"
touch -d "@$SOURCE_DATE_EPOCH" "$tmp_out"
mv "$tmp_out" "$output"
cp "$art/packages.txt" "${output%.img}.packages"
size_mib=$(($(stat -c %s "$output") / 1048576))
log "done: $output ($size_mib MiB, initramfs $initrd_mib MiB, kernel $kver)"
