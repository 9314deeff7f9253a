#!/usr/bin/env bash
# Run the test binaries of the last build inside a container made with a real OCI runtime
# (crun), the way a Docker container or a Kubernetes pod runs taskcell:
#
#   scripts/container-test.sh container [-- TEST-ARGS]   (default TEST-ARGS: --ignored)
#       Docker's default seccomp profile (scripts/seccomp/docker-default.json, converted
#       by scripts/seccomp/to-oci.py for Docker's default capabilities): unshare, mount,
#       setns and clone with namespace flags are refused, so the cell gets no user
#       namespace. Runs the #[ignore]d tests of a machine without user namespaces.
#   scripts/container-test.sh full [-- TEST-ARGS]  (default TEST-ARGS: --skip seccomp_)
#       The same profile plus the namespace and mount syscalls (to-oci.py
#       --allow-userns) and an unmasked /proc (Docker: systempaths=unconfined,
#       Kubernetes: procMount: Unmasked): every ordinary test, in full cells.
#
# Both: a bundle whose root is an empty directory with the host's /usr and /etc bound
# read-only (and /bin, /lib*, /sbin as the same symlinks or read-only binds), this
# checkout bound read-only at its own path (the test binaries and the taskcell binary
# they start), a private /tmp, /var/tmp and home; pid, mount, ipc, uts and cgroup namespaces and the
# host's network (the agent CLI and registry tests need the package registries); the
# tests run as the plain user taskcell-ci with no capabilities (bounding set: Docker's
# default). Needs root, crun and python3, and a build from scripts/test.sh.
#
# Options (before the tier): --timeout SECS (default 2400; the container is killed after
# it), --user NAME (default taskcell-ci), --cap-add CAP_X (docker run --cap-add: CAP_X
# joins the bounding set and the seccomp rules it gates; the plain uid still holds no
# capability), --command (TEST-ARGS is a command to run instead of the tests, e.g. a
# benchmark). Exit status: the tests' status; 77 when crun
# cannot run a container here (the reason is printed); 124 on timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
limit=2400
user=taskcell-ci
capadd=
run_cmd=0
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) limit=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --cap-add) capadd="${capadd:+$capadd,}$2"; shift 2 ;;
    --command) run_cmd=1; shift ;;
    *) break ;;
  esac
done
tier=${1:-}
[ $# -gt 0 ] && shift
case "$tier" in
  container) args=(--ignored) ;;
  # tests/layers.rs's seccomp_* tests compare the errno in a cell with the errno in a
  # cell whose profile gives the call back; Docker's profile refuses those calls itself,
  # so the second errno cannot differ there (they run on the host in the other steps).
  full) args=(--skip seccomp_) ;;
  *) echo "usage: scripts/container-test.sh [--timeout SECS] [--user NAME] container|full [-- TEST-ARGS]" >&2; exit 2 ;;
esac
if [ "${1:-}" = -- ]; then shift; args=("$@"); fi

