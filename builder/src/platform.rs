//! `--platform`: strata builds for the machine's own platform (or one it runs natively, such as
//! `linux/386` on `linux/amd64`). Anything else would need its binaries emulated (binfmt_misc
//! with qemu-user-static), which strata does not set up, so it is refused before any work.

use strata_frontend::plan;
use strata_store::Platform;

use crate::error::{BuildError, Result};

/// The frontend's form of a platform (what `TARGETPLATFORM` and friends are filled from).
pub(crate) fn to_plan(p: &Platform) -> plan::Platform {
    plan::Platform::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
}

/// Refuses `platform` unless this machine runs it natively; `what` says who asked for it.
pub(crate) fn check_runnable(platform: &Platform, what: &str) -> Result<()> {
    let host = Platform::host();
    if host.can_run(platform) {
        return Ok(());
    }
    Err(BuildError::ForeignPlatform(format!(
        "{what} {platform} cannot be built on this {host} machine: running its programs needs \
         emulation (binfmt_misc with qemu-user-static handlers registered for {platform}), which \
         strata does not provide; build on a {platform} machine, or build for {host}",
        platform = display(platform),
        host = display(&host),
    )))
}

/// A `FROM --platform` (already expanded by the frontend) checked as [`check_runnable`].
pub(crate) fn check_stage(stage_platform: &plan::Platform, stage: &str) -> Result<()> {
    let variant = (!stage_platform.variant.is_empty()).then_some(stage_platform.variant.as_str());
    let p = Platform::new(&stage_platform.os, &stage_platform.architecture, variant);
    if stage.is_empty() {
        check_runnable(&p, "FROM --platform")
    } else {
        check_runnable(&p, &format!("stage {stage}: FROM --platform"))
    }
}

fn display(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}
