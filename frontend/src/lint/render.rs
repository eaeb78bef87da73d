//! How lint results read: `docker build --check`'s text (buildx's `printResult` over BuildKit's
//! `LintResults.PrintTo` and `errdefs.Source.Print`), and miette reports like parse errors.

use std::fmt::{self, Write};

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, Severity};
use serde_json::{Value, json};

use super::{LintReport, LintWarning};
use crate::error::ErrorLocation;

/// BuildKit's `errdefs.Source.Print`: the lines `first..=last` marked `>>>`, with two lines of
/// context around a range and four around a single line, under a `file:line` header.
fn source_block(out: &mut String, file: &str, source: &str, first: usize, last: usize) {
    let lines: Vec<&str> = source.split('\n').collect();
    if first < 1 || first > lines.len() {
        return;
    }
    let marked_last = last.max(first);
    let (mut start, mut end) = (first, marked_last.min(lines.len()));
    let pad = if end == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let _ = write!(out, "{file}:{first}\n--------------------\n");
    for (i, line) in lines.iter().enumerate().take(end).skip(start - 1) {
        let n = i + 1;
        let marker = if (first..=marked_last).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(out, " {n:>3} | {marker} {line}");
    }
    out.push_str("--------------------\n");
}

impl LintReport {
    /// What `docker build --check` prints on standard output: the count (or `Check complete,
    /// no warnings found.` when there is nothing to report), then each warning with its rule,
    /// documentation URL, message and the lines it is about.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self.warnings.len() {
            0 if self.error.is_none() => out.push_str("Check complete, no warnings found.\n"),
            0 => {}
            1 => out.push_str("Check complete, 1 warning has been found!\n"),
            n => {
                let _ = writeln!(out, "Check complete, {n} warnings have been found!");
            }
        }
        for w in &self.warnings {
            let _ = write!(
                out,
                "\nWARNING: {} - {}\n{}\n",
                w.rule.name, w.rule.url, w.message
            );
            let span = w.location.span;
            source_block(
                &mut out,
                &self.file,
                &self.source,
                span.start.line,
                span.end.line,
            );
        }
        out
    }

    /// The warnings as a build lists them (BuildKit's progress output): a count, then one
    /// [`LintWarning::short`] line each; empty when there are none.
    pub fn render_short(&self) -> String {
        let mut out = match self.warnings.len() {
            0 => return String::new(),
            1 => "1 warning found (use --check to expand):\n".to_string(),
            n => format!("{n} warnings found (use --check to expand):\n"),
        };
        for w in &self.warnings {
            let _ = writeln!(out, " - {}", w.short());
        }
        out
    }

    /// Whether the report fails a build that is not a `--check`: warnings under `error=true`.
    /// (Other errors are the build's own to report.)
    pub fn fails_build(&self) -> bool {
        self.config.error && !self.warnings.is_empty()
    }

    /// The error as `docker build --check` prints it on standard error, with the lines it is
    /// about when it has a location; `None` when the check did not fail.
    pub fn render_error(&self) -> Option<String> {
        let err = self.error.as_ref()?;
        let mut out = format!("ERROR: {}\n", err.message());
        if let Some(loc) = err.location() {
            source_block(
                &mut out,
                &loc.file,
                loc.source(),
                loc.span.start.line,
                loc.span.end.line,
            );
        }
        Some(out)
    }
}

/// A location as JSON: the file and the first and last characters (1-based lines and columns).
fn location_json(loc: &ErrorLocation) -> Value {
    let (start, end) = (loc.span.start, loc.span.end);
    json!({
        "file": loc.file,
        "start": {"line": start.line, "column": start.column},
        "end": {"line": end.line, "column": end.column},
    })
}

impl LintReport {
    /// The report as JSON, with BuildKit's field names for a warning (`ruleName`, `description`,
    /// `url`, `detail`) and the error (`message`), and each location as the file with its
    /// start and end line and column: `{"warnings": [...], "error": null | {...}}`.
    pub fn to_json(&self) -> Value {
        let warnings: Vec<Value> = self
            .warnings
            .iter()
            .map(|w| {
                json!({
                    "ruleName": w.rule.name,
                    "description": w.rule.description,
                    "url": w.rule.url,
                    "detail": w.message,
                    "location": location_json(&w.location),
                })
            })
            .collect();
        let error = self.error.as_ref().map(|e| {
            json!({
                "message": e.message(),
                "location": e.location().map(location_json),
            })
        });
        json!({ "warnings": warnings, "error": error })
    }
}

