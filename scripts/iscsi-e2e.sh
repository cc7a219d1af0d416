#!/usr/bin/env bash
# End to end on a real kernel: simulated IDM drives served over iSCSI, attached to
# throw-away Linux guests through QEMU's iSCSI block driver (scsi-block on
# virtio-scsi), and the engine (`idm lock`) inside each guest on the /dev/sdX disks
# the guest kernel found: real discovery (sysfs), the real sg transport.
#
#   1. one guest takes a lock with quorum on its three disks and releases it;
#   2. two guests at once (hosts A and B) contend for one lock through the same
#      simulator: exactly one wins; the winner stops renewing (3 s lease) and the
#      other takes the lock over once the lease has lapsed.
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

guest() { # NAME ROLE
  local args=(--virtio-scsi --timeout 240 --file "$idm:/root/idm" "${libs[@]}"
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

echo "-- simulator table of sim0 after the runs"
"$idm" dump --sim "unix:$work/sim.sock" sim0 2>&1 | sed 's/^/   /' || true
wall=$(( $(date +%s) - start ))
if [ $fail = 0 ]; then
  echo "iscsi-e2e: PASS (wall time $wall s)"
else
  echo "iscsi-e2e: FAIL (wall time $wall s)"; tail -n 20 "$work/sim.err"
fi
exit $fail
