"""Secure Boot as the appliance sees it: the firmware's switch, the kernel's
lockdown, and the enrolment of the stick's module key with MOK.

With Secure Boot on, Debian's kernel locks itself down and loads only modules
signed by a key it trusts.  The image's ``thunderbolt_stream`` is signed with
a key made for its build; the kernel trusts it once its certificate is in the
firmware's MOK list, which takes two steps: ``mokutil --import`` (a request
with a one-time password, stored in the ``MokNew`` EFI variable), then shim's
MokManager at the next boot, where a person confirms it with that password.

Everything here reads a given sysfs root, so it is tested over fake trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The image puts the certificate of its module key here (and on the stick's
# ESP as usb4-recovery/module-key.der).
MODULE_KEY = Path("/usr/share/usb4-recovery/module-key.der")
EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
LOCKDOWN_MODES = ("none", "integrity", "confidentiality")


@dataclass(frozen=True)
class SecureBootState:
    enabled: bool = False
    # The kernel's lockdown mode ("none", "integrity", "confidentiality"), or
    # "" when the kernel does not say (no securityfs, no lockdown LSM).
    lockdown: str = ""
    # mokutil --import has asked for a key; MokManager asks at the next boot.
    enrolment_pending: bool = False

    @property
    def locked_down(self) -> bool:
        return self.lockdown not in ("", "none")


def efi_variable(sys_root: Path, name: str, guid: str) -> bytes | None:
    """An EFI variable's data (efivarfs puts 4 bytes of attributes first)."""
    try:
        raw = (sys_root / "firmware" / "efi" / "efivars" / f"{name}-{guid}").read_bytes()
    except OSError:
        return None
    return raw[4:]


def lockdown_mode(text: str) -> str:
    """The selected mode in /sys/kernel/security/lockdown ("none [integrity]
    confidentiality" -> "integrity"); "" if there is none."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]") and word[1:-1] in LOCKDOWN_MODES:
            return word[1:-1]
    return ""


def read_state(sys_root: Path = Path("/sys")) -> SecureBootState:
    secure_boot = efi_variable(sys_root, "SecureBoot", EFI_GLOBAL_GUID)
    try:
        lockdown = lockdown_mode((sys_root / "kernel" / "security" / "lockdown").read_text())
    except OSError:
        lockdown = ""
    return SecureBootState(
        enabled=secure_boot == b"\x01",
        lockdown=lockdown,
        enrolment_pending=efi_variable(sys_root, "MokNew", SHIM_LOCK_GUID) is not None,
    )


def module_note(state: SecureBootState) -> str:
    """The first screen's sentence when lockdown keeps thunderbolt_stream out."""
    if state.enrolment_pending:
        return (
            "Secure Boot is on and the stick's module key waits to be confirmed: reboot and "
            "choose 'Enroll MOK' in the blue MokManager screen; until then clones over the "
            "cable use thunderbolt-net."
        )
    why = (
        "Secure Boot is on, so the kernel" if state.enabled else f"The kernel is locked down ({state.lockdown}), so it"
    )
    return (
        f"{why} refuses the stick's thunderbolt_stream module: "
        "clones over the cable use thunderbolt-net, and only the raw /dev/tbstreamN "
        "streams are unavailable."
    )


def enrol_command(key: Path = MODULE_KEY) -> list[str]:
    """Ask the firmware to enroll `key` at the next boot (prompts for a
    one-time password on the terminal)."""
    return ["mokutil", "--import", str(key)]


ENROL_STEPS = (
    "Now reboot (Ctrl+Alt+Del) and keep the stick in. A blue MokManager screen",
    "appears: press a key within 10 seconds, choose 'Enroll MOK', 'Continue',",
    "'Yes', type the password you just chose, then 'Reboot'. From then on this",
    "machine loads the stick's thunderbolt_stream with Secure Boot on.",
    "To remove the key again: mokutil --delete /usr/share/usb4-recovery/module-key.der",
    "(from this stick's root shell), and confirm it the same way at the next boot.",
)
