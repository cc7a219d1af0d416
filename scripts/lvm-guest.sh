#!/bin/sh
# Runs inside a throw-away guest (busybox sh; see scripts/lvm-e2e.sh, which copies
# this file in as /root/lvm-guest with lvm, lvmlockd, lvmlockctl, their shared
# libraries, libseagate_ilm, kernel modules listed in /root/mod/order and, for the
# kernel initiator (IDM_INITIATOR=kernel), iscsistart). Three simulated IDM drives
# are the guest's /dev/sda..sdc (iSCSI); each has a GPT with partition 1 named
# "propeller" (the global lock's drives) and partitions 2 and 3 for PVs.
#
#   lvm-guest solo    one host's whole workflow (a VG with two PVs on one drive),
#                     lvmlockd killed and restarted, then leaves vg1 (with an
#                     inactive LV x) for the two-host run
#   lvm-guest a|b     one of two hosts at once on vg1: concurrent lvcreate, lvs
#                     during lvcreate, vgck, exclusive activation conflict and
#                     hand-over (the hosts synchronise through LVs in vg1 named
#                     flag_*: LVM metadata, under its own locks, is the channel)
#   lvm-guest fence   fencing through lvmlockd's kill path: vg2 (partitions 3)
#                     with an active LV; this guest itself stops sim0 and sim1
#                     (`idm fault` over QEMU's user network to the simulator's
#                     TCP control address 10.0.2.2:$IDM_CTL_PORT, so no host-side
#                     synchronisation is needed), waits (bounded) until the
#                     library fences and lvmlockd shows vg2 killed, heals the
#                     drives, checks that LVM commands on vg2 fail, then
#                     deactivates, `lvmlockctl --drop vg2` and starts vg2 again
#
# Prints "PASS <host> <check>" / "FAIL <host> <check>" lines, "LVS <host> <names>"
# for the host script to compare, and exits 0 when nothing failed.
role=$1
host=$role
[ "$role" = solo ] && host=a
export PATH=/root:/bin:/sbin:/usr/bin:/usr/sbin
export LVM_SYSTEM_DIR=/etc/lvm
# The drive-list deduplication is logged at debug level (checked below).
export IDM_LOG=/tmp/ilm.log IDM_LOG_LEVEL=${IDM_LOG_LEVEL:-info,seagate_ilm::drives=debug}
fails=0
# A command that is not lvm, printed with its output, like lv().
run() {
  echo "+ $*"
  "$@" >/tmp/out 2>&1
  rc=$?
  sed 's/^/  | /' /tmp/out
  [ $rc = 0 ] || echo "  ! exit $rc"
  return $rc
}
pass() { echo "PASS $role $*"; }
fail() { echo "FAIL $role $*"; fails=$((fails + 1)); }
# Runs an lvm command, printing it and its output; returns its status.
lv() {
  echo "+ lvm $*"
  lvm "$@" >/tmp/out 2>&1
  rc=$?
  sed 's/^/  | /' /tmp/out
  [ $rc = 0 ] || echo "  ! exit $rc"
  return $rc
}
check() { # NAME COMMAND...: PASS if the lvm command succeeds
  name=$1; shift; [ "$1" = lvm ] && shift
  if lv "$@"; then pass "$name"; else fail "$name"; fi
}
no_lock_warnings() { # NAME FILE: PASS unless an lvm output read a VG without its lock
  if grep -q -i 'without a lock\|lock skipped\|lock failed' "$2"; then
    grep -i 'without a lock\|lock skipped\|lock failed' "$2" | head -5 | sed 's/^/  | /'
    fail "$1"
  else
    pass "$1"
  fi
}
lv_names() { lvm lvs --noheadings -o lv_name vg1 2>/dev/null | tr -d ' ' | grep -v '^flag_' | sort | tr '\n' ' '; }
wait_lv() { # NAME: wait (polling vg1's metadata, bounded) until LV NAME exists
  i=0
  while ! lvm lvs --noheadings -o lv_name vg1 2>/dev/null | grep -qw "$1"; do
    i=$((i + 1))
    [ $i -gt 300 ] && { fail "wait for $1"; return 1; }
    sleep 0.5
  done
}
finish() {
  lvmlockctl --info 2>&1 | sed 's/^/  lvmlockctl | /'
  if [ $fails != 0 ]; then
    echo "-- lvmlockd log"; tail -n 40 /tmp/lvmlockd.log
    echo "-- ilm log"; grep -v ' DEBUG ' /tmp/ilm.log | tail -n 30
  fi
  echo "guest $role: $fails failed"
  exit $((fails != 0))
}

