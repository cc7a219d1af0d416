#!/usr/bin/env bash
# End to end on a real kernel: simulated IDM drives served over iSCSI, attached to
# throw-away Linux guests through QEMU's iSCSI block driver (scsi-block on
# virtio-scsi), and the engine (`idm lock`) inside each guest on the /dev/sdX disks
# the guest kernel found: real discovery (sysfs), the real sg transport.
#
#   1. one guest takes a lock with quorum on its three disks and releases it;
#   2. two guests at once (hosts A and B) contend for one lock through the same
#      simulator: exactly one wins; the winner stops renewing (3 s lease) and the
#      other takes the lock over once the lease has lapsed;
#   3. an administrator's tools on the guest's devices (`idm dump`, `idm cmd`):
#      the holder of a lock another process left behind shows on /dev/sdX, the
#      sg node and a /dev/disk/by-id link; break is refused while its lease runs,
#      takes it over once it lapsed; unlock and destroy free and remove the entry,
#      and a new host gets the lock; a plain disk (scsi_debug) and QEMU's NVMe
#      controller are reported as "not an IDM drive". One PASS/FAIL line a check.
#
# Needs: qemu-system-x86 with its iSCSI block driver (Debian: qemu-block-extra)
# and ../shared/tools/guest-run (or $GUEST_RUN). Missing packages are installed
# with apt-get when running as root:
#   apt-get install -y qemu-system-x86 qemu-block-extra libiscsi-bin
#
#   scripts/iscsi-e2e.sh            # prints PASS/FAIL and the wall time; exit 0 on PASS
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/iscsi-sim.sh
start=$(date +%s)
guest_run=${GUEST_RUN:-/work/shared/tools/guest-run}
[ -x "$guest_run" ] || { echo "iscsi-e2e: FAIL: guest-run not found at $guest_run" >&2; exit 2; }
if ! ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq qemu-block-extra >/dev/null
  fi
  ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1 ||
    { echo "iscsi-e2e: FAIL: QEMU has no iSCSI block driver (install qemu-block-extra)" >&2; exit 2; }
fi

cargo build -q -p idm-tools
idm=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/idm
work=$(mktemp -d)
sim_pid=
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

start_iscsi_sim iscsi-e2e
echo "iscsi-e2e: simulator pid $sim_pid, iSCSI on 127.0.0.1:$port"

# The guest side: wait for the three disks, then run the scenario named by $1.
cat >"$work/guest" <<'GUEST'
#!/bin/sh
role=$1
i=0
while [ ! -e /dev/sdc ] || [ ! -e /dev/sg2 ]; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo "guest: disks did not appear"; ls /dev; exit 2; }
  sleep 0.1
done
disks="/dev/sda /dev/sdb /dev/sdc"
echo "guest $role: kernel $(uname -r); disks: $(cat /sys/block/sd?/device/vendor | tr -s ' \n' ' ')"
case $role in
solo)
  /root/idm lock --host solo --lock e2e-solo --mode ex --hold-ms 1000 $disks
  exit $?
  ;;
