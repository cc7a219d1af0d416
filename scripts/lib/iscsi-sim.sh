# Sourced by the guest end-to-end scripts: starts `idm sim` with 3 drives on a
# Unix socket in $work and an iSCSI front end on a free loopback port.
#
#   start_iscsi_sim NAME [EXTRA idm sim ARGS...]
#
# Needs $idm (the binary) and $work (a temporary directory). Sets $sim_pid and
# $port; on failure prints "NAME: FAIL: simulator did not start" with the
# simulator's stderr and exits 1.
start_iscsi_sim() {
  local name=$1
  shift
  "$idm" sim --drives 3 --listen "unix:$work/sim.sock" --iscsi tcp:127.0.0.1:0 "$@" \
    >"$work/sim.out" 2>"$work/sim.err" &
  sim_pid=$!
  for _ in $(seq 100); do
    grep -q '^drives:' "$work/sim.out" 2>/dev/null && break
    sleep 0.1
  done
  port=$(sed -n 's/^iscsi listening on tcp:127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/sim.out")
  [ -n "$port" ] || { echo "$name: FAIL: simulator did not start"; cat "$work/sim.err"; exit 1; }
}
