#!/usr/bin/env bash
# LVM2's own IDM tests (test/shell/ of LVM2 2.03.16) against this project's
# libseagate_ilm, in throw-away guests, each on five simulated IDM drives of its
# own served over iSCSI by `idm sim` (no IDM hardware is involved anywhere).
#
#   scripts/lvm2-suite.sh
#
# The tests, in the order LVM2's `make check_lvmlockd_idm` runs them (one
# lvmlockd, started by the first, left running for the others, stopped by the
# last):
#   aa-lvmlockd-idm-prepare  lvmlockd-hello-world  lvmlockd-lv-types
#   lvmlockd_failure (LVM_TEST_FAILURE=1)  idm_ilm_failure (LVM_TEST_FAILURE=1)
#   stress_single_thread (bounded, below)  zz-lvmlockd-idm-remove
# each under a timeout, the way LVM2's runner runs them (`bash -noprofile -norc
# shell/TEST.sh` in test/, LVM_TEST_FLAVOUR=udev-lvmlockd-idm). Two guests run
# at once: one runs them all but idm_ilm_failure, the other runs idm_ilm_failure
# between its own prepare and remove (180 s of it are sleeps under injected
# faults). Prints one line per test run, PASS/FAIL/SKIP with the reason, and a
# summary with the counts and the wall time; exit 0 when every run passed.
#
# How the suite's expectations of a Seagate test host are met:
#   - drives: LVM_TEST_BACKING_DEVICE=/dev/sda2,...,/dev/sde2. Each drive has a
#     GPT with partition 1 named "propeller" (the global lock's drives) and
#     partition 2 for the test's devices. prepare_devs zeroes up to 1000 MB of
#     every backing device before each test, so they must be partitions: on a
#     whole disk the wipe takes the GPT and lvmlockd then finds no drive for the
#     global lock (idm_ilm_failure's `sed 's/[0-9]*$//'` on the backing device's
#     name shows that partitions are what the suite was written for). Five
#     drives: lvmlockd-lv-types puts its five PVs on five different drives.
#   - cleanup_idm_context wipes each drive's IDM context through sg_raw (vendor
#     READ(16)/WRITE AND VERIFY(16)); the simulator answers both. sg3-utils and
#     thin-provisioning-tools (thin and cache pools) come from Debian's packages
#     (`apt-get download`, unpacked into the cache, nothing installed).
#   - `seagate_ilm`: aa-lvmlockd-idm-prepare starts Seagate's lock daemon and
#     checks that it runs; with this library the lock manager lives inside
#     lvmlockd, so the guest has a do-nothing stand-in of that name.
#   - `systemctl start lvm2-lvmlockd` (lvmlockd_failure's restart after
#     `killall -9 lvmlockd`): the guest has no systemd; a stand-in runs
#     `lvmlockd -g idm` and waits until it answers (what the unit's Type=notify
#     does).
#   - idm_inject_failure (LVM2's helper, built from test/lib) calls
#     ilm_inject_fault, which this library makes host-wide through
#     /run/idm-engine/inject-fault, so lvmlockd's drive commands fail.
#   - stress_single_thread loops 1000 times (about 13 LVM commands each, some
#     hours in an emulated guest); it has no iteration knob, so the guest gets a
#     copy with `{1..1000}` replaced by `{1..$IDM_LVM2_STRESS_ITERS}` (default
#     10); nothing else of it changes.
#
# Builds (cached, in the LVM2 build directory of scripts/lvm-build.sh): dmsetup
# (libdm/dm-tools), lvmpolld (the IDM flavour runs the tests with it) and the parts of test/ the tests use (lib/not, lib/paths,
# lib/idm_inject_failure, the shell libraries, the flavour), with the
# Makefile's abs_* paths pointed at the build directory.
#
# Environment: IDM_LVM_CACHE (scripts/lvm-build.sh), GUEST_RUN,
# IDM_LVM2_STRESS_ITERS (default 10), IDM_LVM2_TESTS (a space-separated subset
# of the test names, default all, always in the order above), IDM_LOG_LEVEL
# (the library's log level in the guest), IDM_SUITE_TAIL (lines of a failed
# test's output shown, default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/iscsi-sim.sh
. scripts/lib/debs.sh
name=lvm2-suite
start=$(date +%s)
guest_run=${GUEST_RUN:-$(pwd)/../shared/tools/guest-run}
[ -x "$guest_run" ] || { echo "$name: FAIL: guest-run not found at $guest_run" >&2; exit 2; }
cache=${IDM_LVM_CACHE:-$HOME/.cache/idm-lvm2}
iters=${IDM_LVM2_STRESS_ITERS:-10}
ndrives=5
# name:timeout_s:env (the failure tests need LVM_TEST_FAILURE, which the IDM
# flavour does not set; `make check_lvmlockd_idm` leaves it to the caller).
all_tests=(aa-lvmlockd-idm-prepare:60 lvmlockd-hello-world:120 lvmlockd-lv-types:420
  lvmlockd_failure:180:LVM_TEST_FAILURE=1 idm_ilm_failure:420:LVM_TEST_FAILURE=1
  stress_single_thread:$((60 + 60 * iters)) zz-lvmlockd-idm-remove:60)
