#!/usr/bin/env python3
"""Convert Docker's seccomp profile (docker-default.json here) to an OCI config's
linux.seccomp object, the way Docker itself does it for one container
(moby/profiles/seccomp setupSeccomp): keep the native architecture and its
sub-architectures from archMap, and keep a rule only when its `includes` all hold
(architecture, capabilities in the container's bounding set, minimum kernel) and none of
its `excludes` does. The output has only OCI fields: defaultAction, defaultErrnoRet,
architectures, syscalls[names, action, errnoRet, args].

  to-oci.py [--profile FILE] [--caps CAP_A,CAP_B] [--arch amd64] [--kernel 6.1]
            [--allow-userns] > seccomp.json

--caps is the container's bounding set (default: Docker's default capabilities, which
do not include CAP_SYS_ADMIN: unshare, clone with namespace flags, setns and mount are
refused, clone3 returns ENOSYS). --allow-userns adds what a sandbox that makes its own
user namespace needs, and nothing else of CAP_SYS_ADMIN's rules: the namespace and mount
syscalls below are allowed (the kernel still checks capabilities inside the new user
namespace), clone is no longer filtered by flags and clone3 is allowed.
"""

import argparse
import json
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# moby daemon/pkg/oci/caps/defaults.go (DefaultCapabilities)
DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# What making a user namespace and a root filesystem inside it needs: the namespace and
# mount part of CAP_SYS_ADMIN's rule, and pivot_root, which Docker's profile never allows
# (the runtime calls it before the filter is loaded). bpf, perf_event_open,
# fanotify_init, quotactl, syslog, lookup_dcookie and lsm_* stay refused.
USERNS_SYSCALLS = {
    "clone", "clone3", "unshare", "setns", "mount", "umount", "umount2", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "sethostname",
    "setdomainname", "pivot_root",
}

# Python's machine name -> libseccomp's name used by the profile's `arches`
MACHINE = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "x86",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "loongarch64": "loong64",
}
# libseccomp name -> OCI architecture
OCI_ARCH = {
    "x86": "SCMP_ARCH_X86", "amd64": "SCMP_ARCH_X86_64", "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64", "loong64": "SCMP_ARCH_LOONGARCH64",
    "ppc64le": "SCMP_ARCH_PPC64LE", "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390", "s390x": "SCMP_ARCH_S390X",
}


def kernel_at_least(have, want):
    def parse(v):
        out = []
        for part in v.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out + [0] * (2 - len(out)))

    return parse(have) >= parse(want)


def keep(rule, arch, caps, kernel):
    """Docker's include/exclude test for one rule."""
    exc = rule.get("excludes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and kernel_at_least(kernel, exc["minKernel"]):
        return False
    inc = rule.get("includes") or {}
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if any(c not in caps for c in inc.get("caps") or []):
        return False
    if inc.get("minKernel") and not kernel_at_least(kernel, inc["minKernel"]):
        return False
    return True


def oci_rule(rule, names=None):
    out = {"names": sorted(names) if names is not None else list(rule["names"]),
           "action": rule["action"]}
    if "errnoRet" in rule:
        out["errnoRet"] = rule["errnoRet"]
    if rule.get("args"):
        out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a}
                       for a in rule["args"]]
    return out


def convert(profile, arch, caps, kernel, allow_userns):
    if arch not in OCI_ARCH:
        raise SystemExit(f"to-oci.py: unknown architecture {arch!r} (pass --arch)")
    native = OCI_ARCH[arch]
    archs = [native]
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == native:
            archs += entry.get("subArchitectures") or []
    out = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    out["architectures"] = archs
    rules = []
    for rule in profile["syscalls"]:
        inc_caps = (rule.get("includes") or {}).get("caps") or []
        exc_caps = (rule.get("excludes") or {}).get("caps") or []
        if allow_userns and "CAP_SYS_ADMIN" in exc_caps + inc_caps and "CAP_SYS_ADMIN" not in caps:
            # clone filtered by flags, clone3 -> ENOSYS, CAP_SYS_ADMIN's rule: replaced by
            # the rule below (and the rest of CAP_SYS_ADMIN's rule stays refused).
            continue
        if keep(rule, arch, caps, kernel):
            rules.append(oci_rule(rule))
    if allow_userns:
        allowed = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
                   for n in r["names"]}
        rules.append({"names": sorted(USERNS_SYSCALLS - allowed), "action": "SCMP_ACT_ALLOW"})
    out["syscalls"] = rules
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=os.path.join(HERE, "docker-default.json"))
    ap.add_argument("--caps", default=",".join(DOCKER_CAPS),
                    help="the container's bounding set, comma-separated")
    ap.add_argument("--arch", default=MACHINE.get(platform.machine(), platform.machine()))
    ap.add_argument("--kernel", default=platform.release())
    ap.add_argument("--allow-userns", action="store_true")
    a = ap.parse_args()
    with open(a.profile, encoding="utf-8") as f:
        profile = json.load(f)
    caps = {c.strip() for c in a.caps.split(",") if c.strip()}
    json.dump(convert(profile, a.arch, caps, a.kernel, a.allow_userns), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
