#!/usr/bin/env bash
# Runs inside a throw-away guest (GNU bash; see scripts/lvm2-suite.sh, which
# copies in LVM2's build (lvm, dmsetup, the test tree test/lib and the selected
# test/shell/*.sh at the build's own paths), lvmlockd and lvmlockctl in /sbin
# (lvmlockd's IDM kill path is /sbin/lvmlockctl), libseagate_ilm at the path of
# their rpath, GNU tools in /usr/bin, sg3-utils and thin-provisioning-tools,
# kernel modules listed in /root/mod/order, and iscsistart).
#
#   lvm2-suite-guest TEST[:TIMEOUT_S[:ENV=VALUE,...]]...
#
# Logs in to $IDM_DRIVES simulated IDM drives (iSCSI targets sim0.. on the host's
# port $IDM_ISCSI_PORT; they become /dev/sda..), each with a GPT whose partition
# 1 is named "propeller" and partition 2 is the test's backing device, then runs
# each TEST (test/shell/TEST.sh) in order as LVM2's runner does (`bash -noprofile
# -norc shell/TEST.sh` in test/, flavour udev-lvmlockd-idm) under `timeout`, and
# prints one line per test: "RESULT TEST PASS|FAIL|SKIP SECONDS REASON", with
# the end of the test's output after a FAIL.
#
# Two stand-ins for what the suite expects of a Seagate host (see the host
# script): `seagate_ilm` (prepare_idm starts Seagate's lock daemon and checks it
# runs; this library has no daemon) and `systemctl start lvm2-lvmlockd`
# (lvmlockd_failure restarts lvmlockd through systemd).
set -uo pipefail
export PATH=/usr/local/bin:/sbin:/usr/sbin:/usr/bin:/bin
build=$IDM_LVM_BUILD
n=$IDM_DRIVES

while read -r m; do
  [ -d "/sys/module/${m//-/_}" ] || insmod "/root/mod/$m.ko" || echo "guest: insmod $m failed"
done </root/mod/order
# QEMU's user network: this guest is 10.0.2.15, the host's loopback 10.0.2.2.
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
mkdir -p /etc/iscsi
for ((d = 0; d < n; d++)); do # one login at a time: sim0, sim1, ... become sda, sdb, ...
  /root/iscsistart -i iqn.2026-11.org.idm-engine:lvm2-suite -t "iqn.2026-11.org.idm-engine:sim$d" \
    -g 1 -a 10.0.2.2 -p "$IDM_ISCSI_PORT" >/tmp/iscsistart.log 2>&1 ||
    { echo "guest: iscsistart sim$d failed"; tail -n 20 /tmp/iscsistart.log | sed 's/^/  | /'; exit 2; }
  for ((i = 0; i < 100; i++)); do
    [ "$(find /sys/class/scsi_disk -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" -gt "$d" ] && break
    sleep 0.1
  done
done
letters=(a b c d e f g h i j k l m n o p)
backing=()
for ((d = 0; d < n; d++)); do backing+=("/dev/sd${letters[d]}2"); done
for ((i = 0; ; i++)); do
  ok=1
  for b in "${backing[@]}"; do [ -b "$b" ] || ok=0; done
  [ -e /dev/mapper/control ] || ok=0
  [ $ok = 1 ] && break
  [ "$i" -gt 300 ] && { echo "guest: disks/partitions did not appear"; sed 's/^/  | /' /proc/partitions; exit 2; }
  sleep 0.1
done

mount -t tmpfs -o size=384m tmpfs /tmp
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd # bash's process substitution
[ -e /bin/bash ] || ln -s /usr/bin/bash /bin/bash
mkdir -p /run/lvm /run/lock/lvm /var/lock /etc/lvm /usr/local/bin
# The test libraries look for shared objects and dmeventd plugins in these.
mkdir -p "$build/libdm" "$build/tools" "$build/daemons/dmeventd/plugins"
printf '%032d\n' 0 | tr 0 a >/etc/machine-id # the library's host ID
for t in thin_check thin_dump thin_repair thin_restore cache_check cache_dump cache_repair cache_restore; do
  ln -sf pdata_tools "/usr/sbin/$t"