while read -r m; do insmod "/root/mod/$m.ko" || echo "guest: insmod $m failed"; done </root/mod/order
if [ "${IDM_INITIATOR:-}" = kernel ]; then
  # QEMU's user network: this guest is 10.0.2.15, the host's loopback 10.0.2.2.
  ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
  mkdir -p /etc/iscsi
  for d in 0 1 2; do # one login at a time: sim0, sim1, sim2 become sda, sdb, sdc
    /root/iscsistart -i "iqn.2026-11.org.idm-engine:lvm-$role" -t "iqn.2026-11.org.idm-engine:sim$d" \
      -g 1 -a 10.0.2.2 -p "$IDM_ISCSI_PORT" >/tmp/iscsistart.log 2>&1 ||
      { echo "guest: iscsistart sim$d failed"; tail -n 20 /tmp/iscsistart.log; exit 2; }
    n=$((d + 1)); i=0
    while [ "$(ls /sys/class/scsi_disk 2>/dev/null | wc -l)" -lt $n ]; do
      i=$((i + 1)); [ $i -gt 100 ] && break
      sleep 0.1
    done
  done
fi
i=0
while [ ! -e /dev/sdc2 ] || [ ! -e /dev/sdb2 ] || [ ! -e /dev/sda2 ] || [ ! -e /dev/mapper/control ]; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo "guest: disks/partitions did not appear"; cat /proc/partitions; ls /dev/mapper; exit 2; }
  sleep 0.1
done
mkdir -p /etc/lvm /run/lvm /run/lock/lvm /var/lock
# lvmlockd-idm.c registers "/sbin/lvmlockctl --kill VG" as the kill path
# (LVM_PATH + "lockctl"), and lvmlockctl --kill runs /sbin/lvm config.
mkdir -p /sbin
ln -sf /root/lvm /sbin/lvm
ln -sf /root/lvmlockctl /sbin/lvmlockctl
# The library's default host ID is /etc/machine-id: one per host.
printf '%032d\n' 0 | tr 0 "$host" >/etc/machine-id
cat >/etc/lvm/lvm.conf <<'CONF'
global {
	use_lvmlockd = 1
	use_lvmpolld = 0
	system_id_source = "none"
}
devices {
	obtain_device_list_from_udev = 0
	external_device_info_source = "none"
	use_devicesfile = 0
	filter = [ "a|^/dev/sd[a-z][0-9]$|", "r|.*|" ]
}
activation {
	udev_sync = 0
	udev_rules = 0
	verify_udev_operations = 1
	monitoring = 0
}
backup {
	backup = 0
	archive = 0
}
CONF
echo "guest $role: kernel $(uname -r), host id $(cat /etc/machine-id), initiator ${IDM_INITIATOR:-?}, disks $(cat /sys/block/sd?/device/vendor | tr -s ' \n' ' ')"
start_lvmlockd() {
  lvmlockd -f -g idm >>/tmp/lvmlockd.log 2>&1 &
  lvmlockd_pid=$!
  i=0
  while ! lvmlockctl --info >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 100 ] && { fail "lvmlockd start"; cat /tmp/lvmlockd.log; finish; }
    sleep 0.1
  done
}
start_lvmlockd
pass "lvmlockd -g idm started"

case $role in
solo)
  # vg0 has two PVs on sda (sda2, sda3): its VG lock names four devices of
  # three drives, and must count sda once.
  check pvcreate lvm pvcreate -y /dev/sda2 /dev/sda3 /dev/sdb2 /dev/sdc2
  check "vgcreate --shared --locktype idm (2 PVs on one drive)" lvm vgcreate --shared --locktype idm vg0 /dev/sda2 /dev/sda3 /dev/sdb2 /dev/sdc2
  check "vgchange --lock-start" lvm vgchange --lock-start vg0
  check lvcreate lvm lvcreate -y -L 8M -n lv0 vg0
  # The VG lock (first taken by lvcreate): the library turned vg0's four PVs
  # into three drives (sda2 and sda3 are sda).
  line=$(grep 'drive list deduplicated' /tmp/ilm.log | grep 'sda2' | grep 'sda3' | head -n 1)
  n=$(echo "$line" | sed 's/.*drives=//' | grep -o '/dev/' | wc -l)
  if [ -n "$line" ] && [ "$n" = 3 ]; then
    echo "  | ${line#*deduplicated }"
    pass "VG lock on sda2 sda3 sdb2 sdc2 counts 3 drives"
  else
    grep 'drive list deduplicated' /tmp/ilm.log | sed 's/^/  | /'
    fail "VG lock on sda2 sda3 sdb2 sdc2 counts 3 drives"
  fi
  check "lvchange -an" lvm lvchange -an vg0/lv0
  check "lvchange -aey" lvm lvchange -aey vg0/lv0
  if [ -b /dev/vg0/lv0 ] || [ -b /dev/mapper/vg0-lv0 ]; then pass "LV device exists"; else fail "LV device exists"; fi
  # lvmlockd dies with lv0 active (its LV lock held EX on the drives) and comes
  # back: IDM has no lock adoption in lvmlockd, so the locks are taken again,
  # through the drives' "already held by this host" with the same host ID.
  kill -9 "$lvmlockd_pid"
  wait "$lvmlockd_pid" 2>/dev/null
  start_lvmlockd && pass "lvmlockd restarted after kill -9"
  check "vgchange --lock-start after restart" lvm vgchange --lock-start vg0
  check "lvchange -aey lv0 again after restart" lvm lvchange -aey vg0/lv0
  check "lvchange -an again" lvm lvchange -an vg0/lv0
  check lvremove lvm lvremove -y vg0/lv0
  check vgremove lvm vgremove -y vg0
  # For the two-host run: vg1 with an inactive LV x, lockspace stopped.
  check "pvcreate (vg1)" lvm pvcreate -y /dev/sda2 /dev/sdb2 /dev/sdc2
  check "vgcreate vg1" lvm vgcreate --shared --locktype idm vg1 /dev/sda2 /dev/sdb2 /dev/sdc2
  check "vgchange --lock-start vg1" lvm vgchange --lock-start vg1
  check "lvcreate x" lvm lvcreate -an -Zn -L 4M -n x vg1
  lvmlockctl --info 2>&1 | sed 's/^/  lvmlockctl | /'
  check "vgchange --lock-stop vg1" lvm vgchange --lock-stop vg1
  finish
  ;;
