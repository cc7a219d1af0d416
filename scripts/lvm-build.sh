#!/usr/bin/env bash
# Fetches LVM2 2.03.16 from Debian's source package and builds lvm, lvmlockd and
# lvmlockctl with `--enable-lvmlockd-idm` against this project's libseagate_ilm,
# into a cache outside the repository. Nothing of LVM2 is ever committed.
#
#   scripts/lvm-build.sh            # prints the build directory on its last line
#
# Cache: ${IDM_LVM_CACHE:-$HOME/.cache/idm-lvm2}:
#   apt/        a private apt configuration (one deb-src line) with its own
#               lists and archive cache: the system's apt setup is not touched
#   src/        the downloaded source package (.dsc, .orig.tar.xz, .debian.tar.xz;
#               `apt-get source --download-only`); the build uses the upstream
#               tarball (.orig.tar.xz), without Debian's patches, so what is
#               tested is LVM2 2.03.16 as released
#   ilm/        libseagate_ilm installed by scripts/install-ffi.sh (refreshed on
#               every run; lvmlockd finds it there through its rpath)
#   build-KEY/  the configured and built tree; KEY hashes ilm.h and the configure
#               line, so a change of the library's headers or ABI rebuilds, a
#               change of the library's code alone does not (it is linked
#               dynamically, soname libseagate_ilm.so.0)
# Build dependencies (gcc, make, pkg-config, libaio-dev, libblkid-dev, libsystemd-dev
# (lvmlockd-core.c includes <systemd/sd-daemon.h> unconditionally),
# uuid-dev, xz-utils) are installed with apt-get when missing and running as root.
# Environment: IDM_LVM_CACHE as above; IDM_LIB_DIR is passed to install-ffi.sh
# (default: the workspace's debug build, built here with cargo if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lvm_version=2.03.16
deb_version=2.03.16-2
cache=${IDM_LVM_CACHE:-$HOME/.cache/idm-lvm2}
mkdir -p "$cache"
log() { echo "lvm-build: $*" >&2; }

need=()
for pkg in gcc make pkg-config libaio-dev libblkid-dev libsystemd-dev uuid-dev xz-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing build dependencies: ${need[*]} (run as root to install)"; exit 2; }
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The library, installed where the LVM2 build looks for it.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "${IDM_LIB_DIR:-}" ]; then
  cargo build -q -p idm-ffi --locked
  export IDM_LIB_DIR=$target_dir/debug
fi
prefix=$cache/ilm
scripts/install-ffi.sh "$prefix" >/dev/null

# Source: Debian's source package through a private apt configuration.
apt_opts=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
  -o APT::Sandbox::User=root)
if [ ! -f "$cache/src/lvm2_$lvm_version.orig.tar.xz" ]; then
  mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/src"
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  echo "deb-src http://deb.debian.org/debian $suite main" >"$cache/apt/sources.list"
  log "fetching the lvm2 $deb_version source package"
  apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || { log "apt-get update failed"; exit 3; }
  (cd "$cache/src" && apt-get "${apt_opts[@]}" source --download-only -qq "lvm2=$deb_version" >/dev/null) ||
    { log "apt-get source lvm2=$deb_version failed"; exit 3; }
fi

# LVM2's Makefiles ignore the .pc file's CFLAGS: pass the include and library
# directories (and an rpath, so the binaries find the library without
# LD_LIBRARY_PATH, also in a guest that gets the library at the same path).
cflags="-O2 -g -I$prefix/include"
ldflags="-L$prefix/lib -Wl,-rpath,$prefix/lib"
conf=(--enable-lvmlockd-idm --enable-lvmpolld --disable-udev_sync --disable-udev_rules --disable-readline
  --disable-selinux --disable-systemd-journal --disable-app-machineid --disable-notify-dbus
  --disable-lvmimportvdo --disable-dmeventd --with-vdo=none --with-confdir=/etc
  --with-default-system-dir=/etc/lvm --with-default-run-dir=/run/lvm
  --with-default-locking-dir=/run/lock/lvm)
key=$( { cat ffi/include/ilm.h; echo "$lvm_version ${conf[*]} $cflags $ldflags"; } | sha256sum | cut -c1-16)
build=$cache/build-$key
if [ -x "$build/tools/lvm" ] && [ -x "$build/daemons/lvmlockd/lvmlockd" ] &&
  [ -x "$build/daemons/lvmlockd/lvmlockctl" ]; then
  log "cached build $build"
  echo "$build"
  exit 0
fi
log "building LVM2 $lvm_version into $build (about a minute on 2 cores)"
rm -rf "$build" "$cache"/build-*.tmp
mkdir -p "$build.tmp"
tar -C "$build.tmp" --strip-components=1 -xf "$cache/src/lvm2_$lvm_version.orig.tar.xz"
(
  cd "$build.tmp"
  PKG_CONFIG_PATH=$prefix/lib/pkgconfig CFLAGS="$cflags" LDFLAGS="$ldflags" \
    ./configure "${conf[@]}" >configure.log 2>&1 || { tail -n 30 configure.log >&2; exit 1; }
  # LVM2 2.03.16 bug: configure.ac never AC_SUBSTs BUILD_LOCKDIDM, so
  # daemons/lvmlockd/Makefile keeps the literal "@BUILD_LOCKDIDM@", leaves
  # lvmlockd-idm.c out and lvmlockd fails to link (undefined lm_*_idm).
  grep -q '^#define LOCKDIDM_SUPPORT 1' include/configure.h ||
    { echo "configure did not enable IDM" >&2; exit 1; }
  sed -i 's/@BUILD_LOCKDIDM@/yes/' daemons/lvmlockd/Makefile
  jobs=$(nproc)
  make -j"$jobs" tools >make.log 2>&1 || { tail -n 40 make.log >&2; exit 1; }
  make -j"$jobs" -C daemons/lvmlockd >>make.log 2>&1 || { tail -n 40 make.log >&2; exit 1; }
)
mv "$build.tmp" "$build"
log "built: $(ls "$build/tools/lvm" "$build/daemons/lvmlockd/lvmlockd" "$build/daemons/lvmlockd/lvmlockctl" | tr '\n' ' ')"
echo "$build"
