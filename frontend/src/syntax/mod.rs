//! Dockerfile text to [`Node`]s, as BuildKit's `frontend/dockerfile/parser` does it.
//!
//! Two layers:
//! - a line pre-pass (this file) that reads physical lines the way BuildKit's scanner does: the
//!   byte-order mark, parser directives (`# escape=` picks the grammar's rule set), comments,
//!   line continuations with BuildKit's exact trailing-escape rule, empty continuation lines,
//!   heredoc bodies and the 65,535-byte line limit. These are stateful, line-oriented rules
//!   (a heredoc body can only be found after its instruction line is parsed), which is why they
//!   are not in the grammar.
//! - the pest grammar (`dockerfile.pest`) for one logical line: the instruction name, `--flags`,
//!   and each argument form (JSON array, `key=value` words, whitespace lists, heredoc markers).

use std::collections::BTreeSet;
use std::sync::Arc;

use pest::Parser;
use pest::iterators::Pair;
use pest_derive::Parser;

use crate::ast::{Arg, Heredoc, Node};
use crate::error::{Error, ErrorKind, LineIndex};
use crate::golang::{is_space, trim_space};
use crate::shell::Lexer;

#[derive(Parser)]
#[grammar = "syntax/dockerfile.pest"]
struct Grammar;

/// The longest line BuildKit's scanner accepts, in bytes, without its line break.
pub const MAX_LINE_LENGTH: usize = 65_535;

/// The parser directives found at the top of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` (the frontend image BuildKit would use; recorded, not acted upon).
    pub syntax: Option<String>,
    /// `# escape=`: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` (linter configuration; recorded).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// BuildKit's short message.
    pub message: String,
    /// The line it is about (1-based).
    pub line: usize,
}

/// A file as BuildKit's parser sees it, before instructions are typed.
#[derive(Debug, Clone)]
pub struct Syntax {
    /// One node per instruction, in file order.
    pub nodes: Vec<Node>,
    /// The parser directives.
    pub directives: Directives,
    /// Empty-continuation-line warnings.
    pub warnings: Vec<Warning>,
}

/// Builds errors located in one file.
#[derive(Clone)]
pub(crate) struct Locator {
    pub(crate) file: String,
    pub(crate) source: Arc<str>,
}

impl Locator {
    pub(crate) fn lines(&self, err: Error, first: usize, last: usize) -> Error {
        let span = LineIndex::new(&self.source).line_span(first, last);
        err.at(&self.file, &self.source, span)
    }
}

/// State of the directive parser: directives are only recognised before the first other line.
struct DirectiveState {
    directives: Directives,
    done: bool,
    seen: BTreeSet<String>,
}

impl DirectiveState {
    fn new() -> Self {
        DirectiveState {
            directives: Directives::default(),
            done: false,
            seen: BTreeSet::new(),
        }
    }

    /// BuildKit's `DirectiveParser.ParseLine` followed by `setEscapeToken`; true when the line
    /// was a directive.
    fn parse_line(&mut self, line: &str) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(false);
        };
        let name = name.to_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if !self.seen.insert(name.clone()) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        match name.as_str() {
            "escape" => match value.as_str() {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                _ => {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ));
                }
            },
            "syntax" => self.directives.syntax = Some(value),
            _ => self.directives.check = Some(value),
        }
        Ok(true)
    }
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` as Go's regexp does.
fn match_directive(line: &str) -> Option<(String, String)> {
    let pairs = Grammar::parse(Rule::directive_head, line).ok()?;
    let head = pairs.into_iter().next()?;
    let end = head.as_span().end();
    let name = head
        .into_inner()
        .find(|p| p.as_rule() == Rule::directive_name)?
        .as_str()
        .to_string();
    let rest = &line[end..];
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let value_start = rest.trim_start_matches(is_re_space);
    let value = if value_start.is_empty() {
        // `\s*` gives back one character so that `.+?` can match.
        let last = rest.chars().last()?;
        last.to_string()
    } else {
        value_start.trim_end_matches(is_re_space).to_string()
    };
    Some((name, value))
}

/// Physical lines of the text, each with its line break, as BuildKit's `scanLines` yields them.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    too_long: bool,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() || self.too_long {
            return None;
        }
        let rest = &self.text[self.pos..];
        let end = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
        let content_len = rest[..end].strip_suffix('\n').unwrap_or(&rest[..end]).len();
        if content_len > MAX_LINE_LENGTH {
            self.too_long = true;
            return None;
        }
        self.pos += end;
        Some(&rest[..end])
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_space).starts_with('#')
}

/// BuildKit's `processLine`: drop the line break (and leading blanks on an instruction's first
/// line), feed the directive parser, and blank out comments. Also tells whether the line was a
/// parser directive.
fn process_line<'a>(
    state: &mut DirectiveState,
    token: &'a str,
    strip_left: bool,
) -> Result<(&'a str, bool), String> {
    let mut token = trim_newline(token);
    if strip_left {
        token = token.trim_start_matches(is_space);
    }
    let directive = state.parse_line(token)?;
    Ok((if is_comment(token) { "" } else { token }, directive))
}

/// The text BuildKit keeps of a comment line for `PrevComment`: the line without its first
/// character (the `#`, or a blank before it, as BuildKit slices one byte), trimmed.
fn comment_text(line: &str) -> String {
    let mut chars = trim_newline(line).chars();
    chars.next();
    trim_space(chars.as_str()).to_string()
}

