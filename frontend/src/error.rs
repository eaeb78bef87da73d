//! The one error type of the crate: a message worded as BuildKit words it, plus where it happened.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceCode};

/// A 1-based line and column (the column counts characters, not bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// A range of the Dockerfile text: start and end positions plus the byte range they cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First character of the range.
    pub start: Position,
    /// Last character of the range (inclusive), or `start` for an empty range.
    pub end: Position,
    /// Byte offset of `start` in the text.
    pub offset: usize,
    /// Length of the range in bytes.
    pub len: usize,
}

/// Which stage of the frontend refused the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text could not be split into instructions (parser level).
    Syntax,
    /// An instruction has the wrong arguments or flags.
    Instruction,
    /// Shell-word expansion failed (`${V?}`, an unterminated quote, ...).
    Expansion,
    /// The stages do not form a buildable graph (unknown target, cycle, ...).
    Plan,
    /// A `.dockerignore` pattern is malformed.
    Ignore,
}

/// Where an error happened: the file, the span and the text (kept to render the offending line).
#[derive(Clone)]
pub struct ErrorLocation {
    /// The file name given to [`crate::parse`].
    pub file: String,
    /// The offending range.
    pub span: Span,
    source: Arc<str>,
}

impl ErrorLocation {
    pub(crate) fn new(file: &str, source: &Arc<str>, span: Span) -> ErrorLocation {
        ErrorLocation {
            file: file.to_string(),
            span,
            source: source.clone(),
        }
    }

    /// The whole text of the file the location is in.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for ErrorLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorLocation")
            .field("file", &self.file)
            .field("span", &self.span)
            .finish()
    }
}

/// An error from any part of the frontend.
///
/// `Display` prints BuildKit's message for the same failure (for instruction-level errors that
/// includes BuildKit's `dockerfile parse error on line N: ` prefix). [`Error::render`] adds the
/// file, line and column and shows the offending line.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    location: Option<ErrorLocation>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            location: None,
        }
    }

    pub(crate) fn at(mut self, file: &str, source: &Arc<str>, span: Span) -> Error {
        if self.location.is_none() {
            self.location = Some(ErrorLocation::new(file, source, span));
        }
        self
    }

    pub(crate) fn with_prefix(mut self, prefix: &str) -> Error {
        self.message = format!("{prefix}{}", self.message);
        self
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// BuildKit's message, without location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// File, line and column, when the error comes from a place in a Dockerfile.
    pub fn location(&self) -> Option<&ErrorLocation> {
        self.location.as_ref()
    }

    /// A multi-line rendering for people: `file:line:column`, the message and the offending
    /// line(s) with the span underlined. Plain text (no colors).
    pub fn render(&self) -> String {
        let Some(loc) = &self.location else {
            return self.message.clone();
        };
        let mut out = String::new();
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_context_lines(1);
        if handler.render_report(&mut out, self).is_err() {
            return format!(
                "{}:{}:{}: {}",
                loc.file, loc.span.start.line, loc.span.start.column, self.message
            );
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Diagnostic for Error {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        // miette wants a borrowed `SourceCode`; `ErrorLocation` implements it by delegating.
        self.location.as_ref().map(|l| l as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let loc = self.location.as_ref()?;
        let span = LabeledSpan::new(None, loc.span.offset, loc.span.len);
        Some(Box::new(std::iter::once(span)))
    }
}

impl SourceCode for ErrorLocation {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let text: &'a str = &self.source;
        let inner = text.read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// Maps 1-based line numbers to byte offsets, to build spans.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        LineIndex { text, starts }
    }

    /// Byte range of line `n` (1-based), without its line break.
    fn line_range(&self, n: usize) -> (usize, usize) {
        let n = n.clamp(1, self.starts.len());
        let start = self.starts[n - 1];
        let mut end = self.starts.get(n).map(|s| s - 1).unwrap_or(self.text.len());
        while end > start && matches!(self.text.as_bytes()[end - 1], b'\r' | b'\n') {
            end -= 1;
        }
        (start, end)
    }

    /// The span of whole lines `first..=last`, skipping the indentation of the first line.
    pub(crate) fn line_span(&self, first: usize, last: usize) -> Span {
        let (line_start, first_end) = self.line_range(first);
        let (_, last_end) = self.line_range(last.max(first));
        let line_text = &self.text[line_start..first_end];
        let indent = line_text.len() - line_text.trim_start().len();
        let offset = line_start + indent;
        let len = last_end.saturating_sub(offset);
        let start_col = self.text[line_start..offset].chars().count() + 1;
        let (last_start, _) = self.line_range(last.max(first));
        let end_col = self.text[last_start..last_end.max(last_start)]
            .chars()
            .count()
            .max(1);
        Span {
            start: Position {
                line: first.max(1),
                column: start_col,
            },
            end: Position {
                line: last.max(first).max(1),
                column: end_col,
            },
            offset,
            len,
        }
    }
}
