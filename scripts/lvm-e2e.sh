#!/usr/bin/env bash
# End to end with the real client: LVM2's lvm and lvmlockd (`lvmlockd -g idm`),
# built from Debian's lvm2 2.03.16 source package against this project's
# libseagate_ilm (scripts/lvm-build.sh, cached), in throw-away Linux guests on
# three simulated IDM drives served over iSCSI by `idm sim`.
#
#   1. one guest: the whole shared-VG workflow (pvcreate, vgcreate --shared
#      --locktype idm, vgchange --lock-start, lvcreate, lvchange -an/-aey,
#      lvremove, vgremove) on a VG with two PVs on one drive (/dev/sda2 and
#      /dev/sda3: one vote for that drive); lvmlockd killed (-9) while an LV is
#      active and restarted: the VG starts again and the LV lock is taken back
#      ("already held by this host"); then it leaves vg1 for run 2;
#   2. two guests at once (hosts a and b) on vg1: four lvcreate each at the same
#      time (all succeed), lvs in a loop meanwhile (never "without a lock"), both
#      list the same LVs, vgck clean; exclusive activation: a holds LV x, b is
#      refused, a deactivates, b activates;
#   3. fencing through lvmlockd's kill path (kernel initiator only: the guest
#      needs a NIC): one guest with vg2 and an active LV stops sim0 and sim1
#      itself (`idm fault` to the simulator's TCP control address, reached over
#      QEMU's user network), the library fences the lockspace when the lease
#      (lvmlockd's fixed 60 s) can no longer be renewed, lvmlockd's kill path
#      (`/sbin/lvmlockctl --kill vg2`) marks the VG killed (`lvmlockctl -i -d`:
#      kill_vg=1), the drives are healed, lvcreate on vg2 fails, and after
#      lvchange -an and `lvmlockctl --drop vg2` the VG starts again. About 50 s
#      of it is waiting for the lease to run out.
#
# The drives' data lives in backing files (`idm sim --backing`) that this script
# partitions first: GPT, partition 1 named "propeller" (lvmlockd's global lock
# uses the disks that have one), partitions 2 and 3 for PVs.
#
# The guests reach the targets with the guest kernel's iSCSI initiator
# (iscsi_tcp over a virtio-net NIC on QEMU's user network, where the host's
# 127.0.0.1 is 10.0.2.2), logged in with open-iscsi's `iscsistart` (no iscsid, no
# node database; the binary and its library come from Debian's open-iscsi and
# libopeniscsiusr packages, downloaded with `apt-get download` into the cache).
# The kernel initiator passes the drives' SCSI status bytes through intact.
# IDM_LVM_INITIATOR=qemu uses QEMU's iSCSI block driver (libiscsi, scsi-block on
# virtio-scsi) instead, as scripts/iscsi-e2e.sh does; libiscsi turns COMMAND
# TERMINATED (0x22, "already held by this host") into another status, so the
# re-activation after the lvmlockd restart fails there.
#
# Needs: ../shared/tools/guest-run (or $GUEST_RUN), gdisk (sgdisk),
# qemu-block-extra with IDM_LVM_INITIATOR=qemu, LVM2's build dependencies
# (installed with apt-get as root when missing). Prints PASS/FAIL per check, a summary line with counts and the wall
# time; exit 0 when everything passed.
#
#   scripts/lvm-e2e.sh
# Environment: IDM_LVM_CACHE (scripts/lvm-build.sh), GUEST_RUN,
# IDM_LVM_INITIATOR (kernel, the default, or qemu), IDM_LOCK_WAIT_MS
# (passed to lvmlockd in the guests; default the library's), IDM_LOG_LEVEL
# (the library's log level in the guests, default info), IDM_LVM_SCENARIOS
# (which of the scenarios 1 2 3 to run, default all; 2 needs 1's vg1).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/iscsi-sim.sh
start=$(date +%s)
guest_run=${GUEST_RUN:-$(pwd)/../shared/tools/guest-run}
[ -x "$guest_run" ] || { echo "lvm-e2e: FAIL: guest-run not found at $guest_run" >&2; exit 2; }
initiator=${IDM_LVM_INITIATOR:-kernel}
case $initiator in kernel | qemu) ;; *) echo "lvm-e2e: IDM_LVM_INITIATOR must be kernel or qemu" >&2; exit 2 ;; esac
cache=${IDM_LVM_CACHE:-$HOME/.cache/idm-lvm2}
have_qemu_iscsi() { ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1; }
need=()
[ "$initiator" = qemu ] && ! have_qemu_iscsi && need+=(qemu-block-extra)
command -v sgdisk >/dev/null 2>&1 || need+=(gdisk)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  { [ "$initiator" = kernel ] || have_qemu_iscsi; } && command -v sgdisk >/dev/null ||
    { echo "lvm-e2e: FAIL: missing ${need[*]}" >&2; exit 2; }
