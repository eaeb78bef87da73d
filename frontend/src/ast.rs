//! The untyped syntax tree BuildKit's parser produces, and its dump format.
//!
//! Every instruction becomes a [`Node`]: its name as written, its `--flags` and its arguments.
//! How the arguments are split depends on the instruction (JSON array, `key=value` words,
//! whitespace-separated list or the raw rest of the line), exactly as BuildKit splits them.

use crate::error::Span;
use crate::golang::quote;

pub use crate::syntax::Syntax as Ast;

/// A heredoc attached to a `RUN`, `COPY` or `ADD` (or an `ONBUILD` of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u64,
    /// Whether `$VARS` in the content are expanded: false when the name was quoted.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the content (and the terminator line).
    pub chomp: bool,
    /// The lines between the marker and the terminator, each with its line break.
    pub content: String,
}

/// One argument of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A plain value.
    Word(String),
    /// The instruction an `ONBUILD` carries.
    Trigger(Box<Node>),
}

/// One instruction as the parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction name as written (`run`, `RUN`, `Run` all allowed).
    pub value: String,
    /// The `--flag[=value]` words before the arguments, quotes removed.
    pub flags: Vec<String>,
    /// The arguments.
    pub args: Vec<Arg>,
    /// Whether the arguments were given in JSON (exec) form.
    pub json: bool,
    /// Heredoc bodies attached to this instruction.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined) this node was parsed from.
    pub original: String,
    /// First line of the instruction (1-based).
    pub start_line: usize,
    /// Last line of the instruction, including continuation and heredoc lines.
    pub end_line: usize,
    /// The span of the instruction in the file.
    pub span: Span,
    /// BuildKit's `PrevComment`: the comment lines read since the previous instruction, text
    /// after `#` trimmed. An empty comment (`#`) clears the list; parser directives are not in it.
    /// Used for stage and ARG descriptions.
    pub comments: Vec<String>,
}

impl Node {
    /// The instruction name in lower case.
    pub fn name(&self) -> String {
        self.value.to_lowercase()
    }

    /// The argument words, with an `ONBUILD` trigger flattened into its name followed by its
    /// arguments (BuildKit's `nodeArgs`).
    pub fn arg_words(&self) -> Vec<String> {
        let mut out = Vec::new();
        for arg in &self.args {
            match arg {
                Arg::Word(w) => out.push(w.clone()),
                Arg::Trigger(node) => {
                    out.push(node.value.clone());
                    out.extend(node.arg_words());
                }
            }
        }
        out
    }

    /// BuildKit's `Node.Dump` for this instruction, e.g. `(copy ["--from=a"] "x" "/y")` minus the
    /// parentheses.
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| quote(f)).collect();
            s.push_str(&format!(" [{}]", flags.join(" ")));
        }
        for arg in &self.args {
            match arg {
                Arg::Word(w) => {
                    s.push(' ');
                    s.push_str(&quote(w));
                }
                Arg::Trigger(node) => {
                    s.push_str(" (");
                    s.push_str(&node.dump());
                    s.push(')');
                }
            }
        }
        crate::golang::trim_space(&s).to_string()
    }
}

/// BuildKit's dump of a whole file: one `(instruction)` per line.
pub fn dump(nodes: &[Node]) -> String {
    let mut out = String::new();
    for node in nodes {
        out.push('(');
        out.push_str(&node.dump());
        out.push_str(")\n");
    }
    out
}
