//! Gives the cdylib the soname lvmlockd's binaries were linked against.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libseagate_ilm.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
