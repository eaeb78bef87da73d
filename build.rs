//! Link settings of the `strata` executable.
//!
//! Every container start executes this binary twice (the CLI, then the sandbox helper through
//! /proc/self/exe), so the dynamic loader's work at startup is on the critical path. The binary
//! is a position-independent executable (ASLR) with ~35,000 relative relocations; packing them as
//! RELR (`-z pack-relative-relocs`) shrinks that table from 840 KB to 10 KB that the loader reads
//! at every exec. It needs glibc 2.36 or later at run time (the binary asks for
//! `GLIBC_ABI_DT_RELR`). See bench/README.md ("Runtime") for the measurements.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