specs=()
for spec in "${all_tests[@]}"; do
  t=${spec%%:*}
  if [ -z "${IDM_LVM2_TESTS:-}" ] || [[ " $IDM_LVM2_TESTS " == *" $t "* ]]; then specs+=("$spec"); fi
done
[ ${#specs[@]} -gt 0 ] || { echo "$name: FAIL: no test selected by IDM_LVM2_TESTS" >&2; exit 2; }

command -v sgdisk >/dev/null 2>&1 ||
  { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdisk >/dev/null; } ||
  { echo "$name: FAIL: sgdisk missing (gdisk)" >&2; exit 2; }
fetch_debs "$name" "$cache/open-iscsi" sbin/iscsistart open-iscsi libopeniscsiusr
sglib=$(apt-cache depends sg3-utils 2>/dev/null | sed -n 's/.*Depends: \(libsgutils2[^ ]*\)$/\1/p' | head -n 1)
fetch_debs "$name" "$cache/suite-tools" usr/bin/sg_raw sg3-utils "${sglib:-libsgutils2-1.46-2}" thin-provisioning-tools

build=$(scripts/lvm-build.sh | tail -n 1)
[ -x "$build/daemons/lvmlockd/lvmlockd" ] || { echo "$name: FAIL: LVM2 build failed" >&2; exit 1; }
if [ ! -f "$build/test/.idm-suite-stamp" ] || [ ! -x "$build/daemons/lvmpolld/lvmpolld" ]; then
  echo "$name: building dmsetup and LVM2's test tree in $build"
  paths=(abs_top_builddir="$build" abs_top_srcdir="$build" abs_srcdir="$build/test" abs_builddir="$build/test")
  (
    cd "$build"
    make -j"$(nproc)" -C libdm && make -j"$(nproc)" -C libdm/dm-tools && make -j"$(nproc)" -C daemons/lvmpolld &&
      make -C test "${paths[@]}" .lib-dir-stamp lib/not lib/should lib/invalid lib/fail lib/paths \
        lib/check lib/aux lib/inittest lib/utils lib/get lib/lvm-wrapper lib/flavour-udev-lvmlockd-idm \
        lib/version-expected lib/dm-version-expected lib/idm_inject_failure
  ) >"$build/suite-build.log" 2>&1 || { tail -n 30 "$build/suite-build.log"; echo "$name: FAIL: test tree build" >&2; exit 1; }
  touch "$build/test/.idm-suite-stamp"
fi
built=$(date +%s)
echo "$name: LVM2 build $build ($((built - start)) s)"
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cargo build -q -p idm-tools --locked
idm=$target_dir/debug/idm

work=$(mktemp -d)
sims=()
# shellcheck disable=SC2317 # the EXIT trap runs it
cleanup() {
  local p
  for p in "${sims[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# One simulator (five drives, their data in backing files) per guest.
declare -A ports=()
start_sim() { # GUEST
  local work=$work/$1 d img extra=() # start_iscsi_sim works in $work
  mkdir -p "$work/disks"
  for ((d = 0; d < ndrives; d++)); do
    img=$work/disks/sim$d.img
    truncate -s 40M "$img"
    sgdisk -o -n 1:2048:4095 -c 1:propeller -n 2:4096:0 -c 2:pv "$img" >/dev/null 2>&1
    sgdisk -p "$img" 2>/dev/null | grep -q ' propeller$' || { echo "$name: FAIL: could not partition $img" >&2; exit 1; }
    if [ "$d" -ge 3 ]; then extra+=(--drive "sim$d"); fi # start_iscsi_sim starts sim0..sim2
  done
  start_iscsi_sim "$name" --backing "$work/disks" --lun-size-mib 40 "${extra[@]}"
  sims+=("$sim_pid")
  ports[$1]=$port
  echo "$name: guest $1: simulator pid $sim_pid, $ndrives drives, iSCSI on 127.0.0.1:$port"
}

# What the guest gets. Files at the paths the build and the tests name, each
# binary with its shared libraries (big ones without debug sections).
files=()
declare -A have=()
add() { # SRC DEST
  [ -n "${have[$2]:-}" ] && return 0
  have[$2]=1
  local src=$1
  if [ "$(stat -c %s "$src")" -gt 4000000 ] && [ "$(head -c 4 "$src" | tail -c 3)" = ELF ]; then
    src=$work/slim/${2//\//_}
    mkdir -p "$work/slim"
    strip --strip-debug -o "$src" "$1"
  fi
  files+=(--file "$src:$2")
}
add_bin() { # SRC DEST [LD_LIBRARY_PATH]: the file and the libraries ldd names
  local lib
  add "$(readlink -f "$1")" "$2"
  while read -r lib; do
    case $lib in # an unpacked package's own library goes where the package puts it
    "$cache"/*/root/*) add "$(readlink -f "$lib")" "/${lib#"$cache"/*/root/}" ;;
    *) add "$(readlink -f "$lib")" "$lib" ;;
    esac
  done < <(LD_LIBRARY_PATH=${3:-} ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}' | sort -u)
}
tools=$cache/suite-tools/root
# First, as a whole (a directory copied onto an existing one would land inside it).
have[$build/test/lib]=1
files+=(--file "$build/test/lib:$build/test/lib")
have[$build/test/lib/idm_inject_failure]=1
add_bin "$build/test/lib/idm_inject_failure" "$build/test/lib/idm_inject_failure"
add_bin "$build/tools/lvm" "$build/tools/lvm"
add_bin "$build/daemons/lvmlockd/lvmlockd" /sbin/lvmlockd
add_bin "$build/daemons/lvmlockd/lvmlockctl" /sbin/lvmlockctl
add_bin "$build/daemons/lvmpolld/lvmpolld" "$build/daemons/lvmpolld/lvmpolld"
add_bin "$build/libdm/dm-tools/dmsetup" "$build/libdm/dm-tools/dmsetup" "$build/libdm/ioctl"
add "$build/libdm/ioctl/libdevmapper.so.1.02" /usr/lib/x86_64-linux-gnu/libdevmapper.so.1.02
for t in sg_raw sg_map26; do add_bin "$tools/usr/bin/$t" "/usr/bin/$t" "$tools/usr/lib/x86_64-linux-gnu"; done
add_bin "$tools/usr/sbin/pdata_tools" /usr/sbin/pdata_tools
# GNU tools where the suite needs more than busybox has (find -printf, stat
# --printf, mktemp -p, procps' pgrep, ...); busybox stays for the rest.
for t in bash env find stat mktemp dd sed grep awk tee sort cut head tail tr seq df timeout pgrep pkill \
  killall ps xargs readlink sleep ls cat rm mkdir ln cp mv chmod touch uname wipefs blkdiscard blockdev \
  date basename dirname wc uniq id sysctl dmesg free test expr sync diff cmp od flock printf kill nohup true false; do
  p=$(command -v "$t" 2>/dev/null || true)
  case $p in /*) add_bin "$p" "/usr/bin/$t" ;; *) ;; esac
done
add_bin "$cache/open-iscsi/root/sbin/iscsistart" /root/iscsistart "$cache/open-iscsi/root/usr/lib/x86_64-linux-gnu"
# The tests, the stress test bounded.
for spec in "${specs[@]}"; do
  t=${spec%%:*}
  src=$build/test/shell/$t.sh
  if [ "$t" = stress_single_thread ]; then
    grep -q '^for i in {1\.\.1000}$' "$src" || { echo "$name: FAIL: $t has no 'for i in {1..1000}'" >&2; exit 1; }
    sed "s/^for i in {1\.\.1000}\$/for i in {1..$iters}/" "$src" >"$work/$t.sh"
    src=$work/$t.sh
  fi
  files+=(--file "$src:$build/test/shell/$t.sh")
done

# Kernel modules, dependencies first: dm with the targets the tests use
# (thin, cache, snapshot, mirror, raid1) and the iSCSI initiator.
guest_cache=${IDM_GUEST_CACHE:-$HOME/.cache/idm-guest}
[ -d "$guest_cache/kern/lib/modules" ] || "$guest_run" -- /bin/true >/dev/null 2>&1 || true
find "$guest_cache"/kern/lib/modules -name '*.ko' >"$work/ko"
[ -s "$work/ko" ] || { echo "$name: FAIL: no kernel modules in $guest_cache" >&2; exit 2; }
mods=()
add_mod() {
  local m=$1 f dep
  [[ " ${mods[*]} " == *" $m "* ]] && return 0
  f=$(grep -E "/(${m}|${m//_/-}|${m//-/_})\.ko$" "$work/ko" | head -n 1)
  [ -n "$f" ] || return 0 # built in
  for dep in $(strings "$f" | sed -n 's/^depends=//p' | tr , ' '); do add_mod "$dep"; done
  files+=(--file "$f:/root/mod/$m.ko")
  mods+=("$m")
}
for m in crc32c_generic dm-mod dm-thin-pool dm-cache dm-cache-smq dm-snapshot dm-mirror dm-raid raid1 \
  failover net_failover virtio_net scsi_transport_iscsi libiscsi libiscsi_tcp iscsi_tcp; do
  add_mod "$m"
done
printf '%s\n' "${mods[@]}" >"$work/modules"
files+=(--file "$work/modules:/root/mod/order")
files+=(--file "$PWD/scripts/lvm2-suite-guest.sh:/root/lvm2-suite-guest")

# Two guests at once, each a host with its own lvmlockd and simulator: "main"
# runs the tests in the order above except idm_ilm_failure, which runs in
# "faults" between its own prepare and remove (it sleeps 180 s while faults are
# injected; alone it would make the run half as long again).
main=() faults=()
for spec in "${specs[@]}"; do
  case ${spec%%:*} in idm_ilm_failure) faults+=("$spec") ;; *) main+=("$spec") ;; esac
done
if [ ${#faults[@]} -gt 0 ]; then
  faults=("${all_tests[0]}" "${faults[@]}" "${all_tests[${#all_tests[@]} - 1]}")
fi
guests=()
[ ${#main[@]} -gt 0 ] && guests+=(main)
[ ${#faults[@]} -gt 0 ] && guests+=(faults)
echo "== LVM2 2.03.16 IDM tests in ${#guests[@]} guest(s) at once (stress_single_thread $iters iterations)"
pids=()
for g in "${guests[@]}"; do
  start_sim "$g"
  {
    echo '#!/bin/sh'
    echo "export IDM_LVM_BUILD=$build IDM_DRIVES=$ndrives IDM_ISCSI_PORT=${ports[$g]}"
    [ -n "${IDM_LOG_LEVEL:-}" ] && echo "export IDM_LOG_LEVEL=$IDM_LOG_LEVEL"
    [ -n "${IDM_SUITE_TAIL:-}" ] && echo "export IDM_SUITE_TAIL=$IDM_SUITE_TAIL"
    echo 'exec /usr/bin/bash /root/lvm2-suite-guest "$@"'
  } >"$work/guest-$g"
  chmod +x "$work/guest-$g"
  declare -n list=$g
  budget=60
  for spec in "${list[@]}"; do IFS=: read -r _ to _ <<<"$spec"; budget=$((budget + to + 15)); done
  "$guest_run" --virtio-scsi --timeout "$budget" --mem 1024 "${files[@]}" \
    --qemu-arg -netdev --qemu-arg user,id=n0 --qemu-arg -device --qemu-arg virtio-net-pci,netdev=n0 \
    -- "$work/guest-$g" "${list[@]}" >"$work/$g.log" 2>&1 &
  pids+=($!)
  unset -n list
done
pass=0 fail=0 skip=0 expected=0
for i in "${!guests[@]}"; do
  g=${guests[i]}
  declare -n list=$g
  set +e
  wait "${pids[i]}"
  rc=$?
  set -e
  echo "-- guest $g (exit $rc)"
  # The guest's own lines (not the kernel's); RESULT lines become the report.
  ran=0
  while IFS= read -r l; do
    case $l in
    "RESULT "*)
      read -r _ t st secs why <<<"$l"
      printf '%s %-24s (%3s s) %s\n' "$st" "$t" "$secs" "$why"
      ran=$((ran + 1))
      case $st in PASS) pass=$((pass + 1)) ;; SKIP) skip=$((skip + 1)) ;; *) fail=$((fail + 1)) ;; esac
      ;;
    guest:* | "  "*) echo "   $l" ;;
    *) ;; # the kernel's and lvmlockd's console lines
    esac
  done < <(grep -vE '^guest-run|^$' "$work/$g.log")
  expected=$((expected + ${#list[@]}))
  if [ $ran -lt ${#list[@]} ]; then
    echo "FAIL guest $g: $ran of ${#list[@]} tests reported"
    fail=$((fail + ${#list[@]} - ran))
    tail -n 20 "$work/$g/sim.err"
  fi
  unset -n list
done
wall=$(($(date +%s) - start))
summary="$pass passed, $fail failed, $skip skipped of $expected test runs (wall time $wall s, of which build $((built - start)) s)"
if [ $fail = 0 ] && [ $skip = 0 ] && [ $pass -gt 0 ]; then
  echo "$name: PASS: $summary"
  exit 0
fi
echo "$name: FAIL: $summary"
exit 1
