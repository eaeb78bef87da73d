//! Link settings of the `strata` executable.
//!
//! Every container start executes this binary twice (the CLI, then the sandbox helper through
//! /proc/self/exe), so the dynamic loader's work at startup is on the critical path. The binary
//! is a position-independent executable (ASLR) with ~35,000 relative relocations; packing them as
//! RELR (`-z pack-relative-relocs`) shrinks that table from 840 KB to 10 KB that the loader reads
//! at every exec. The result needs glibc 2.36 or later at run time (it asks for
//! `GLIBC_ABI_DT_RELR`), so the flag is only given when the glibc strata is built against is that
//! new: a build on an older system (Ubuntu 22.04, RHEL 9) links as before and runs there. See
//! bench/README.md ("Runtime") for the measurements.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if target.contains("linux-gnu") && target == host && host_glibc_at_least(2, 36) {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the build machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is at least
/// `major.minor`; false when it cannot be told.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
