//! Feeds arbitrary bytes through everything the builder runs on a Dockerfile: parse, plan,
//! evaluate every stage, and through the lexer and the `.dockerignore` reader and matcher.
//! Errors are expected; a panic, a hang or an out-of-bounds error location is a bug.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use strata_frontend::dockerignore::{Matcher, read_patterns};
use strata_frontend::eval::{BaseState, evaluate_stage};
use strata_frontend::plan::{BuildOptions, Platform, plan};
use strata_frontend::shell::Lexer;

fn check(text: &str, err: &strata_frontend::Error) {
    if let Some(loc) = err.location() {
        assert!(loc.span.offset + loc.span.len <= text.len());
    }
    let _ = err.render();
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Ok(ast) = strata_frontend::parse_ast(text, "Dockerfile") {
        let _ = strata_frontend::ast::dump(&ast.nodes);
    }
    let _ = strata_frontend::parse_instruction(text);
    match strata_frontend::parse(text, "Dockerfile") {
        Err(e) => check(text, &e),
        Ok(df) => {
            let opts = BuildOptions {
                build_args: BTreeMap::from([("A".to_string(), "1".to_string())]),
                target: None,
                target_platform: Platform::new("linux", "arm64", ""),
                build_platform: Platform::new("linux", "amd64", ""),
            };
            match plan(&df, &opts) {
                Err(e) => check(text, &e),
                Ok(p) => {
                    for s in &p.stages {
                        let base = BaseState::from_image(
                            &["PATH=/bin".to_string()],
                            "",
                            &["RUN x".to_string()],
                            "linux",
                        );
                        if let Err(e) = evaluate_stage(&df, &p, s.index, base) {
                            check(text, &e);
                        }
                    }
                }
            }
        }
    }

    let env = vec![("A".to_string(), "1".to_string())];
    for escape in ['\\', '`'] {
        let _ = Lexer::new(escape).process_word(text, &env);
    }
    // A few patterns suffice: compiling hundreds of regexes per input only slows the search.
    let head: String = text.lines().take(16).collect::<Vec<_>>().join("\n");
    if let Ok(patterns) = read_patterns(&head) {
        if let Ok(m) = Matcher::new(&patterns) {
            for line in text.lines().take(8) {
                let _ = m.matches(line);
                let _ = m.decide_dir(line);
            }
        }
    }
});