skip() { echo "container-test: cannot run a container here: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (crun creates the container as root)"
command -v crun >/dev/null 2>&1 || skip "crun is not installed (apt-get install -y crun)"
command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"
if [ ! -s target/test-binaries.txt ]; then
  echo "container-test: no test binaries in target/test-binaries.txt: run scripts/test.sh first" >&2
  exit 2
fi
uid=$(id -u "$user" 2>/dev/null) || { echo "container-test: no user $user (useradd --create-home $user)" >&2; exit 2; }
gid=$(id -g "$user")
home=$(getent passwd "$user" | cut -d: -f6)

bundle=$(mktemp -d /var/tmp/taskcell-crun.XXXXXX)
name="taskcell-$tier-$$"
running=
cleanup() {
  [ -z "$running" ] || kill -TERM "$running" 2>/dev/null || true
  crun --root "$bundle/state" kill "$name" KILL >/dev/null 2>&1 || true
  crun --root "$bundle/state" delete --force "$name" >/dev/null 2>&1 || true
  rm -rf "$bundle"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$bundle/rootfs" "$bundle/tmp" "$bundle/vartmp" "$bundle/home"
chmod 1777 "$bundle/tmp" "$bundle/vartmp"
chown "$uid:$gid" "$bundle/home"
chmod 755 "$bundle"

docker_caps=CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FSETID,CAP_FOWNER,CAP_MKNOD,CAP_NET_RAW,CAP_SETGID,CAP_SETUID,CAP_SETFCAP,CAP_SETPCAP,CAP_NET_BIND_SERVICE,CAP_SYS_CHROOT,CAP_KILL,CAP_AUDIT_WRITE
caps="$docker_caps${capadd:+,$capadd}"
if [ "$tier" = full ]; then
  python3 scripts/seccomp/to-oci.py --caps "$caps" --allow-userns > "$bundle/seccomp.json"
else
  python3 scripts/seccomp/to-oci.py --caps "$caps" > "$bundle/seccomp.json"
fi

# config.json: TIER UID GID HOME SRC BUNDLE then the command.
config() {
  python3 - "$tier" "$uid" "$gid" "$home" "$src" "$bundle" "$caps" "$@" <<'EOF'
import json, os, sys
tier, uid, gid, home, src, bundle, caps, *argv = sys.argv[1:]
uid, gid = int(uid), int(gid)
ro = ["rbind", "ro", "nosuid", "nodev"]
mounts = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
    {"destination": "/etc", "type": "bind", "source": "/etc", "options": ro},
]
# Merged /usr: /bin, /lib... are symlinks into it; bind the ones that are directories.
for d in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]:
    if os.path.islink(d):
        os.symlink(os.readlink(d), os.path.join(bundle, "rootfs", d[1:]))
    elif os.path.isdir(d):
        mounts.append({"destination": d, "type": "bind", "source": d, "options": ro})
mounts += [
    {"destination": "/tmp", "type": "bind", "source": os.path.join(bundle, "tmp"),
     "options": ["rbind", "rw", "nosuid", "nodev"]},
    {"destination": "/var/tmp", "type": "bind", "source": os.path.join(bundle, "vartmp"),
     "options": ["rbind", "rw", "nosuid", "nodev"]},
    {"destination": home, "type": "bind", "source": os.path.join(bundle, "home"),
     "options": ["rbind", "rw", "nosuid", "nodev"]},
    {"destination": src, "type": "bind", "source": src, "options": ro},
]
# Docker's default capabilities (and --cap-add) bound the set; a plain uid holds none.
caps = caps.split(",")
linux = {
    # The host's network (docker run --network host): the agent CLI and registry tests
    # install from the package registries.
    "namespaces": [{"type": t} for t in ["pid", "ipc", "uts", "mount", "cgroup"]],
    "seccomp": json.load(open(os.path.join(bundle, "seccomp.json"))),
}
if tier == "container":
    # Docker's masked and read-only /proc paths.
    linux["maskedPaths"] = ["/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore",
                            "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                            "/sys/firmware", "/sys/devices/virtual/powercap"]
    linux["readonlyPaths"] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
config = {
    "ociVersion": "1.0.2",
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "taskcell-" + tier,
    "mounts": mounts,
    "process": {
        "terminal": False,
        "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
        "args": argv,
        "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8",
                "USER=" + str(uid)],
        "cwd": src,
        "capabilities": {"bounding": caps, "effective": [], "permitted": [],
                         "inheritable": [], "ambient": []},
        "noNewPrivileges": False,
    },
    "linux": linux,
}
json.dump(config, open(os.path.join(bundle, "config.json"), "w"), indent=1)
EOF
}

