#!/bin/sh
# Installs libseagate_ilm (the idm-engine C library) under PREFIX:
#   PREFIX/lib/libseagate_ilm.so.0.<minor>.<patch>, libseagate_ilm.so.0 -> it,
#   libseagate_ilm.so -> libseagate_ilm.so.0, libseagate_ilm.a,
#   PREFIX/include/ilm.h, PREFIX/include/idm_engine.h,
#   PREFIX/lib/pkgconfig/libseagate_ilm.pc
# so that `pkg-config --cflags --libs libseagate_ilm` works with
# PKG_CONFIG_PATH=PREFIX/lib/pkgconfig.
#
# Usage: scripts/install-ffi.sh PREFIX
# Environment:
#   IDM_LIB_DIR   take the built libraries from this directory instead of
#                 running `cargo build --release -p idm-ffi` (e.g. target/debug)
#   DESTDIR       staging root prepended to PREFIX (packaging)
#   IDM_FFI_SIM   0: build the library without its simulator support (cargo
#                 feature `sim` of idm-ffi, on by default: IDM_SIM=mem:N and
#                 the `idm sim` server; the C tests and benchmarks use it), so
#                 it links no simulator code; ignored with IDM_LIB_DIR
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 PREFIX" >&2
	exit 2
fi
prefix=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}$prefix

if [ -n "${IDM_LIB_DIR:-}" ]; then
	libdir=$IDM_LIB_DIR
else
	features=
	[ "${IDM_FFI_SIM:-1}" = 0 ] && features=--no-default-features
	(cd "$root" && cargo build --release -p idm-ffi $features)
	libdir=$(cd "$root" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
fi
for f in libseagate_ilm.so libseagate_ilm.a; do
	if [ ! -f "$libdir/$f" ]; then
		echo "$0: $libdir/$f not found" >&2
		exit 1
	fi
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
[ -n "$version" ] || version=0.1.0
# The soname is libseagate_ilm.so.0 whatever the crate version.
real=libseagate_ilm.so.0.${version#*.}

install -d "$dest/lib" "$dest/lib/pkgconfig" "$dest/include"
install -m 0755 "$libdir/libseagate_ilm.so" "$dest/lib/$real"
ln -sf "$real" "$dest/lib/libseagate_ilm.so.0"
ln -sf libseagate_ilm.so.0 "$dest/lib/libseagate_ilm.so"
install -m 0644 "$libdir/libseagate_ilm.a" "$dest/lib/libseagate_ilm.a"
install -m 0644 "$root/ffi/include/ilm.h" "$root/ffi/include/idm_engine.h" "$dest/include/"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" \
	"$root/ffi/libseagate_ilm.pc.in" > "$dest/lib/pkgconfig/libseagate_ilm.pc"
chmod 0644 "$dest/lib/pkgconfig/libseagate_ilm.pc"
echo "installed libseagate_ilm $version under $dest"