done
# Stand-in for Seagate's lock daemon: prepare_idm runs `seagate_ilm -D 0 ...`
# and checks with pgrep that a process of that name runs; zz-lvmlockd-idm-remove
# kills it. It does nothing: the lock manager is the library inside lvmlockd.
cat >/usr/local/bin/seagate_ilm <<'EOF'
#!/usr/bin/bash
[ "${1:-}" = --stay ] || { "$0" --stay </dev/null >/dev/null 2>&1 & exit 0; }
while :; do sleep 3600; done
EOF
# Stand-in for systemd's lvm2-lvmlockd.service (Type=notify, lvmlockd
# --foreground): start lvmlockd as the suite does (`lvmlockd -g idm`) and return
# once it answers.
cat >/usr/local/bin/systemctl <<'EOF'
#!/usr/bin/bash
case "$*" in
"start lvm2-lvmlockd" | "start lvm2-lvmlockd.service")
  lvmlockd -g idm || exit 1
  for ((i = 0; i < 100; i++)); do lvmlockctl --info >/dev/null 2>&1 && exit 0; sleep 0.1; done
  exit 1 ;;
*) echo "systemctl (stand-in): only 'start lvm2-lvmlockd' is supported" >&2; exit 1 ;;
esac
EOF
chmod +x /usr/local/bin/seagate_ilm /usr/local/bin/systemctl

echo "guest: kernel $(uname -r), $n drives ($(cat /sys/block/sd?/device/vendor | tr -s ' \n' ' ')), backing ${backing[*]}"
export LVM_TEST_BACKING_DEVICE
LVM_TEST_BACKING_DEVICE=$(IFS=,; echo "${backing[*]}")
export IDM_LOG=/root/ilm.log IDM_LOG_LEVEL=${IDM_LOG_LEVEL:-info}
mkdir -p /root/logs

for spec in "$@"; do
  IFS=: read -r t to envs <<<"$spec"
  to=${to:-300}
  vars=()
  [ -n "$envs" ] && IFS=, read -r -a vars <<<"$envs"
  s=$(date +%s)
  (cd "$build/test" && env "${vars[@]}" LVM_TEST_FLAVOUR=udev-lvmlockd-idm \
    timeout -k 10 "$to" bash -noprofile -norc "shell/$t.sh") >"/root/logs/$t" 2>&1 </dev/null
  rc=$?
  secs=$(($(date +%s) - s))
  log=/root/logs/$t
  case $rc in
  0) st=PASS why="exit 0" ;;
  200) st=SKIP why=$(grep -m 1 'TEST SKIPPED' "$log" || echo "skipped (exit 200)") ;;
  124 | 137) st=FAIL why="timed out after $to s" ;;
  *)
    st=FAIL
    line=$(sed -n 's/^## - shell\/[^:]*:\([0-9]*\)$/\1/p' "$log" | head -n 1)
    if [ -n "$line" ]; then
      why="exit $rc at line $line: $(sed -n "${line}p" "$build/test/shell/$t.sh" | sed 's/^[ \t]*//')"
    else
      why="exit $rc"
    fi
    ;;
  esac
  echo "RESULT $t $st $secs $why"
  if [ $st = FAIL ]; then
    grep -v '^## DEBUG\|^## DM\|^## LVMLOCKD\|^## DF\|^## Line:\|^## LVMCONF' "$log" | tail -n "${IDM_SUITE_TAIL:-40}" | sed 's/^/  | /'
    echo "  -- lvmlockd debug (last 25 lines)"
    lvmlockctl --dump 2>/dev/null | tail -n 25 | sed 's/^/  | /'
    echo "  -- library log (last 15 lines, no DEBUG)"
    grep -v ' DEBUG ' /root/ilm.log 2>/dev/null | tail -n 15 | sed 's/^/  | /'
  fi
done
echo "guest: done"