fi
if [ "$initiator" = kernel ]; then
  oi=$cache/open-iscsi
  if [ ! -x "$oi/root/sbin/iscsistart" ]; then
    rm -rf "$oi" && mkdir -p "$oi"
    (cd "$oi" && { apt-get download -qq open-iscsi libopeniscsiusr >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get download -qq open-iscsi libopeniscsiusr >/dev/null 2>&1; }; }) ||
      { echo "lvm-e2e: FAIL: apt-get download open-iscsi libopeniscsiusr failed" >&2; exit 2; }
    for deb in "$oi"/*.deb; do dpkg -x "$deb" "$oi/root"; done
  fi
fi

build=$(scripts/lvm-build.sh | tail -n 1)
[ -x "$build/daemons/lvmlockd/lvmlockd" ] || { echo "lvm-e2e: FAIL: LVM2 build failed" >&2; exit 1; }
built=$(date +%s)
echo "lvm-e2e: LVM2 build $build ($((built - start)) s)"
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cargo build -q -p idm-tools --locked
idm=$target_dir/debug/idm

work=$(mktemp -d)
sim_pid=
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/disks"
for d in 0 1 2; do
  img=$work/disks/sim$d.img
  truncate -s 64M "$img"
  sgdisk -o -n 1:2048:4095 -c 1:propeller -n 2:4096:69631 -c 2:pv -n 3:69632:0 -c 3:pv2 "$img" >/dev/null 2>&1
  sgdisk -p "$img" 2>/dev/null | grep -q ' propeller$' ||
    { echo "lvm-e2e: FAIL: could not partition $img" >&2; exit 1; }
done
start_iscsi_sim lvm-e2e --backing "$work/disks" --lun-size-mib 64 --listen tcp:127.0.0.1:0
# The control protocol on TCP too: the fencing guest sets faults through it.
ctl_port=$(sed -n 's/^listening on tcp:127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/sim.out")
[ -n "$ctl_port" ] || { echo "lvm-e2e: FAIL: no TCP control address"; cat "$work/sim.out"; exit 1; }
echo "lvm-e2e: simulator pid $sim_pid, iSCSI on 127.0.0.1:$port, control on 127.0.0.1:$ctl_port, initiator: $initiator"

# What the guests get: the programs with their shared libraries (the library
# at the path the rpath names), dm-mod, and the scenario script.
files=(--file "$build/tools/lvm:/root/lvm" --file "$build/daemons/lvmlockd/lvmlockd:/root/lvmlockd"
  --file "$build/daemons/lvmlockd/lvmlockctl:/root/lvmlockctl" --file "$idm:/root/idm")
while read -r lib; do
  files+=(--file "$(readlink -f "$lib"):$lib")
done < <(ldd "$build/tools/lvm" "$build/daemons/lvmlockd/lvmlockd" "$build/daemons/lvmlockd/lvmlockctl" "$idm" |
  awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}' | sort -u)
guest_cache=${IDM_GUEST_CACHE:-$HOME/.cache/idm-guest}
dm=$(find "$guest_cache"/kern/lib/modules -name dm-mod.ko 2>/dev/null | head -n 1)
if [ -z "$dm" ]; then # the first guest-run fetches the kernel
  "$guest_run" -- /bin/true >/dev/null 2>&1 || true
  dm=$(find "$guest_cache"/kern/lib/modules -name dm-mod.ko | head -n 1)
fi
[ -n "$dm" ] || { echo "lvm-e2e: FAIL: no dm-mod.ko in the guest kernel" >&2; exit 2; }
mods=(dm-mod)
[ "$initiator" = kernel ] &&
  mods+=(crc32c_generic failover net_failover virtio_net scsi_transport_iscsi libiscsi libiscsi_tcp iscsi_tcp)
moddir=$(dirname "$(dirname "$(dirname "$(dirname "$dm")")")")
for m in "${mods[@]}"; do
  f=$(find "$moddir" -name "$m.ko" | head -n 1)
  [ -n "$f" ] || { echo "lvm-e2e: FAIL: no $m.ko in the guest kernel" >&2; exit 2; }
  files+=(--file "$f:/root/mod/$m.ko")
done
printf '%s\n' "${mods[@]}" >"$work/modules"
files+=(--file "$work/modules:/root/mod/order")
if [ "$initiator" = kernel ]; then
  is=$oi/root/sbin/iscsistart
  files+=(--file "$is:/root/iscsistart")
  while read -r lib; do # the package's own library goes to the guest's /usr/lib
    files+=(--file "$(readlink -f "$lib"):${lib#"$oi/root"}")
  done < <(LD_LIBRARY_PATH=$oi/root/usr/lib/x86_64-linux-gnu ldd "$is" |
    awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}' | sort -u)
fi
# The guest's environment for lvmlockd (guest-run passes none of ours).
{
  echo '#!/bin/sh'
  [ -n "${IDM_LOCK_WAIT_MS:-}" ] && echo "export IDM_LOCK_WAIT_MS=$IDM_LOCK_WAIT_MS"
  [ -n "${IDM_LOG_LEVEL:-}" ] && echo "export IDM_LOG_LEVEL=$IDM_LOG_LEVEL"
  echo "export IDM_INITIATOR=$initiator IDM_ISCSI_PORT=$port IDM_CTL_PORT=$ctl_port"
  echo 'exec /bin/sh /root/lvm-guest "$@"'
} >"$work/guest"
chmod +x "$work/guest"
files+=(--file "$PWD/scripts/lvm-guest.sh:/root/lvm-guest")

guest() { # ROLE
  local args=(--virtio-scsi --timeout 420 --mem 512 "${files[@]}")
  if [ "$initiator" = kernel ]; then
    args+=(--qemu-arg -netdev --qemu-arg user,id=n0 --qemu-arg -device --qemu-arg virtio-net-pci,netdev=n0)
  else
    args+=(--qemu-arg -iscsi --qemu-arg "initiator-name=iqn.2026-11.org.idm-engine:lvm-$1")
    for d in 0 1 2; do
      args+=(--qemu-arg -drive --qemu-arg
        "file=iscsi://127.0.0.1:$port/iqn.2026-11.org.idm-engine:sim$d/0,if=none,id=d$d,format=raw,cache=none"
        --qemu-arg -device --qemu-arg "scsi-block,drive=d$d,bus=scsi0.0")
    done
  fi
  "$guest_run" "${args[@]}" -- "$work/guest" "$1"
}

show() { # LOG: the guest's own lines, without the kernel's
  grep -vE '^\[ *[0-9]+\.[0-9]+\]|^guest-run|^$' "$1" | sed 's/^/   /' || true
}

scenarios=" ${IDM_LVM_SCENARIOS:-1 2 3} "
want() { case $scenarios in *" $1 "*) return 0 ;; esac; return 1; }
ran=()
: >"$work/solo.log"; : >"$work/a.log"; : >"$work/b.log"; : >"$work/compare.log"; : >"$work/fence.log"

if want 1; then
echo "== 1. one host: the whole shared-VG workflow"
ran+=(solo)
t=$(date +%s)
set +e
guest solo >"$work/solo.log" 2>&1
rs=$?
set -e
show "$work/solo.log"
echo "   (guest exit $rs, $(( $(date +%s) - t )) s)"
fi

if want 2; then
echo "== 2. two hosts at once on vg1"
ran+=(a b)
t=$(date +%s)
set +e
guest a >"$work/a.log" 2>&1 &
pa=$!
guest b >"$work/b.log" 2>&1 &
pb=$!
wait $pa; ra=$?
wait $pb; rb=$?
set -e
for g in a b; do
  echo "-- host $g"
  show "$work/$g.log"
done
echo "   (guest exits $ra/$rb, $(( $(date +%s) - t )) s)"
la=$(sed -n 's/^LVS a //p' "$work/a.log")
lb=$(sed -n 's/^LVS b //p' "$work/b.log")
if [ -n "$la" ] && [ "$la" = "$lb" ]; then
  echo "PASS both hosts list the same LVs: $la"
else
  echo "FAIL both hosts list the same LVs (a: '$la', b: '$lb')"
fi >"$work/compare.log"
cat "$work/compare.log"
fi

if want 3; then
echo "== 3. fencing through lvmlockd's kill path"
if [ "$initiator" = kernel ]; then
  ran+=(fence)
  t=$(date +%s)
  set +e
  guest fence >"$work/fence.log" 2>&1
  rf=$?
  set -e
  show "$work/fence.log"
  echo "   (guest exit $rf, $(( $(date +%s) - t )) s)"
else
  echo "   skipped: the guest has no NIC with IDM_LVM_INITIATOR=qemu"
fi
fi

for g in "${ran[@]}"; do
  [ -s "$work/$g.log" ] && grep -q "^guest $g: .* failed$" "$work/$g.log" ||
    echo "FAIL $g: the guest did not finish (see above)"
done >"$work/unfinished.log"
cat "$work/unfinished.log"

echo "-- simulator table of sim0 after the runs"
"$idm" dump --sim "unix:$work/sim.sock" sim0 2>&1 | sed 's/^/   /' || true
passes=$(cat "$work"/{solo,a,b,fence,compare}.log | grep -c '^PASS' || true)
fails=$(cat "$work"/{solo,a,b,fence,compare,unfinished}.log | grep -c '^FAIL' || true)
wall=$(( $(date +%s) - start ))
if [ "$fails" = 0 ] && [ "$passes" -gt 0 ]; then
  echo "lvm-e2e: PASS: $passes checks passed, 0 failed (wall time $wall s, of which LVM2 build $((built - start)) s)"
  exit 0
fi
echo "lvm-e2e: FAIL: $passes checks passed, $fails failed (wall time $wall s, of which LVM2 build $((built - start)) s)"
tail -n 20 "$work/sim.err"
exit 1
