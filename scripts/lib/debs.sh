# shellcheck shell=bash
# Sourced by the guest scripts: Debian packages unpacked into a cache directory
# (for binaries a throw-away guest needs and the host may not have installed).
#
#   fetch_debs NAME DIR CHECK PKG...
#
# Unless DIR/root/CHECK exists, downloads PKG... with `apt-get download` into DIR
# (after an `apt-get update` if the first try fails) and unpacks each with
# `dpkg -x` into DIR/root. Nothing is installed on the host. On failure prints
# "NAME: FAIL: apt-get download PKG... failed" and exits 2.
fetch_debs() {
  local name=$1 dir=$2 check=$3 deb
  shift 3
  [ -e "$dir/root/$check" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && { apt-get download -qq "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get download -qq "$@" >/dev/null 2>&1; }; }) ||
    { echo "$name: FAIL: apt-get download $* failed" >&2; exit 2; }
  for deb in "$dir"/*.deb; do dpkg -x "$deb" "$dir/root"; done
  [ -e "$dir/root/$check" ] || { echo "$name: FAIL: $check not in $*" >&2; exit 2; }
}