a | b)
  check "vgchange --lock-start vg1" lvm vgchange --lock-start vg1
  # Concurrent lvcreate on both hosts, with lvs running meanwhile on this host.
  : >/tmp/lvs.all
  (
    while [ ! -e /tmp/created ]; do
      lvm lvs vg1 >>/tmp/lvs.all 2>&1 || echo "LVS-EXIT $?" >>/tmp/lvs.all
    done
  ) &
  lvs_loop=$!
  ok=0
  for i in 1 2 3 4; do
    lv lvcreate -an -Zn -L 4M -n "$role$i" vg1 && ok=$((ok + 1))
    cat /tmp/out >>/tmp/lvcreate.all
  done
  touch /tmp/created
  wait $lvs_loop
  if [ $ok = 4 ]; then pass "4 concurrent lvcreate"; else fail "4 concurrent lvcreate ($ok succeeded)"; fi
  no_lock_warnings "lvcreate never failed or skipped a lock" /tmp/lvcreate.all
  n=$(grep -c 'LV ' /tmp/lvs.all || true)
  if grep -q '^LVS-EXIT' /tmp/lvs.all; then
    grep -B3 '^LVS-EXIT' /tmp/lvs.all | head -8 | sed 's/^/  | /'
    fail "lvs during lvcreate all succeeded"
  else
    pass "lvs during lvcreate all succeeded ($n runs)"
  fi
  no_lock_warnings "lvs during lvcreate never read without a lock" /tmp/lvs.all
  # Both hosts end up listing the same eight LVs.
  i=0
  while [ "$(lv_names)" != "a1 a2 a3 a4 b1 b2 b3 b4 x " ]; do
    i=$((i + 1)); [ $i -gt 240 ] && break
    sleep 0.5
  done
  echo "LVS $role $(lv_names)"
  if [ "$(lv_names)" = "a1 a2 a3 a4 b1 b2 b3 b4 x " ]; then pass "sees all LVs"; else fail "sees all LVs"; fi
  check "vgck" lvm vgck vg1
  if grep -qi 'warn\|error\|inconsistent' /tmp/out; then fail "vgck clean"; else pass "vgck clean"; fi

  # Exclusive activation: a holds x, b is refused, a hands over, b takes it.
  if [ "$role" = a ]; then
    check "lvchange -aey x" lvm lvchange -aey vg1/x
    lv lvcreate -an -Zn -L 4M -n flag_a_holds vg1
    wait_lv flag_b_tried
    check "lvchange -an x (hand-over)" lvm lvchange -an vg1/x
    lv lvcreate -an -Zn -L 4M -n flag_a_released vg1
    wait_lv flag_b_took
  else
    wait_lv flag_a_holds
    if lv lvchange -aey vg1/x; then fail "lvchange -aey x refused while a holds it"; else pass "lvchange -aey x refused while a holds it"; fi
    lv lvcreate -an -Zn -L 4M -n flag_b_tried vg1
    wait_lv flag_a_released
    check "lvchange -aey x after hand-over" lvm lvchange -aey vg1/x
    if [ -b /dev/mapper/vg1-x ]; then pass "x active here"; else fail "x active here"; fi
    check "lvchange -an x" lvm lvchange -an vg1/x
    lv lvcreate -an -Zn -L 4M -n flag_b_took vg1
  fi
  finish
  ;;