/// BuildKit's line-continuation rule `([^E])E[ \t]*$|^E[ \t]*$`: an escape character at the end
/// of the line (trailing blanks allowed) continues it, unless it is itself escaped.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        match before.chars().last() {
            None => return (String::new(), false),
            Some(c) if c != escape => return (before.to_string(), false),
            Some(_) => {}
        }
    }
    (line.to_string(), true)
}

/// Parses a whole Dockerfile into nodes.
pub(crate) fn parse_nodes(text: &str, loc: &Locator) -> Result<Syntax, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Lines are numbered in the original text; the BOM is not a line of its own.
    let mut lines = Lines {
        text,
        pos: 0,
        too_long: false,
    };
    let mut state = DirectiveState::new();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut current_line = 0usize;
    let syntax_err = |msg: String| Error::new(ErrorKind::Syntax, msg);
    let index = LineIndex::new(&loc.source);

    let mut comments: Vec<String> = Vec::new();
    while let Some(raw) = lines.next() {
        if is_comment(raw) {
            let text = comment_text(raw);
            if text.is_empty() {
                comments.clear();
            } else {
                comments.push(text);
            }
        }
        let (processed, directive) = process_line(&mut state, raw, true)
            .map_err(|m| loc.lines(syntax_err(m), current_line + 1, current_line + 1))?;
        if directive {
            comments.pop();
        }
        current_line += 1;
        let start_line = current_line;
        let escape = state.directives.escape;
        let (first, mut end_of_line) = trim_continuation(processed, escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first;
        let mut empty_continuation = false;
        while !end_of_line {
            let Some(raw) = lines.next() else { break };
            let (processed, _) = process_line(&mut state, raw, false)
                .map_err(|m| loc.lines(syntax_err(m), current_line + 1, current_line + 1))?;
            current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if trim_newline(processed)
                .trim_start_matches(is_space)
                .is_empty()
            {
                empty_continuation = true;
                continue;
            }
            let (part, end) = trim_continuation(processed, escape);
            end_of_line = end;
            line.push_str(&part);
        }
        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {line}"),
                line: current_line,
            });
        }

        let mut node = node_from_line(&line, escape)
            .map_err(|m| loc.lines(syntax_err(m), start_line, current_line))?;

        if can_contain_heredoc(&node) && line.contains("<<") {
            let heredocs = heredocs_from_line(&line)
                .map_err(|m| loc.lines(syntax_err(m), start_line, current_line))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                for raw in lines.by_ref() {
                    current_line += 1;
                    let mut candidate = trim_newline(raw);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(raw);
                }
                if !terminated {
                    return Err(loc.lines(
                        syntax_err("unterminated heredoc".into()),
                        start_line,
                        current_line,
                    ));
                }
                node.heredocs.push(heredoc);
            }
        }
        node.start_line = start_line;
        node.end_line = current_line;
        node.span = index.line_span(start_line, current_line);
        node.comments = std::mem::take(&mut comments);
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(loc.lines(
            syntax_err("file with no instructions".into()),
            current_line.max(1),
            current_line.max(1),
        ));
    }
    if lines.too_long {
        return Err(loc.lines(
            syntax_err(format!(
                "dockerfile line greater than max allowed size of {MAX_LINE_LENGTH}"
            )),
            current_line + 1,
            current_line + 1,
        ));
    }
    Ok(Syntax {
        nodes,
        directives: state.directives,
        warnings,
    })
}

