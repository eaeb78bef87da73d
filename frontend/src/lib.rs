//! Dockerfile text to a build graph.
//!
//! Parses Dockerfiles exactly as BuildKit's `docker/dockerfile:1` frontend does, expands shell words
//! the way its lexer does, matches `.dockerignore` patterns as moby's patternmatcher does, and resolves
//! stages into a graph. Pure: no I/O beyond the text it is handed.
//!
//! The layers, in the order a build uses them:
//! 1. [`parse`]: text to a [`Dockerfile`] of typed, validated instructions, each with its
//!    position and original text ([`ast`] has BuildKit's untyped tree and its dump format).
//! 2. [`plan::plan`]: build options (build args, target, platforms) to the stages the target needs,
//!    in dependency order ([`plan::Plan`]).
//! 3. [`eval::evaluate_stage`]: one stage, given its base image's environment, to its instructions
//!    expanded as BuildKit expands them, with the environment and the build args each one used.
//!
//! Beside them: [`shell`] (the word lexer), [`dockerignore`] (context filtering),
//! [`mount`] (typed `RUN --mount` values) and [`lint`] (BuildKit's `--check` rules).

#![warn(missing_docs)]

pub mod ast;
pub mod dockerignore;
mod error;
pub mod eval;
mod golang;
pub mod instructions;
pub mod lint;
pub mod mount;
pub mod plan;
mod reference;
pub mod shell;

/// Go's `strconv.Quote`: BuildKit formats history and messages with `%q`.
pub use golang::quote as go_quote;
mod syntax;

use std::sync::Arc;

pub use error::{Error, ErrorKind, ErrorLocation, Position, Span};
pub use instructions::InstructionKind;
pub use syntax::{Directives, MAX_LINE_LENGTH, Warning};

use crate::ast::Node;
use crate::instructions::{From, Parsed, parse_node};
use crate::syntax::{Locator, parse_nodes};

/// Where an instruction is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, including continuation and heredoc lines.
    pub end_line: usize,
    /// Line and column range, with byte offsets.
    pub span: Span,
}

/// One instruction (other than FROM) of a stage, or a global `ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The typed instruction, values unexpanded.
    pub kind: InstructionKind,
    /// The instruction name as written (`run`, `RUN`, ...).
    pub name: String,
    /// The instruction's logical line (continuations joined), trimmed: BuildKit's
    /// `String()` of a command, used in progress names and history.
    pub original: String,
    /// Where it is.
    pub location: Location,
}

/// A `FROM` and the instructions up to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages (0-based): what `COPY --from=N` refers to.
    pub index: usize,
    /// The FROM line.
    pub from: From,
    /// The FROM line's original text.
    pub original: String,
    /// Where the FROM line is.
    pub location: Location,
    /// The instructions of the stage, in order.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The stage name (lower-cased), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.from.name.as_deref()
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    file_name: String,
    source: Arc<str>,
    nodes: Vec<Node>,
    /// Parser directives (`# syntax=`, `# escape=`, `# check=`).
    pub directives: Directives,
    /// Parser warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
    /// `ARG` instructions before the first `FROM` (the global scope).
    pub global_args: Vec<Instruction>,
    /// The stages in file order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The name this file was parsed under.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The text this file was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// BuildKit's untyped tree, one node per instruction.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The escape character (`\` unless `# escape=`` was given).
    pub fn escape(&self) -> char {
        self.directives.escape
    }

    /// BuildKit's AST dump (the format of its parser test files).
    pub fn dump_ast(&self) -> String {
        ast::dump(&self.nodes)
    }

    pub(crate) fn locate(&self, err: Error, location: &Location) -> Error {
        err.at(&self.file_name, &self.source, location.span)
    }
}

fn location(node: &Node) -> Location {
    Location {
        start_line: node.start_line,
        end_line: node.end_line,
        span: node.span,
    }
}

fn instruction_error(node: &Node, message: String) -> Error {
    Error::new(ErrorKind::Instruction, message).with_prefix(&format!(
        "dockerfile parse error on line {}: ",
        node.start_line
    ))
}

/// Parses text into BuildKit's untyped tree only, without checking instructions (what
/// BuildKit's parser accepts; `strata debug dump-ast` prints [`ast::dump`] of it).
pub fn parse_ast(text: &str, file_name: &str) -> Result<ast::Ast, Error> {
    let locator = Locator {
        file: file_name.to_string(),
        source: Arc::from(text),
    };
    parse_nodes(text, &locator)
}

/// Parses a Dockerfile. `file_name` is used in error locations only.
///
/// Fails with BuildKit's message on anything BuildKit's parser or instruction layer rejects;
/// the error carries the file, line and column ([`Error::render`] shows the line).
pub fn parse(text: &str, file_name: &str) -> Result<Dockerfile, Error> {
    let locator = Locator {
        file: file_name.to_string(),
        source: Arc::from(text),
    };
    let syntax = parse_nodes(text, &locator)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &syntax.nodes {
        let loc = location(node);
        let parsed = parse_node(node)
            .map_err(|m| instruction_error(node, m).at(file_name, &locator.source, loc.span))?;
        match parsed {
            Parsed::From(from) => stages.push(Stage {
                index: stages.len(),
                from,
                original: golang::trim_space(&node.original).to_string(),
                location: loc,
                instructions: Vec::new(),
            }),
            Parsed::Instruction(kind) => {
                let instruction = Instruction {
                    kind,
                    name: node.value.clone(),
                    original: golang::trim_space(&node.original).to_string(),
                    location: loc,
                };
                match stages.last_mut() {
                    Some(stage) => stage.instructions.push(instruction),
                    None if matches!(instruction.kind, InstructionKind::Arg(_)) => {
                        global_args.push(instruction)
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::Instruction,
                            "no build stage in current context",
                        )
                        .at(file_name, &locator.source, loc.span));
                    }
                }
            }
        }
    }
    Ok(Dockerfile {
        file_name: file_name.to_string(),
        source: locator.source,
        nodes: syntax.nodes,
        directives: syntax.directives,
        warnings: syntax.warnings,
        global_args,
        stages,
    })
}

/// Parses an `ONBUILD` trigger read back from a base image's config (`OnBuild` entries), as
/// BuildKit does before running it: one instruction, which may not be `FROM`.
pub fn parse_instruction(expression: &str) -> Result<Instruction, Error> {
    let file = "<onbuild trigger>";
    let locator = Locator {
        file: file.to_string(),
        source: Arc::from(expression),
    };
    let syntax = parse_nodes(expression, &locator)?;
    if syntax.nodes.len() != 1 {
        return Err(Error::new(
            ErrorKind::Instruction,
            "onbuild trigger should be a single expression",
        ));
    }
    let node = &syntax.nodes[0];
    let loc = location(node);
    match parse_node(node)
        .map_err(|m| Error::new(ErrorKind::Instruction, m).at(file, &locator.source, loc.span))?
    {
        Parsed::From(_) => Err(Error::new(
            ErrorKind::Instruction,
            "*instructions.Stage is not a command type",
        )
        .at(file, &locator.source, loc.span)),
        Parsed::Instruction(kind) => Ok(Instruction {
            kind,
            name: node.value.clone(),
            original: golang::trim_space(&node.original).to_string(),
            location: loc,
        }),
    }
}
