#!/usr/bin/env bash
# Runs uring-sg's real-kernel device tests (uring-sg/tests/guest_devices.rs) in a
# throw-away Linux guest with a scsi_debug disk and an emulated NVMe controller
# (../shared/tools/guest-run). Prints the guest's output and the wall time;
# exits with the tests' status.
#
#   scripts/guest-test.sh [extra test-harness args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
guest_run=${GUEST_RUN:-$(pwd)/../shared/tools/guest-run}

bin=$(cargo test -p uring-sg --test guest_devices --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*guest_devices[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "guest-test: could not build the guest_devices test binary" >&2; exit 2; }
cargo build -q -p idm-tools
idm=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/idm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The guest runs one program with no environment of ours: a small busybox-sh
# wrapper names the devices and runs the test binary, copied in with --file
# together with its shared libraries.
cat > "$work/run-guest-tests" <<'WRAP'
#!/bin/sh
export IDM_TEST_SG=/dev/sg0
export IDM_TEST_NVME=/dev/nvme0
for b in /dev/bsg/*; do [ -e "$b" ] && { export IDM_TEST_BSG="$b"; break; }; done
echo "guest: kernel $(uname -r); sg=$IDM_TEST_SG nvme=$IDM_TEST_NVME bsg=${IDM_TEST_BSG:-none}"
/root/idm doctor || { echo "guest: idm doctor failed"; exit 1; }
# The whole engine (discovery, the sg transport on a reactor's ring, the quorum
# protocol) against a real kernel: scsi_debug and QEMU's NVMe are not IDM drives,
# so a lock must fail with "not an IDM drive" (exit 2), never hang or crash.
disk=$(ls /sys/block | grep '^sd' | head -1)
for dev in /dev/$disk /dev/nvme0n1; do
  out=$(/root/idm lock --host guest --lock e2e --no-wait --timeout-ms 3000 "$dev" 2>&1); rc=$?
  echo "guest: idm lock $dev -> exit $rc: $out"
  [ $rc -eq 2 ] && echo "$out" | grep -q "not an IDM drive" || { echo "guest: idm lock on $dev: unexpected answer"; exit 1; }
done
exec /root/guest_devices --test-threads=1 --nocapture "$@"
WRAP
chmod +x "$work/run-guest-tests"

files=(--file "$bin:/root/guest_devices" --file "$idm:/root/idm")
while read -r lib; do
  files+=(--file "$(readlink -f "$lib"):$lib")
done < <(ldd "$bin" "$idm" | awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}' | sort -u)

set +e
"$guest_run" --scsi-debug --nvme "${files[@]}" -- "$work/run-guest-tests" "$@"
rc=$?
set -e
echo "guest-test: exit $rc, wall time $(( $(date +%s) - start )) s"
exit $rc