/// Parses one logical line (an `ONBUILD` trigger, say) into a node, with `\` or `` ` `` escapes.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (cmd, flags, args) = split_command(line);
    let (args, json) = match cmd.to_lowercase().as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(&args)?,
        "arg" => (
            words(&args, escape).into_iter().map(Arg::Word).collect(),
            false,
        ),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(&args)?,
        "env" => (parse_name_val(&args, "ENV", escape)?, false),
        "label" => (parse_name_val(&args, "LABEL", escape)?, false),
        "expose" | "from" => (ws_list(&args), false),
        "healthcheck" => parse_health_config(&args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (
            if args.is_empty() {
                vec![]
            } else {
                vec![Arg::Word(args.clone())]
            },
            false,
        ),
        "onbuild" => {
            if args.is_empty() {
                (vec![], false)
            } else {
                let child = node_from_line(&args, escape)?;
                (vec![Arg::Trigger(Box::new(child))], false)
            }
        }
        _ => (vec![], false),
    };
    Ok(Node {
        value: cmd,
        flags,
        args,
        json,
        heredocs: vec![],
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        span: crate::error::Span::default(),
        comments: vec![],
    })
}

/// BuildKit's `splitCommand`: instruction name, leading flags and the trimmed rest.
fn split_command(line: &str) -> (String, Vec<String>, String) {
    let trimmed = trim_space(line);
    let mut cmd = String::new();
    let mut arguments = None;
    if let Ok(mut pairs) = Grammar::parse(Rule::command_line, trimmed)
        && let Some(top) = pairs.next()
    {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::command => cmd = p.as_str().to_string(),
                Rule::arguments => arguments = Some(p.as_str()),
                _ => {}
            }
        }
    }
    let Some(arguments) = arguments else {
        return (cmd, vec![], String::new());
    };
    let (rest, flags) = extract_flags(arguments);
    (cmd, flags, trim_space(&rest).to_string())
}

/// BuildKit's `extractBuilderFlags`.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    let Ok(mut pairs) = Grammar::parse(Rule::flags_line, line) else {
        return (line.to_string(), vec![]);
    };
    let Some(top) = pairs.next() else {
        return (line.to_string(), vec![]);
    };
    let mut flags = Vec::new();
    let mut rest = String::new();
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::flag => {
                let end = p.as_span().end();
                let value = flag_value(p);
                // A word that is `--` once its quotes are removed also ends the flags.
                if value == "--" {
                    return (line[end..].to_string(), flags);
                }
                flags.push(value);
            }
            Rule::rest => rest = p.as_str().to_string(),
            _ => {}
        }
    }
    (rest, flags)
}

fn flag_value(flag: Pair<'_, Rule>) -> String {
    let mut out = String::new();
    for p in flag.into_inner() {
        match p.as_rule() {
            Rule::flag_dq | Rule::flag_sq => out.push_str(&flag_value(p)),
            Rule::flag_escaped => out.push_str(&p.as_str()[1..]),
            Rule::flag_drop => {}
            _ => out.push_str(p.as_str()),
        }
    }
    out
}

/// BuildKit's `parseWords`: splits on blanks, keeping quotes and escapes in the words.
fn words(rest: &str, escape: char) -> Vec<String> {
    let (rule, word_rule, drop_rule) = if escape == '`' {
        (Rule::words_bt, Rule::word_bt, Rule::w_drop_bt)
    } else {
        (Rule::words_bs, Rule::word_bs, Rule::w_drop_bs)
    };
    let Ok(mut pairs) = Grammar::parse(rule, rest) else {
        return vec![];
    };
    let Some(top) = pairs.next() else {
        return vec![];
    };
    top.into_inner()
        .filter(|p| p.as_rule() == word_rule)
        .filter_map(|w| {
            let mut value = w.as_str().to_string();
            if w.into_inner().flatten().any(|p| p.as_rule() == drop_rule) {
                value.pop();
            }
            (!value.is_empty()).then_some(value)
        })
        .collect()
}