fence)
  ctl=tcp:10.0.2.2:$IDM_CTL_PORT
  check "pvcreate (vg2)" lvm pvcreate -y /dev/sda3 /dev/sdb3 /dev/sdc3
  check "vgcreate vg2" lvm vgcreate --shared --locktype idm vg2 /dev/sda3 /dev/sdb3 /dev/sdc3
  check "vgchange --lock-start vg2" lvm vgchange --lock-start vg2
  check "lvcreate -aey f (active, its LV lock held)" lvm lvcreate -y -aey -Zn -L 4M -n f vg2
  kp=$(lvmlockctl --dump 2>/dev/null | grep 'lvm_vg2 add_lockspace_idm kill path is' | tail -n 1)
  if echo "$kp" | grep -q '"/sbin/lvmlockctl --kill vg2"'; then
    pass "kill path registered: ${kp#*kill path is: }"
  else
    fail "kill path registered ('$kp')"
  fi
  # Read now: LVM commands would wait on the stopped drives' block I/O.
  uuid=$(lvm vgs --noheadings -o vg_uuid vg2 2>/dev/null | tr -d ' -')
  t0=$(date +%s)
  if run idm fault --sim "$ctl" sim0 stop && run idm fault --sim "$ctl" sim1 stop; then
    pass "sim0 and sim1 stop answering (idm fault from the guest)"
  else
    fail "sim0 and sim1 stop answering (idm fault from the guest)"
  fi
  # Bounded wait for the fence: lvmlockd's raw info (-i -d) has kill_vg=1 for
  # the lockspace once lvmlockctl --kill told it so.
  i=0
  while ! lvmlockctl -i -d 2>/dev/null | grep -q 'ls_name=lvm_vg2 .*kill_vg=1'; do
    i=$((i + 1)); [ $i -gt 300 ] && break
    sleep 0.5
  done
  dt=$(( $(date +%s) - t0 ))
  lvmlockctl -i -d 2>/dev/null | grep 'info=ls ' | sed 's/^/  | /'
  if lvmlockctl -i -d 2>/dev/null | grep -q 'ls_name=lvm_vg2 .*kill_vg=1'; then
    pass "lvmlockctl -i -d shows lockspace lvm_vg2 killed (kill_vg=1), $dt s after the stop"
  else
    fail "lvmlockctl -i -d shows lockspace lvm_vg2 killed (kill_vg=1) (waited $dt s)"
  fi
  # The library's log: the fence (the lock named by vg2's UUID) and the kill path.
  line=$(grep 'lease about to lapse: fencing' /tmp/ilm.log | head -n 1)
  grep 'lease about to lapse: fencing\|kill path' /tmp/ilm.log | sed 's/^[^ ]* *//; s/^/  | ilm: /'
  if [ -n "$line" ] && echo "$line" | grep -q "lock=${uuid:-none}" && ! grep -q 'kill path could not run\|kill path failed' /tmp/ilm.log; then
    pass "the library fenced vg2's LV lock and ran the kill path (ilm log)"
  else
    fail "the library fenced vg2's LV lock and ran the kill path (ilm log)"
  fi
  lvmlockctl --dump 2>/dev/null | grep -i 'kill' | tail -n 4 | sed 's/^/  lvmlockctl --dump | /'
  if run idm fault --sim "$ctl" sim0 heal && run idm fault --sim "$ctl" sim1 heal; then
    pass "sim0 and sim1 healed"
  else
    fail "sim0 and sim1 healed"
  fi
  if lv lvcreate -an -Zn -L 4M -n g vg2; then
    fail "lvcreate on killed vg2 fails"
  elif grep -q 'lock failed' /tmp/out; then
    pass "lvcreate on killed vg2 fails: $(grep 'lock failed' /tmp/out | head -n 1 | sed 's/^ *//')"
  else
    fail "lvcreate on killed vg2 fails with a lock error"
  fi
  # What the operator does: deactivate, drop the locks, start the VG again.
  check "lvchange -an f (after the kill)" lvm lvchange -an vg2/f
  if [ -b /dev/mapper/vg2-f ]; then fail "f inactive"; else pass "f inactive"; fi
  if run lvmlockctl --drop vg2; then pass "lvmlockctl --drop vg2"; else fail "lvmlockctl --drop vg2"; fi
  check "vgchange --lock-start vg2 after the drop" lvm vgchange --lock-start vg2
  check "lvchange -aey f after the drop" lvm lvchange -aey vg2/f
  check "lvchange -an f" lvm lvchange -an vg2/f
  check "lvcreate on vg2 again" lvm lvcreate -an -Zn -L 4M -n g vg2
  finish
  ;;
esac