admin)
  # The three IDM disks (the simulator's vendor) and the plain scsi_debug disk.
  i=0
  while :; do
    idm_disks=; plain=
    for b in /sys/block/sd*; do
      [ -e "$b/device/vendor" ] || continue
      case $(cat "$b/device/vendor") in
      IDMSIM*) idm_disks="$idm_disks /dev/${b##*/}" ;;
      *) plain=/dev/${b##*/} ;;
      esac
    done
    [ "$(echo $idm_disks | wc -w)" = 3 ] && [ -n "$plain" ] && [ -e /dev/nvme0n1 ] && break
    i=$((i + 1)); [ $i -gt 300 ] && { echo "guest: disks did not appear: $idm_disks / $plain"; exit 2; }
    sleep 0.1
  done
  set -- $idm_disks
  d1=$1; d2=$2; d3=$3
  sg1=/dev/$(ls /sys/block/${d1#/dev/}/device/scsi_generic)
  mkdir -p /dev/disk/by-id
  ln -sf "../../${d3#/dev/}" /dev/disk/by-id/idm-e2e-disk3
  byid=/dev/disk/by-id/idm-e2e-disk3
  plain_sg=/dev/$(ls /sys/block/${plain#/dev/}/device/scsi_generic)
  echo "guest admin: IDM disks $idm_disks ($d1 is $sg1), plain disk $plain ($plain_sg), /dev/nvme0n1"
  check() { # NAME OK(0/1) [OUTPUT]
    if [ "$2" = 0 ]; then echo "PASS: $1"; else echo "FAIL: $1"; [ -n "$3" ] && echo "$3" | sed 's/^/      /'; fi
  }
  row() { # OUTPUT HOST LIVE EXPIRED: the summary row of e2e-stuck for HOST
    echo "$1" | grep -qE "^e2e-stuck +$2 +[A-Z-]+ +$3 +$4 "
  }
  # Another process takes the lock on the three disks and leaves it held without
  # renewing it (8 s lease): a stuck lock once the lease has run out.
  out=$(/root/idm lock --host holder --lock e2e-stuck --lease-ms 8000 --command-timeout-ms 1000 --keep $idm_disks 2>&1)
  check "another process took e2e-stuck and left it held" $? "$out"
  out=$(/root/idm dump --lock e2e-stuck $sg1 $d2 $byid 2>&1); rc=$?
  echo "$out" | sed 's/^/   | /'
  row "$out" holder 3/3 0/3; ok=$?
  [ $rc = 0 ] && [ $ok = 0 ] && echo "$out" | grep -qE '^e2e-stuck +holder +EX +3/3 .*holds it \(majority\)'
  check "idm dump $sg1 $d2 $byid shows holder holding e2e-stuck on 3/3 drives" $? "$out"
  out=$(/root/idm dump $d1 $sg1 2>&1)
  [ $? = 0 ] && echo "$out" | grep -q "^== $sg1: the same drive as $d1, read and counted once"
  check "idm dump $d1 $sg1 reads the one drive once" $? "$out"
  out=$(/root/idm cmd $d1 break --lock e2e-stuck --host admin --timeout 2000 2>&1); rc=$?
  after=$(/root/idm dump --lock e2e-stuck $d1 2>&1)
  [ $rc != 0 ] && echo "$after" | grep -qE '^e2e-stuck +holder +locked'
  check "idm cmd break while the holder's lease runs is refused (exit $rc: $out)" $? "$after"
  # Wait (bounded) for the lease to run out on every drive.
  i=0
  while :; do
    out=$(/root/idm dump --lock e2e-stuck $idm_disks 2>&1)
    row "$out" holder 0/3 3/3 && break
    i=$((i + 1)); [ $i -gt 60 ] && break
    sleep 0.5
  done
  row "$out" holder 0/3 3/3
  check "the holder's lease lapsed: expired on 3/3" $? "$out"
  ok=0
  for d in $idm_disks; do
    out=$(/root/idm cmd $d break --lock e2e-stuck --host admin 2>&1)
    [ "$out" = granted ] || { ok=1; echo "      $d: $out"; }
  done
  out=$(/root/idm dump --lock e2e-stuck $idm_disks 2>&1)
  [ $ok = 0 ] && row "$out" admin 3/3 0/3 && ! echo "$out" | grep -qE '^e2e-stuck +holder '
  check "idm cmd break after the lease lapsed: admin took it over on 3/3, holder gone" $? "$out"
  ok=0
  for d in $idm_disks; do
    out=$(/root/idm cmd $d unlock --lock e2e-stuck --host admin 2>&1)
    [ "$out" = released ] || { ok=1; echo "      unlock $d: $out"; }
    out=$(/root/idm cmd $d destroy --lock e2e-stuck 2>&1)
    [ "$out" = destroyed ] || { ok=1; echo "      destroy $d: $out"; }
  done
  out=$(/root/idm dump --lock e2e-stuck $idm_disks 2>&1)
  [ $ok = 0 ] && echo "$out" | grep -q "^lock e2e-stuck: on none of the drives read"
  check "idm cmd unlock and destroy: the entry is gone from every drive" $? "$out"
  out=$(/root/idm lock --host newcomer --lock e2e-stuck --no-wait $idm_disks 2>&1)
  check "a new host gets e2e-stuck at once" $? "$out"
  for dev in $plain /dev/nvme0n1; do
    out=$(/root/idm dump $dev 2>&1); rc=$?
    [ $rc = 2 ] && echo "$out" | grep -q "not an IDM drive"
    check "idm dump $dev (no IDM drive) says so, exit 2: $out" $?
  done
  out=$(/root/idm cmd $plain_sg break --lock e2e-stuck --host admin 2>&1); rc=$?
  [ $rc = 2 ] && echo "$out" | grep -q "not an IDM drive"
  check "idm cmd $plain_sg break (no IDM drive) says so, exit 2: $out" $?
  exit 0
  ;;
*)
  # Try without waiting (a few times: two hosts starting at the same instant can
  # split the drives and both see "busy" once). A grant: this host is the first
  # winner; it holds 15 s renewing, stops renewing and lets the lease lapse.
  # Busy every time: another host holds the lock; wait to take it over.
  n=0
  while [ $n -lt 5 ]; do
    /root/idm lock --host "host-$role" --lock e2e-contended --mode ex --lease-ms 3000 --command-timeout-ms 1000 \
      --no-wait --stop-renew-after-ms 15000 $disks
    rc=$?
    [ $rc = 0 ] && { echo "RESULT first-winner"; exit 0; }
    [ $rc = 1 ] || { echo "RESULT error rc=$rc"; exit 1; }
    n=$((n + 1)); sleep 0.5
  done
  # The drives answer BUSY once the holder expired; Linux requeues BUSY until the
  # command times out, so a short command timeout makes the take-over quick.
  /root/idm lock --host "host-$role" --lock e2e-contended --mode ex --lease-ms 3000 \
    --timeout-ms 90000 --command-timeout-ms 1500 --hold-ms 500 $disks
  rc=$?
  [ $rc = 0 ] && { echo "RESULT takeover"; exit 0; }
  echo "RESULT error rc=$rc"; exit 1
  ;;
esac
GUEST
chmod +x "$work/guest"

# idm runs in the guest with its shared libraries (guest-run copies only PROGRAM's).
libs=()
while read -r lib; do
  libs+=(--file "$(readlink -f "$lib"):$lib")
done < <(ldd "$idm" | awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}' | sort -u)

guest() { # NAME ROLE [guest-run ARGS...]
  local args=(--virtio-scsi --timeout 240 --file "$idm:/root/idm" "${libs[@]}" "${@:3}"
    --qemu-arg -iscsi --qemu-arg "initiator-name=iqn.2026-11.org.idm-engine:guest-$1")
  for d in 0 1 2; do
    args+=(--qemu-arg -drive --qemu-arg
      "file=iscsi://127.0.0.1:$port/iqn.2026-11.org.idm-engine:sim$d/0,if=none,id=d$d,format=raw,cache=none"
      --qemu-arg -device --qemu-arg "scsi-block,drive=d$d,bus=scsi0.0")
  done
  "$guest_run" "${args[@]}" -- "$work/guest" "$2"
}

fail=0
echo "== 1. one guest: lock and unlock with quorum on 3 iSCSI disks"
set +e
guest solo solo 2>&1 | tee "$work/solo.log" | grep -E '^(guest|granted|released|busy|error|fenced)'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" = 0 ] && grep -q '^granted Exclusive on 3 drive' "$work/solo.log" && grep -q '^released' "$work/solo.log"; then
  echo "   ok"
else
  echo "   FAILED (exit $rc)"; tail -n 30 "$work/solo.log"; fail=1
fi

echo "== 2. two guests at once contend for one lock"
set +e
guest a a >"$work/a.log" 2>&1 &
pa=$!
guest b b >"$work/b.log" 2>&1 &
pb=$!
wait $pa; ra=$?
wait $pb; rb=$?
set -e
for g in a b; do
  echo "-- guest $g"
  grep -vE '^\[|^guest-run|^$' "$work/$g.log" | sed 's/^/   /' || true
done
firsts=$(cat "$work/a.log" "$work/b.log" | grep -c '^RESULT first-winner' || true)
takeovers=$(cat "$work/a.log" "$work/b.log" | grep -c '^RESULT takeover' || true)
if [ "$ra" = 0 ] && [ "$rb" = 0 ] && [ "$firsts" = 1 ] && [ "$takeovers" = 1 ] &&
  grep -qh '^fenced' "$work/a.log" "$work/b.log"; then
  echo "   ok: exactly one first winner, fenced after it stopped renewing; the other took over"
else
  echo "   FAILED (exits $ra/$rb, first winners $firsts, takeovers $takeovers)"
  tail -n 20 "$work/a.log" "$work/b.log"; fail=1
fi

echo "== 3. idm dump / idm cmd on the guest's devices: a stuck lock found and freed, plain disks refused"
set +e
guest admin admin --scsi-debug --nvme >"$work/admin.log" 2>&1
rc=$?
set -e
grep -E '^(guest|PASS|FAIL|      |   \|)' "$work/admin.log" | sed 's/^/   /' || true
passes=$(grep -c '^PASS' "$work/admin.log" || true)
fails=$(grep -c '^FAIL' "$work/admin.log" || true)
if [ "$rc" = 0 ] && [ "$passes" = 11 ] && [ "$fails" = 0 ]; then
  echo "   ok: $passes checks passed"
else
  echo "   FAILED (exit $rc, $passes passed, $fails failed, 11 expected)"
  tail -n 30 "$work/admin.log"; fail=1
fi

echo "-- simulator table of sim0 after the runs"
"$idm" dump --sim "unix:$work/sim.sock" sim0 2>&1 | sed 's/^/   /' || true
wall=$(( $(date +%s) - start ))
if [ $fail = 0 ]; then
  echo "iscsi-e2e: PASS (wall time $wall s)"
else
  echo "iscsi-e2e: FAIL (wall time $wall s)"; tail -n 20 "$work/sim.err"
fi
exit $fail