/// Go's `reWhitespace.Split(rest, -1)` for a non-empty `rest`.
fn ws_list(rest: &str) -> Vec<Arg> {
    if rest.is_empty() {
        return vec![];
    }
    let Ok(mut pairs) = Grammar::parse(Rule::ws_list, rest) else {
        return vec![Arg::Word(rest.to_string())];
    };
    pairs
        .next()
        .map(|top| {
            top.into_inner()
                .filter(|p| p.as_rule() == Rule::ws_item)
                .map(|p| Arg::Word(p.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `key value` (legacy) or `k=v k2=v2`. Each pair
/// becomes three words: key, value and the separator (`=` or empty for the legacy form).
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<Arg>, String> {
    let ws = words(rest, escape);
    let Some(first) = ws.first() else {
        return Ok(vec![]);
    };
    if !first.contains('=') {
        let re_ws = ['\t', '\u{b}', '\u{c}', '\r', ' '];
        let mut parts = rest.splitn(2, re_ws);
        let name = parts.next().unwrap_or_default();
        let Some(value) = parts.next() else {
            return Err(format!("{key} must have two arguments"));
        };
        let value = value.trim_start_matches(re_ws);
        return Ok(vec![
            Arg::Word(name.to_string()),
            Arg::Word(value.to_string()),
            Arg::Word(String::new()),
        ]);
    }
    let mut out = Vec::new();
    for word in ws {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::golang::quote(&word)
            ));
        };
        out.push(Arg::Word(k.to_string()));
        out.push(Arg::Word(v.to_string()));
        out.push(Arg::Word("=".to_string()));
    }
    Ok(out)
}

/// Why a text is not usable as JSON form.
enum JsonError {
    /// Not a JSON array at all: fall back to shell form.
    NotJson,
    /// A JSON array with something other than strings: an error, no fallback.
    NotStrings,
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// Deeper nesting than this is treated as malformed JSON (Go's decoder stops at 10,000; the
/// recursive grammar needs a bound well below the stack size).
const MAX_JSON_DEPTH: usize = 512;

fn json_depth_exceeds(text: &str) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// BuildKit's `parseJSON`.
fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') || json_depth_exceeds(rest) {
        return Err(JsonError::NotJson);
    }
    let top = Grammar::parse(Rule::json_array, rest)
        .map_err(|_| JsonError::NotJson)?
        .next()
        .ok_or(JsonError::NotJson)?;
    let mut out = Vec::new();
    let mut not_strings = false;
    for value in top.into_inner().filter(|p| p.as_rule() == Rule::j_value) {
        let inner = value.into_inner().next().ok_or(JsonError::NotJson)?;
        if inner.as_rule() == Rule::j_string {
            let chars = inner.into_inner().next().map(|p| p.as_str()).unwrap_or("");
            out.push(decode_json_string(chars));
        } else {
            not_strings = true;
        }
    }
    if not_strings {
        // Go decodes the whole array before looking at the element types.
        if json_numbers_in_range(rest) {
            return Err(JsonError::NotStrings);
        }
        return Err(JsonError::NotJson);
    }
    Ok(out)
}

/// Go fails to decode numbers that overflow a float64 (a type error, which BuildKit treats like
/// malformed JSON). Checks the numbers of an array known to be valid JSON.
fn json_numbers_in_range(text: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut number = String::new();
    let mut ok = true;
    let mut flush = |number: &mut String| {
        if let Ok(v) = number.parse::<f64>()
            && v.is_infinite()
        {
            ok = false;
        }
        number.clear();
    };
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                flush(&mut number);
                in_string = true;
            }
            '0'..='9' | '-' | '+' | '.' | 'e' | 'E' => number.push(c),
            _ => flush(&mut number),
        }
    }
    flush(&mut number);
    ok
}