# The runtime, as a script in the bundle so that `timeout` can run it:
#   run.sh TIER crun ARGS...
# crun refuses a hybrid cgroup layout whose cgroup2 hierarchy holds a controller; it puts
# no container in a cgroup here (--cgroup-manager=disabled), so in a private mount
# namespace an empty tmpfs hides that hierarchy from it. For the container tier the
# runtime itself runs in an identity-mapped user namespace where user.max_user_namespaces
# is 0: that is how the #[ignore]d tests recognise a machine without user namespaces (the
# seccomp profile refuses unshare either way; the container has no user namespace of
# its own, as in Docker).
cat > "$bundle/run.sh" <<'EOF'
set -eu
tier=$1; shift
if [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
  hide='mount -t tmpfs -o size=4k,mode=755 taskcell-no-cgroup2 /sys/fs/cgroup/unified'
else
  hide=true
fi
if [ "$tier" = full ]; then
  exec unshare -m --propagation private sh -c "$hide"' && exec "$@"' sh "$@"
fi
go=$(mktemp -u /var/tmp/taskcell-crun-go.XXXXXX)
mkfifo -m 600 "$go"
# The shell execs itself once its uid is mapped: an exec as uid 0 gets the namespace's
# capabilities.
unshare -U -m --propagation private sh -c \
  'read _ < "$0"; rm -f "$0"; exec sh -c "$1" sh "$@"' "$go" \
  'shift; echo 0 > /proc/sys/user/max_user_namespaces && '"$hide"' && exec "$@"' "$@" &
pid=$!
trap 'kill -KILL $pid 2>/dev/null; rm -f "$go"' EXIT
i=0
while [ "$(readlink /proc/$pid/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do
  i=$((i + 1)); [ $i -lt 200 ] || { echo "run.sh: no user namespace for the runtime" >&2; exit 1; }
  sleep 0.05
done
# All ids but the last: crun takes a full map for the initial namespace and then mknods
# devices, which no user namespace may.
echo "0 0 4294967294" > /proc/$pid/uid_map
echo "0 0 4294967294" > /proc/$pid/gid_map
echo go > "$go"
status=0
wait $pid || status=$?
trap - EXIT
exit $status
EOF
runtime=(bash "$bundle/run.sh" "$tier" crun --root "$bundle/state" --cgroup-manager=disabled)

# A first container with the same bundle runs /bin/true: if that fails, say why and skip.
config /bin/true
if ! out=$(timeout --kill-after=10 60 "${runtime[@]}" run --bundle "$bundle" "$name-probe" 2>&1); then
  crun --root "$bundle/state" delete --force "$name-probe" >/dev/null 2>&1 || true
  skip "crun could not start /bin/true in the $tier bundle: ${out:-no message}"
fi

rm -f "$bundle"/rootfs/bin "$bundle"/rootfs/sbin "$bundle"/rootfs/lib*

# The container is what it claims to be: a seccomp filter, the plain uid, and unshare of a
# user namespace refused by the filter (EPERM; the sysctl alone would give ENOSPC) in the
# container tier, allowed in the full tier.
if [ "$tier" = full ]; then want='unshare -U true && echo userns-allowed'; else want='unshare -U true 2>&1 | grep -q "Operation not permitted" && echo userns-refused-by-seccomp'; fi
config /bin/sh -c "grep -q '^Seccomp:[[:space:]]*2' /proc/self/status && echo seccomp-filter; echo uid=\$(id -u); $want"
check=$(timeout --kill-after=10 60 "${runtime[@]}" run --bundle "$bundle" "$name-check" 2>&1) || true
expect="seccomp-filter
uid=$uid
$([ "$tier" = full ] && echo userns-allowed || echo userns-refused-by-seccomp)"
if [ "$check" != "$expect" ]; then
  echo "container-test: the $tier container is not the one described (want: $(echo $expect); got: $(echo $check))" >&2
  exit 1
fi
rm -f "$bundle"/rootfs/bin "$bundle"/rootfs/sbin "$bundle"/rootfs/lib*
# The container's init is `timeout`: it ends the tests after $limit seconds, and when it
# exits the kernel kills everything else in the container's pid namespace. The outer
# timeout is a backstop for the runtime itself.
if [ "$run_cmd" = 1 ]; then
  config timeout --kill-after=20 "$limit" "${args[@]}"
else
  config timeout --kill-after=20 "$limit" scripts/test.sh --no-build -- "${args[@]}"
fi
echo "container-test: $tier tier: crun $(crun --version | sed -n 's/^crun version //p'), Docker's default seccomp profile$([ "$tier" = full ] && echo ' + user namespaces')${capadd:+ for the bounding set + $capadd}, uid $uid, no capabilities"
timeout --kill-after=10 $((limit + 60)) "${runtime[@]}" run --bundle "$bundle" "$name" &
running=$!
status=0
wait "$running" || status=$?
running=
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "container-test: the $tier-tier container did not finish within ${limit}s and was killed" >&2
  status=124
fi
exit "$status"
