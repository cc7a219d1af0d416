#!/usr/bin/env bash
# Watchdog fencing on real kernels (issue 14): two throw-away guests on the same
# simulated IDM drives over iSCSI (as scripts/iscsi-e2e.sh), the holder's guest
# with `softdog` loaded and `idm lock --watchdog required`.
#
#   1. stop:    the holder is SIGSTOPped while holding EX;
#   2. kill:    the holder is killed with -9 while holding EX;
#   3. release: the holder releases normally and its guest stays up past any
#               timeout the watchdog had;
#   4. wdmd:    (one guest) sanlock's wdmd (Debian's binary, fetched with
#               `apt-get download sanlock` once into guest-run's cache; skipped
#               when that fails) owns the
#               device: a 60 s lease is refused (wdmd's 60 s fire timeout cannot
#               protect it), a 120 s lease is armed through wdmd (an expiry in
#               wdmd's log) and disarmed at release (expiry 0).
#
# In 1 and 2 the holder's guest must reset (QEMU runs with -no-reboot, so the
# reset ends the QEMU process: the time it exits is the reset time, seen from
# outside) strictly before the other guest's acquire succeeds (the time its
# "granted" line reaches its serial console, seen from outside on the same host
# clock). In 3 the guest must never reset. Lease 10 s, watchdog margin 2 s.
# IDM_WATCHDOG_CASES="stop kill" runs only those.
#
#   scripts/watchdog-e2e.sh     # PASS/FAIL per case and a summary; exit 0 when all pass
#
# Needs what scripts/iscsi-e2e.sh needs (qemu-system-x86 with qemu-block-extra,
# ../shared/tools/guest-run or $GUEST_RUN).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/iscsi-sim.sh
start=$(date +%s)
guest_run=${GUEST_RUN:-$(pwd)/../shared/tools/guest-run}
[ -x "$guest_run" ] || { echo "watchdog-e2e: FAIL: guest-run not found at $guest_run" >&2; exit 2; }
if ! ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] && apt-get install -y -qq qemu-block-extra >/dev/null
  ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1 ||
    { echo "watchdog-e2e: FAIL: QEMU has no iSCSI block driver (install qemu-block-extra)" >&2; exit 2; }
fi

cargo build -q -p idm-tools
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
idm=$target_dir/debug/idm
[ -x "$idm" ] || { echo "watchdog-e2e: FAIL: no idm binary at $idm" >&2; exit 2; }