/// Decodes the inside of a JSON string the grammar accepted (Go replaces lone surrogates with
/// U+FFFD).
fn decode_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let read_hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> u32 {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0);
        }
        v
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hi = read_hex(&mut chars);
                if (0xD800..0xDC00).contains(&hi) {
                    let mut lookahead = chars.clone();
                    if lookahead.next() == Some('\\') && lookahead.next() == Some('u') {
                        let lo = read_hex(&mut lookahead);
                        if (0xDC00..0xE000).contains(&lo) {
                            chars = lookahead;
                            let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                            continue;
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn json_args(values: Vec<String>) -> Vec<Arg> {
    values.into_iter().map(Arg::Word).collect()
}

/// BuildKit's `parseMaybeJSON`: JSON form, else the whole rest as one word.
fn parse_maybe_json(rest: &str) -> Result<(Vec<Arg>, bool), String> {
    if rest.is_empty() {
        return Ok((vec![], false));
    }
    match parse_json(rest) {
        Ok(values) => Ok((json_args(values), true)),
        Err(JsonError::NotStrings) => Err(NOT_STRINGS.into()),
        Err(JsonError::NotJson) => Ok((vec![Arg::Word(rest.to_string())], false)),
    }
}

/// BuildKit's `parseMaybeJSONToList`: JSON form, else a whitespace-separated list.
fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<Arg>, bool), String> {
    match parse_json(rest) {
        Ok(values) => Ok((json_args(values), true)),
        Err(JsonError::NotStrings) => Err(NOT_STRINGS.into()),
        Err(JsonError::NotJson) => Ok((ws_list(rest), false)),
    }
}

/// BuildKit's `parseHealthConfig`: the type word (`CMD`, `NONE`, ...) then a maybe-JSON command.
fn parse_health_config(rest: &str) -> Result<(Vec<Arg>, bool), String> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((vec![], false));
    }
    let typ = &rest[..sep];
    let cmd = rest[sep..].trim_start_matches(is_space);
    let (mut args, json) = parse_maybe_json(cmd)?;
    args.insert(0, Arg::Word(typ.to_string()));
    Ok((args, json))
}

/// Whether BuildKit looks for heredocs in this instruction: RUN, COPY and ADD (also inside
/// ONBUILD) in shell form.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut node = node;
    if node.name() == "onbuild"
        && let Some(Arg::Trigger(child)) = node.args.first()
    {
        node = child;
    }
    matches!(node.name().as_str(), "add" | "copy" | "run") && !node.json
}

/// BuildKit's `heredocsFromLine`: every word of the line that is a heredoc marker.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset_env = true;
    let empty: Vec<String> = Vec::new();
    let words = lexer.process_words(line, &empty).unwrap_or_default();
    let mut out = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// BuildKit's `ParseHeredoc`: `Some` when `word` is a heredoc marker such as `<<-"EOF"`.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let Ok(mut pairs) = Grammar::parse(Rule::heredoc_word, word) else {
        return Ok(None);
    };
    let Some(top) = pairs.next() else {
        return Ok(None);
    };
    let mut fd = 0u64;
    let mut chomp = false;
    let mut rest = "";
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::heredoc_fd => fd = p.as_str().parse().unwrap_or(0),
            Rule::heredoc_chomp => chomp = true,
            Rule::heredoc_name => rest = p.as_str(),
            _ => {}
        }
    }
    if rest.is_empty() {
        return Ok(None);
    }
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let empty: Vec<String> = Vec::new();
    let words = lexer
        .process_words(rest, &empty)
        .map_err(|e| e.message().to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lexer.raw_quotes = true;
    let raw_words = lexer
        .process_words(rest, &empty)
        .map_err(|e| e.message().to_string())?;
    if raw_words.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        file_descriptor: fd,
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        chomp,
        content: String::new(),
    }))
}

/// BuildKit's `ChompHeredocContent`: strips leading tabs from every line.
pub(crate) fn chomp_heredoc_content(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_extracted_like_buildkit() {
        assert_eq!(
            split_command("COPY --from=a --chown=\"x y\" src dst"),
            (
                "COPY".into(),
                vec!["--from=a".into(), "--chown=x y".into()],
                "src dst".into()
            )
        );
        assert_eq!(
            split_command("CMD --doit -- [ ]"),
            ("CMD".into(), vec!["--doit".into()], "[ ]".into())
        );
        assert_eq!(split_command("RUN"), ("RUN".into(), vec![], String::new()));
    }

    #[test]
    fn directives_follow_go_regexp() {
        assert_eq!(
            match_directive("# escape = `"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(match_directive("#escape="), None);
        assert_eq!(
            match_directive("# escape= "),
            Some(("escape".into(), " ".into()))
        );
        assert_eq!(match_directive("# not a directive"), None);
    }

    #[test]
    fn continuation_rule() {
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ".into(), false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\".into(), true));
        assert_eq!(trim_continuation("\\", '\\'), ("".into(), false));
        assert_eq!(trim_continuation("a `", '`'), ("a ".into(), false));
    }

    #[test]
    fn heredoc_markers() {
        let h = parse_heredoc("3<<-\"EOF\"").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.file_descriptor, h.chomp, h.expand),
            ("EOF", 3, true, false)
        );
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("echo").unwrap().is_none());
    }
}
