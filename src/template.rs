//! `--format` templates: the part of Go's `text/template` that Docker users put in scripts,
//! over the JSON objects the commands already print. `{{.State.Pid}}` prints a field,
//! `{{json .Config.Env}}` its JSON, `{{index .Labels "k"}}` a key, `{{upper|lower|title .X}}`,
//! `{{join .Args " "}}`; text between actions is printed as is, with the Docker CLI's `\t` and
//! `\n` escapes. Values print as Go's `fmt` prints decoded JSON (`<no value>` for a missing
//! key, `[a b]` for a list, `map[k:v]` for an object). Anything else (`range`, `if`, pipes) is
//! refused with a message rather than printed wrongly.

use std::io::Write;

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Call),
}

/// `FUNCTION ARG...` or a bare `.Path`.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    function: Option<String>,
    args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.A.B` (`.` alone: the whole value).
    Path(Vec<String>),
    Str(String),
}

impl Template {
    /// Parses `text` (after the CLI's `\t`/`\n` escapes).
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow::anyhow!("template: unclosed action in {text:?}"))?;
            let action = after[..end]
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            parts.push(Part::Action(parse_call(action)?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The template applied to `value`.
    pub fn render(&self, value: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(call) => out.push_str(&call.run(value)?),
            }
        }
        Ok(out)
    }

    /// The header line of a `table`: the text as is, each action replaced by the header of the
    /// field it prints.
    fn header(&self, name_of: &dyn Fn(&str) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Action(Call { args, .. }) => args
                    .iter()
                    .find_map(|a| match a {
                        Arg::Path(path) => path.last().map(|f| name_of(f)),
                        Arg::Str(_) => None,
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// Prints `rows` (what `--format json` prints) through `format`: a template for each row, or
/// with `table ` before it a header line of `name_of` each field, and cells split at tabs and
/// aligned as the Docker CLI's tables are.
pub fn print_rows(
    format: &str,
    rows: &[Value],
    name_of: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            let template = Template::parse(rest.trim_start())?;
            let mut lines = vec![template.header(name_of)];
            for row in rows {
                lines.push(template.render(row)?);
            }
            let table: Vec<Vec<String>> = lines
                .iter()
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect();
            crate::commands::image_output::print_table(&table)?;
        }
        _ => {
            let template = Template::parse(format)?;
            let mut out = std::io::stdout().lock();
            for row in rows {
                writeln!(out, "{}", template.render(row)?)?;
            }
        }
    }
    Ok(())
}

/// A field's name in capitals with spaces, the header Docker shows for fields it does not name
/// otherwise (`CreatedAt` -> `CREATED AT`).
pub fn default_header(field: &str) -> String {
    let mut out = String::new();
    for (i, c) in field.chars().enumerate() {
        if i > 0 && c.is_uppercase() && !out.ends_with(' ') {
            let previous_upper = field[..field.char_indices().nth(i).map_or(0, |(b, _)| b)]
                .chars()
                .last()
                .is_some_and(char::is_uppercase);
            if !previous_upper {
                out.push(' ');
            }
        }
        out.extend(c.to_uppercase());
    }
    out
}

fn parse_call(action: &str) -> anyhow::Result<Call> {
    let words = split_words(action)?;
    let Some(first) = words.first() else {
        anyhow::bail!("template: empty action");
    };
    let arg = |w: &String| -> anyhow::Result<Arg> {
        if let Some(quoted) = w.strip_prefix('"') {
            return Ok(Arg::Str(quoted.trim_end_matches('"').to_string()));
        }
        if w == "." {
            return Ok(Arg::Path(Vec::new()));
        }
        match w.strip_prefix('.') {
            Some(path) if !path.is_empty() => {
                Ok(Arg::Path(path.split('.').map(str::to_string).collect()))
            }
            _ => anyhow::bail!("template: {w:?} is not a field (.Name) or a string"),
        }
    };
    if first.starts_with('.') {
        if words.len() > 1 {
            anyhow::bail!("template: {action:?}: a field takes no arguments");
        }
        return Ok(Call {
            function: None,
            args: vec![arg(first)?],
        });
    }
    let arity = match first.as_str() {
        "json" | "upper" | "lower" | "title" => 1,
        "index" | "join" => 2,
        other => anyhow::bail!(
            "template: {other:?} is not supported (fields, json, index, join, upper, lower, title are)"
        ),
    };
    if words.len() != arity + 1 {
        anyhow::bail!("template: {first} takes {arity} argument(s): {action:?}");
    }
    Ok(Call {
        function: Some(first.clone()),
        args: words[1..].iter().map(arg).collect::<anyhow::Result<_>>()?,
    })
}

/// Words split at spaces, a double-quoted string (Go escapes `\"` and `\\`) kept whole with its
/// opening quote.
fn split_words(action: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            word.push(c);
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.push(chars.next().unwrap_or('\\')),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => word.push(c),
                }
            }
            if !closed {
                anyhow::bail!("template: unterminated string in {action:?}");
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

impl Call {
    fn run(&self, root: &Value) -> anyhow::Result<String> {
        let value = |a: &Arg| -> Value {
            match a {
                Arg::Path(path) => lookup(root, path),
                Arg::Str(s) => Value::String(s.clone()),
            }
        };
        let first = self.args.first().map(&value).unwrap_or(Value::Null);
        Ok(match self.function.as_deref() {
            None => go_print(&first),
            Some("json") => serde_json::to_string(&first)?,
            Some("upper") => go_print(&first).to_uppercase(),
            Some("lower") => go_print(&first).to_lowercase(),
            Some("title") => {
                let text = go_print(&first);
                let mut chars = text.chars();
                chars
                    .next()
                    .map(|c| c.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
            Some("index") => {
                let key = self.args.get(1).map(&value).unwrap_or(Value::Null);
                let found = match (&first, &key) {
                    (Value::Object(m), Value::String(k)) => m.get(k).cloned(),
                    (Value::Array(a), Value::String(k)) => {
                        k.parse::<usize>().ok().and_then(|i| a.get(i).cloned())
                    }
                    _ => None,
                };
                go_print(&found.unwrap_or(Value::Null))
            }
            Some("join") => {
                let separator = self.args.get(1).map(&value).unwrap_or(Value::Null);
                let items = match &first {
                    Value::Array(items) => items.iter().map(go_print).collect::<Vec<_>>(),
                    Value::Null => Vec::new(),
                    other => anyhow::bail!("template: join wants a list, not {other}"),
                };
                items.join(&go_print(&separator))
            }
            Some(other) => anyhow::bail!("template: {other:?} is not supported"),
        })
    }
}

/// `path` below `root`; `null` where a key is missing (Go prints `<no value>`).
fn lookup(root: &Value, path: &[String]) -> Value {
    path.iter()
        .try_fold(root, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A decoded JSON value as Go's `fmt` prints it (`%v`).
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_print).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print(&map[*k])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

/// Go's `%v` of a float64: the shortest decimal that reads back, exponent form from 1e21.
fn go_float(f: f64) -> String {
    if f.abs() >= 1e21 || (f != 0.0 && f.abs() < 1e-4) {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) => {
                let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => text,
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, value: &Value) -> String {
        Template::parse(template).unwrap().render(value).unwrap()
    }

    #[test]
    fn fields_functions_and_values_print_as_go_does() {
        let v = json!({
            "Id": "abc", "State": {"Pid": 42, "Running": true, "Ratio": 1.5},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"k": "v", "a b": "c"}, "Cmd": null},
        });
        assert_eq!(render("{{.Id}}", &v), "abc");
        assert_eq!(
            render("pid={{ .State.Pid }} {{.State.Running}}", &v),
            "pid=42 true"
        );
        assert_eq!(render("{{.State.Ratio}}", &v), "1.5");
        assert_eq!(render("{{.Config.Env}}", &v), "[A=1 B=2]");
        assert_eq!(render("{{.Config.Labels}}", &v), "map[a b:c k:v]");
        assert_eq!(
            render("{{.Config.Cmd}} {{.Nope.Deeper}}", &v),
            "<no value> <no value>"
        );
        assert_eq!(render("{{json .Config.Env}}", &v), r#"["A=1","B=2"]"#);
        assert_eq!(render(r#"{{index .Config.Labels "a b"}}"#, &v), "c");
        assert_eq!(render(r#"{{join .Config.Env ","}}"#, &v), "A=1,B=2");
        assert_eq!(render("{{upper .Id}}/{{title .Id}}", &v), "ABC/Abc");
        assert_eq!(render(r"{{.Id}}\t{{.State.Pid}}\n", &v), "abc\t42\n");
        assert_eq!(render("{{json .}}", &json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn what_is_not_supported_is_refused() {
        for bad in [
            "{{range .Env}}{{.}}{{end}}",
            "{{.Id | upper}}",
            "{{.Id",
            "{{json}}",
            r#"{{index .A "unterminated}}"#,
            "{{Id}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let t = Template::parse("{{.ID}}\t{{.Names}} {{json .Labels}}").unwrap();
        assert_eq!(t.header(&default_header), "ID\tNAMES LABELS");
        assert_eq!(default_header("CreatedAt"), "CREATED AT");
        assert_eq!(default_header("ID"), "ID");
    }

    proptest::proptest! {
        /// No template text panics the parser or the renderer.
        #[test]
        fn any_text_is_a_template_or_an_error(
            text in "[{}. a-zA-Z\"\\|()0-9-]{0,40}",
            other in proptest::prelude::any::<String>(),
        ) {
            for text in [&text, &format!("{{{{.{other}}}}}"), &other] {
                if let Ok(t) = Template::parse(text) {
                    let _ = t.render(&json!({"a": [1, {"b": null}], "B": "x"}));
                    let _ = t.header(&default_header);
                }
            }
        }
    }
}