# softdog and the watchdog core from the guest kernel guest-run boots (its cache
# is filled on first use).
cache=${IDM_GUEST_CACHE:-$HOME/.cache/idm-guest}
if ! ls "$cache"/kern/lib/modules/*/kernel/drivers/watchdog/softdog.ko >/dev/null 2>&1; then
  "$guest_run" -- /bin/true >/dev/null 2>&1 || true
fi
softdog=$(ls "$cache"/kern/lib/modules/*/kernel/drivers/watchdog/softdog.ko 2>/dev/null | head -1)
wdcore=$(ls "$cache"/kern/lib/modules/*/kernel/drivers/watchdog/watchdog.ko 2>/dev/null | head -1)
[ -n "$softdog" ] || { echo "watchdog-e2e: FAIL: no softdog.ko in $cache" >&2; exit 2; }

work=$(mktemp -d)
sim_pid=
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  for d in "$work"/*.wd; do [ -f "$d" ] && rm -rf "$(cat "$d")"; done
  rm -rf "$work"
}
trap cleanup EXIT

start_iscsi_sim watchdog-e2e
echo "watchdog-e2e: simulator pid $sim_pid, iSCSI on 127.0.0.1:$port"

cat >"$work/guest" <<'GUEST'
#!/bin/sh
# guest ROLE CASE: ROLE holder or waiter; CASE stop, kill or release.
role=$1 case=$2
lease=10000
i=0
while [ ! -e /dev/sdc ] || [ ! -e /dev/sg2 ]; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo "guest: disks did not appear"; exit 2; }
  sleep 0.1
done
disks="/dev/sda /dev/sdb /dev/sdc"
lock="wd-e2e-$case"
if [ "$role" = wdmd ]; then
  # sanlock's wdmd owns the device; the engine registers with it as a client.
  insmod /root/watchdog.ko 2>/dev/null
  insmod /root/softdog.ko || { echo "WDMD no softdog"; exit 2; }
  mkdir -p /run/wdmd /dev/shm
  mount -t tmpfs shm /dev/shm   # wdmd keeps its "cleanly stopped" mark in POSIX shm
  /root/wdmd -D -H 0 >/tmp/wdmd.log 2>&1 &
  i=0
  until [ -S /run/wdmd/wdmd.sock ]; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "WDMD did not start"; cat /tmp/wdmd.log; exit 2; }
    sleep 0.1
  done
  sock=wdmd:/run/wdmd/wdmd.sock
  IDM_WATCHDOG_DEVICE=$sock /root/idm doctor 2>&1 | sed -n '/^watchdog/,/would use/p' | sed 's/^/WDMD doctor: /'
  # lvmlockd's 60 s lease: wdmd's 60 s fire timeout cannot protect it.
  /root/idm lock --host wdmd-a --lock "$lock" --lease-ms 60000 --watchdog required \
    --watchdog-device $sock $disks 2>&1 | grep -v INFO | sed 's/^/WDMD 60s: /'
  # A 120 s lease fits: registered, armed (an expiry), disarmed at release.
  /root/idm lock --host wdmd-a --lock "$lock" --lease-ms 120000 --watchdog required \
    --watchdog-device $sock --hold-ms 3000 $disks 2>&1 | sed 's/^/WDMD 120s: /'
  rc=$?
  sleep 1
  grep -iE 'register|test_live|client' /tmp/wdmd.log | sed 's/^/WDMD log: /'
  echo "WDMD done rc=$rc"
  exit 0
fi
if [ "$role" = holder ]; then
  insmod /root/watchdog.ko 2>/dev/null
  insmod /root/softdog.ko || { echo "HOLDER no softdog"; exit 2; }
  echo "HOLDER watchdog: $(cat /sys/class/watchdog/watchdog0/identity) state $(cat /sys/class/watchdog/watchdog0/state)"
  hold=600000
  [ "$case" = release ] && hold=4000
  /root/idm lock --host "holder-$case" --lock "$lock" --mode ex --lease-ms $lease \
    --timeout-ms 30000 --hold-ms $hold --watchdog required --watchdog-device /dev/watchdog \
    --watchdog-margin-ms 2000 $disks >/tmp/holder.out 2>&1 &
  pid=$!
  i=0
  until grep -q '^granted' /tmp/holder.out; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "HOLDER no grant:"; cat /tmp/holder.out; exit 2; }
    kill -0 $pid 2>/dev/null || { echo "HOLDER exited:"; cat /tmp/holder.out; exit 2; }
    sleep 0.1
  done
  i=0
  until [ "$(cat /sys/class/watchdog/watchdog0/state)" = active ]; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "HOLDER watchdog never armed"; cat /tmp/holder.out; exit 2; }
    sleep 0.1
  done
  sed 's/^/HOLDER idm: /' /tmp/holder.out
  echo "HOLDER armed: timeout $(cat /sys/class/watchdog/watchdog0/timeout) s"
  # Hold (renewing, the watchdog petted) for a few renewals first.
  sleep 4
  case $case in
  stop)
    echo "HOLDER-GO SIGSTOP"; kill -STOP $pid ;;
  kill)
    echo "HOLDER-GO SIGKILL"; kill -9 $pid ;;
  release)
    wait $pid; rc=$?
    sed 's/^/HOLDER idm: /' /tmp/holder.out | grep -v 'granted\|valid for\|watchdog (' 
    echo "HOLDER released (idm exit $rc); watchdog state $(cat /sys/class/watchdog/watchdog0/state)"
    # Stay up longer than any timeout the watchdog had (2 x 3 s) plus a lease.
    sleep 16
    echo "HOLDER still up"; exit $rc ;;
  esac
  sleep 60
  echo "HOLDER not reset 60 s after the holder stopped"
  exit 1
fi
# The waiter: once the holder's lock is busy, wait for it (the lock lapses on
# the drives after the holder's lease).
n=0 busy=0
while [ $busy -lt 2 ]; do
  /root/idm lock --host "waiter-$case" --lock "$lock" --mode ex --lease-ms $lease \
    --no-wait --hold-ms 0 $disks >/tmp/try.out 2>&1
  if [ $? = 1 ]; then busy=$((busy + 1)); else busy=0; fi
  n=$((n + 1)); [ $n -gt 300 ] && { echo "WAITER never saw the holder"; exit 2; }
  sleep 0.5
done
echo "WAITER holder seen; waiting for the lock"
/root/idm lock --host "waiter-$case" --lock "$lock" --mode ex --lease-ms $lease \
  --timeout-ms 90000 --command-timeout-ms 1500 --hold-ms 500 $disks 2>&1 | sed 's/^granted/WAITER-GRANTED granted/'
GUEST
chmod +x "$work/guest"

libs=()
while read -r lib; do
  libs+=(--file "$(readlink -f "$lib"):$lib")
done < <(ldd "$idm" | awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}' | sort -u)
mods=(--file "$softdog:/root/softdog.ko")
# wdmd from Debian's sanlock package (binary only, unpacked into a temp dir), for
# the wdmd case; the case is skipped when it cannot be fetched.
# Cached next to guest-run's kernel.
wdmd_bin=$cache/sanlock/usr/sbin/wdmd
if [ ! -x "$wdmd_bin" ]; then
  mkdir -p "$cache/sanlock-deb"
  (cd "$cache/sanlock-deb" && apt-get download -q sanlock >/dev/null 2>&1 &&
    dpkg -x sanlock_*.deb "$cache/sanlock") || true
fi
if [ -x "$wdmd_bin" ]; then
  mods+=(--file "$wdmd_bin:/root/wdmd")
else
  wdmd_bin=""
fi
[ -n "$wdcore" ] && mods+=(--file "$wdcore:/root/watchdog.ko")

# guest NAME ROLE CASE: runs in the background; its console is $work/NAME.console
# (guest-run --keep's work dir), its exit time and status in $work/NAME.end.
guest() {
  local args=(--keep --virtio-scsi --timeout 150 --file "$idm:/root/idm" "${libs[@]}" "${mods[@]}"
    --qemu-arg -iscsi --qemu-arg "initiator-name=iqn.2026-11.org.idm-engine:wd-$1")
  for d in 0 1 2; do
    args+=(--qemu-arg -drive --qemu-arg
      "file=iscsi://127.0.0.1:$port/iqn.2026-11.org.idm-engine:sim$d/0,if=none,id=d$d,format=raw,cache=none"
      --qemu-arg -device --qemu-arg "scsi-block,drive=d$d,bus=scsi0.0")
  done
  (
    set +e
    "$guest_run" "${args[@]}" -- "$work/guest" "$2" "$3" >"$work/$1.log" 2>"$work/$1.err"
    rc=$?
    echo "$(date +%s.%N) $rc" >"$work/$1.end"
  ) &
  pids+=($!)
}

# The host time a console line matching $2 first appeared in guest $1's console
# (polled every 50 ms until the guest ends): a measurement, not a synchronisation.
watch_line() {
  local name=$1 pat=$2 wd="" c
  while :; do
    [ -z "$wd" ] && wd=$(sed -n 's/^guest-run: work dir //p' "$work/$name.err" 2>/dev/null) &&
      [ -n "$wd" ] && echo "$wd" >"$work/$name.wd"
    c=${wd:+$wd/console}
    if [ -n "$c" ] && grep -q "$pat" "$c" 2>/dev/null; then date +%s.%N; return 0; fi
    [ -f "$work/$name.end" ] && { grep -q "$pat" "$work/$name.log" 2>/dev/null && date +%s.%N; return 1; }
    sleep 0.05
  done
}

declare -A verdict
run_case() { # CASE
  local c=$1
  case $c in
  stop) echo "== $c: holder SIGSTOPped while holding EX" ;;
  kill) echo "== $c: holder killed -9 while holding EX" ;;
  release) echo "== $c: holder releases normally" ;;
  wdmd) echo "== $c: the engine as a client of sanlock's wdmd (one guest)" ;;
  esac
  local t0
  t0=$(date +%s.%N)
  if [ "$c" = wdmd ]; then guest "h-$c" wdmd "$c"; else guest "h-$c" holder "$c"; fi
  case $c in stop | kill) guest "w-$c" waiter "$c" ;; esac
  local go="" granted=""
  go=$(watch_line "h-$c" 'HOLDER-GO') || true
  case $c in stop | kill) granted=$(watch_line "w-$c" 'WAITER-GRANTED') || true ;; esac
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  local hend hrc
  read -r hend hrc <"$work/h-$c.end"
  for g in "h-$c" "w-$c"; do
    [ -f "$work/$g.log" ] || continue
    grep -E '^(HOLDER|WAITER|WDMD|granted|released|busy|error|fenced|valid|watchdog|\[ *[0-9.]+\] softdog|.*Initiating system reboot)' "$work/$g.log" |
      grep -v '^HOLDER idm: valid' | sed "s/^/   $g: /" || true
  done
  local rel
  rel() { awk -v a="$1" -v b="$t0" 'BEGIN{ if (a == "") print "-"; else printf "%.2f", a - b }'; }
  if [ "$c" = wdmd ]; then
    if [ "$hrc" = 0 ] && grep -q "WDMD 60s: .*cannot protect a 60000 ms lease" "$work/h-$c.log" &&
      grep -q '^WDMD 120s: granted' "$work/h-$c.log" && grep -q '^WDMD 120s: released' "$work/h-$c.log" &&
      grep -qE '^WDMD log: .*test_live.*expire [1-9]' "$work/h-$c.log" &&
      grep -qE '^WDMD log: .*test_live.*expire 0' "$work/h-$c.log"; then
      verdict[$c]=PASS; echo "   PASS: 60 s lease refused with wdmd's 60 s fire timeout; 120 s lease armed through wdmd and disarmed at release"
    else
      verdict[$c]=FAIL; echo "   FAIL"; tail -n 40 "$work/h-$c.log"
    fi
    return
  fi
  if [ "$c" = release ]; then
    echo "   holder guest ended at +$(rel "$hend") s, guest-run exit $hrc (0: the guest finished, no reset)"
    if [ "$hrc" = 0 ] && grep -q '^HOLDER still up' "$work/h-$c.log"; then
      verdict[$c]=PASS; echo "   PASS: released normally, never reset"
    else
      verdict[$c]=FAIL; echo "   FAIL"; tail -n 30 "$work/h-$c.log"
    fi
    return
  fi
  echo "   holder $c at +$(rel "$go") s; holder guest reset (QEMU exited, guest-run exit $hrc) at +$(rel "$hend") s; other guest granted at +$(rel "$granted") s"
  local reset_ok=0 order_ok=0
  # guest-run exits 124 when the guest did not finish: QEMU ended on the reset.
  [ "$hrc" = 124 ] && ! grep -q '^HOLDER not reset' "$work/h-$c.log" && reset_ok=1
  [ -n "$granted" ] && awk -v r="$hend" -v g="$granted" 'BEGIN{exit !(r < g)}' && order_ok=1
  if [ $reset_ok = 1 ] && [ $order_ok = 1 ]; then
    verdict[$c]=PASS
    echo "   PASS: reset $(awk -v r="$hend" -v g="$granted" 'BEGIN{printf "%.2f", g - r}') s before the other guest's grant"
  else
    verdict[$c]=FAIL
    echo "   FAIL (reset seen: $reset_ok, reset before grant: $order_ok)"
    tail -n 40 "$work/h-$c.log" "$work/w-$c.log" 2>/dev/null || true
  fi
}

cases=${IDM_WATCHDOG_CASES:-stop kill release wdmd}
if [ -z "$wdmd_bin" ] && [ -z "${IDM_WATCHDOG_CASES:-}" ]; then
  echo "watchdog-e2e: wdmd case skipped (apt-get download sanlock failed)"
  cases="stop kill release"
fi
for c in $cases; do
  run_case "$c"
done

wall=$(( $(date +%s) - start ))
fail=0
summary=""
for c in $cases; do
  summary="$summary $c=${verdict[$c]:-FAIL}"
  [ "${verdict[$c]:-FAIL}" = PASS ] || fail=1
done
if [ $fail = 0 ]; then
  echo "watchdog-e2e: PASS ($summary ) (wall time $wall s)"
else
  echo "watchdog-e2e: FAIL ($summary ) (wall time $wall s)"; tail -n 20 "$work/sim.err"
fi
exit $fail
