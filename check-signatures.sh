#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Check the Secure Boot chain on a usb4-recovery image or stick, with
# sbsigntool's sbverify and the kernel's modinfo:
#   - systemd-boot, MokManager and the kernel carry a signature that verifies
#     against the Debian CA that the stick's shim trusts (the CA is read from
#     shim's .vendor_cert section);
#   - shim carries Microsoft's UEFI CA signature (listed; the firmware checks
#     it against its own db at boot);
#   - the kernel is the release the thunderbolt_stream module is built for;
#   - the module is signed by the certificate on the stick.
# Prints one line per file; exits 1 if a check fails, 2 if it cannot check.

set -euo pipefail

usage() {
	cat <<EOF
Usage: ./check-signatures.sh IMAGE|DEVICE

Check the signatures of the boot chain on a usb4-recovery disk image
(out/usb4-recovery.img) or a stick (/dev/sdX); reads only. Needs sbsigntool,
binutils, openssl, mtools, kmod, zstd and cpio (Debian package names).
EOF
}

die() {
	printf 'check-signatures: error: %s\n' "$*" >&2
	exit 2
}

case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
"" | -*)
	usage >&2
	exit 2
	;;
esac
disk=$1
PATH=$PATH:/usr/sbin:/sbin # modinfo
[ -e "$disk" ] || die "$disk does not exist"
for tool in sbverify:sbsigntool objcopy:binutils openssl:openssl mcopy:mtools \
	modinfo:kmod zstd:zstd cpio:cpio od:coreutils; do
	command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} is missing (Debian: apt install ${tool#*:})"
done

# The ESP is the first partition: its device node for a stick, else its
# offset from the GPT (partition entry 1 at LBA 2, first LBA at byte 32).
esp=
if [ -b "$disk" ]; then
	for part in "${disk}1" "${disk}p1"; do
		if [ -b "$part" ]; then esp=$part; fi
	done
fi
if [ -z "$esp" ]; then
	[ "$(dd if="$disk" bs=1 skip=512 count=8 status=none)" = "EFI PART" ] ||
		die "$disk has no GPT; is it a usb4-recovery image?"
	first_lba=$(od -A n -t u8 -j 1056 -N 8 "$disk" | tr -d ' ')
	esp="$disk@@$((first_lba * 512))"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MTOOLS_SKIP_CHECK=1
for f in EFI/BOOT/BOOTX64.EFI EFI/BOOT/grubx64.efi EFI/BOOT/mmx64.efi \
	usb4-recovery/vmlinuz usb4-recovery/initrd.zst usb4-recovery/module-key.der; do
	mkdir -p "$work/$(dirname "$f")"
	mcopy -n -i "$esp" "::/$f" "$work/$f" 2>/dev/null || die "$f is missing from the stick's ESP"
done
cd "$work"

failed=0
report() { # ok|FAIL FILE TEXT
	printf '%-5s %-26s %s\n' "$1" "$2" "$3"
	if [ "$1" != ok ]; then failed=1; fi
}
signing_cas() { # the CAs in an EFI file's signatures (issuers that are not roots)
	local list
	list=$(sbverify --list "$1" 2>/dev/null)
	LC_ALL=C comm -12 <(sed -n 's/^ *issuer: .*CN=\(.*\)$/\1/p' <<<"$list" | LC_ALL=C sort -u) \
		<(sed -n 's/^ *- subject: .*CN=\(.*\)$/\1/p' <<<"$list" | LC_ALL=C sort -u) |
		paste -sd ';' | sed 's/;/; /g'
}

# shim's built-in vendor certificate: a table of four 32-bit sizes and
# offsets (trusted, revoked), then the DER certificate.
objcopy -O binary --only-section=.vendor_cert EFI/BOOT/BOOTX64.EFI vendor_cert.bin 2>/dev/null ||
	die "EFI/BOOT/BOOTX64.EFI has no .vendor_cert section: not Debian's shim"
read -r ca_size _ ca_offset _ < <(od -A n -t u4 -N 16 vendor_cert.bin)
dd if=vendor_cert.bin of=vendor-ca.der bs=1 skip="$ca_offset" count="$ca_size" status=none
openssl x509 -inform DER -in vendor-ca.der -out vendor-ca.pem 2>/dev/null ||
	die "cannot read the vendor certificate in shim"
ca=$(openssl x509 -in vendor-ca.pem -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p')

# The kernel's release string: the bzImage header holds its offset
# (16 bits at 0x20e, counted from 0x200).
version_at=$(od -A n -t u2 -j 526 -N 2 usb4-recovery/vmlinuz | tr -d ' ')
kernel=$(dd if=usb4-recovery/vmlinuz bs=1 skip=$((version_at + 512)) count=128 status=none | tr '\0' '\n' | head -n1)
kernel=${kernel%% *}

shim_by=$(signing_cas EFI/BOOT/BOOTX64.EFI)
if [[ $shim_by == *Microsoft* ]]; then
	report ok EFI/BOOT/BOOTX64.EFI "shim, signed by $shim_by (checked by the firmware's db)"
else
	report FAIL EFI/BOOT/BOOTX64.EFI "shim has no Microsoft signature (issuers: ${shim_by:-none})"
fi
for f in EFI/BOOT/grubx64.efi:systemd-boot EFI/BOOT/mmx64.efi:MokManager "usb4-recovery/vmlinuz:kernel $kernel"; do
	file=${f%%:*}
	if sbverify --cert vendor-ca.pem "$file" >/dev/null 2>&1; then
		report ok "$file" "${f#*:}, signature verified against $ca"
	else
		report FAIL "$file" "${f#*:}: no signature that verifies against $ca"
	fi
done

zstd -dcq usb4-recovery/initrd.zst | cpio -i --quiet --to-stdout '*/updates/thunderbolt_stream.ko' >module.ko
if [ ! -s module.ko ]; then
	report FAIL thunderbolt_stream.ko "not found in the initrd"
else
	vermagic=$(modinfo -F vermagic module.ko)
	signer=$(modinfo -F signer module.ko)
	sig_key=$(modinfo -F sig_key module.ko | tr -d ':' | tr 'a-f' 'A-F')
	cert_cn=$(openssl x509 -inform DER -in usb4-recovery/module-key.der -noout -subject -nameopt multiline |
		sed -n 's/^ *commonName *= //p')
	cert_serial=$(openssl x509 -inform DER -in usb4-recovery/module-key.der -noout -serial | sed 's/^serial=//')
	if [ "${vermagic%% *}" != "$kernel" ]; then
		report FAIL thunderbolt_stream.ko "built for ${vermagic%% *}, the stick's kernel is ${kernel:-unknown}"
	elif [ -z "$signer" ]; then
		report FAIL thunderbolt_stream.ko "not signed"
	elif [ "$signer" != "$cert_cn" ] || [ "${sig_key#"${sig_key%%[!0]*}"}" != "${cert_serial#"${cert_serial%%[!0]*}"}" ]; then
		report FAIL thunderbolt_stream.ko "signed by '$signer' (key $sig_key), not by usb4-recovery/module-key.der"
	else
		report ok thunderbolt_stream.ko "for kernel $kernel, signed by usb4-recovery/module-key.der ($signer)"
	fi
fi
exit "$failed"