impl LintWarning {
    /// BuildKit's one-line form (`linter.LintFormatShort`), as a build's progress lists the
    /// warnings: `RuleName: message (line N)`.
    pub fn short(&self) -> String {
        format!(
            "{}: {} (line {})",
            self.rule.name, self.message, self.location.span.start.line
        )
    }

    /// A multi-line rendering in the style of [`crate::Error::render`]: `file:line:column`, the
    /// rule, the message and the instruction underlined. Plain text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_context_lines(1);
        if handler.render_report(&mut out, self).is_err() {
            let start = self.location.span.start;
            return format!(
                "{}:{}:{}: {}: {}",
                self.location.file, start.line, start.column, self.rule.name, self.message
            );
        }
        out
    }
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LintWarning {}

impl Diagnostic for LintWarning {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.rule.name))
    }

    fn severity(&self) -> Option<Severity> {
        Some(Severity::Warning)
    }

    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.rule.url))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.location)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.location.span;
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some(self.rule.description.to_string()),
            span.offset,
            span.len,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::source_block;
    use crate::lint::{LintOptions, check_text};
    use crate::plan::Platform;

    fn lint(text: &str) -> crate::lint::LintReport {
        check_text(
            text,
            "Dockerfile",
            &LintOptions::new(Platform::new("linux", "amd64", "")),
        )
    }

    #[test]
    fn report_reads_like_docker_build_check() {
        let report = lint("FROM scratch\nMAINTAINER me\n");
        assert_eq!(
            report.render(),
            "Check complete, 1 warning has been found!\n\
             \nWARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n\
             Maintainer instruction is deprecated in favor of using label\n\
             Dockerfile:2\n--------------------\n\
             \x20  1 |     FROM scratch\n\
             \x20  2 | >>> MAINTAINER me\n\
             \x20  3 |     \n\
             --------------------\n"
        );
        assert_eq!(
            report.warnings[0].short(),
            "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"
        );
        assert!(report.render_error().is_none());
        assert_eq!(
            report.render_short(),
            "1 warning found (use --check to expand):\n - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)\n"
        );
        assert!(!report.fails_build());
        assert_eq!(
            lint("FROM scratch\n").render(),
            "Check complete, no warnings found.\n"
        );
    }

    #[test]
    fn report_as_json() {
        let report = lint("# check=error=true\nFROM scratch\nCMD  run it\n");
        let json = report.to_json();
        assert_eq!(
            json["warnings"][0],
            serde_json::json!({
                "ruleName": "JSONArgsRecommended",
                "description": "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
                "url": "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
                "detail": "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
                "location": {
                    "file": "Dockerfile",
                    "start": {"line": 3, "column": 1},
                    "end": {"line": 3, "column": 11},
                },
            })
        );
        assert_eq!(
            json["error"]["message"],
            "lint violation found for rules: JSONArgsRecommended"
        );
        assert!(
            report
                .render_error()
                .unwrap()
                .starts_with("ERROR: lint violation")
        );
        assert_eq!(
            lint("FROM scratch\n").to_json()["error"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn source_block_pads_like_buildkit() {
        let mut out = String::new();
        source_block(
            &mut out,
            "Dockerfile",
            "FROM a\n\nRUN x\n\nCOPY . /\n",
            3,
            3,
        );
        assert_eq!(
            out,
            "Dockerfile:3\n--------------------\n   1 |     FROM a\n   2 |     \n   3 | >>> RUN x\n   4 |     \n   5 |     COPY . /\n--------------------\n"
        );
        let mut out = String::new();
        source_block(&mut out, "Dockerfile", "FROM a\nRUN a \\\n  b\nCMD x", 2, 3);
        assert_eq!(
            out,
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> RUN a \\\n   3 | >>>   b\n   4 |     CMD x\n--------------------\n"
        );
    }
}
