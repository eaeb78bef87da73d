//! `strata debug ...`: hidden commands that expose library internals to conformance tests and
//! to people debugging strata. One submodule per crate whose internals they expose.

use std::process::ExitCode;

use clap::Subcommand;

mod frontend;
mod run_bundle;
mod runtime_spec;

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse and normalise an image reference; print it as JSON.
    ParseRef {
        #[arg(allow_hyphen_values = true)]
        reference: String,
    },
    /// Print BuildKit's AST dump of a Dockerfile.
    DumpAst(frontend::DumpAstArgs),
    /// Expand a word with BuildKit's shell lexer and print the result as JSON.
    Expand(frontend::ExpandArgs),
    /// Tell which paths `.dockerignore` patterns exclude.
    Ignore(frontend::IgnoreArgs),
    /// Print the resolved build graph with every instruction expanded.
    Plan(frontend::PlanArgs),
    /// Print the lint warnings of a Dockerfile (`build --check`) as JSON.
    Lint(frontend::LintArgs),
    /// Run an OCI bundle (config.json + rootfs) in the sandbox, like `runc run`.
    RunBundle(run_bundle::Args),
    /// Print the OCI runtime spec (Docker's defaults) for a rootfs and command.
    RuntimeSpec(runtime_spec::Args),
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::ParseRef { reference } => super::parse_ref::run(&reference),
        DebugCommand::DumpAst(args) => frontend::dump_ast(args),
        DebugCommand::Expand(args) => frontend::expand(args),
        DebugCommand::Ignore(args) => frontend::ignore(args),
        DebugCommand::Plan(args) => frontend::plan_command(args),
        DebugCommand::Lint(args) => frontend::lint_command(args),
        DebugCommand::RunBundle(args) => run_bundle::run(args),
        DebugCommand::RuntimeSpec(args) => runtime_spec::run(args),
    }
}
