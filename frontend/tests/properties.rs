//! Property tests: no input panics the frontend, and a few laws hold for all inputs.

use std::collections::BTreeMap;

use proptest::prelude::*;
use strata_frontend::dockerignore::Matcher;
use strata_frontend::eval::{BaseState, evaluate_stage};
use strata_frontend::plan::{BuildOptions, Platform, plan};
use strata_frontend::shell::Lexer;

/// Fragments that exercise the grammar's corners, glued into Dockerfile-like text.
fn dockerfile_like() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("FROM busybox AS a\n".to_string()),
        Just("FROM a\n".to_string()),
        Just("FROM --platform=$BUILDPLATFORM scratch\n".to_string()),
        Just("ARG X=${Y:-1} Z\n".to_string()),
        Just("ENV A=\"b c\" D=$X\n".to_string()),
        Just("ENV legacy value with spaces\n".to_string()),
        Just("RUN echo hi \\\n".to_string()),
        Just("RUN --mount=type=cache,target=/c,from=a echo\n".to_string()),
        Just("RUN <<EOF\n".to_string()),
        Just("EOF\n".to_string()),
        Just("COPY --from=0 --chmod=755 <<-X /dst\n".to_string()),
        Just("CMD [\"a\", \"b\"]\n".to_string()),
        Just("CMD [1, \n".to_string()),
        Just("HEALTHCHECK --interval=5s CMD true\n".to_string()),
        Just("ONBUILD RUN x\n".to_string()),
        Just("# escape=`\n".to_string()),
        Just("# comment\n".to_string()),
        Just("\n".to_string()),
        Just("EXPOSE 80/tcp $P\n".to_string()),
        Just("WORKDIR ${W:?need W}\n".to_string()),
        "[ -~\t\\\\`$'\"{}<>=\\[\\]]{0,30}\n",
    ];
    prop::collection::vec(fragment, 0..14).prop_map(|v| v.concat())
}

fn options() -> BuildOptions {
    BuildOptions {
        build_args: BTreeMap::from([("X".to_string(), "1".to_string())]),
        target: None,
        target_platform: Platform::new("linux", "amd64", ""),
        build_platform: Platform::new("linux", "amd64", ""),
    }
}

/// Runs everything the builder would run on `text`; errors are fine, panics are not, and error
/// locations stay inside the text.
fn exercise(text: &str) {
    let check = |e: &strata_frontend::Error| {
        if let Some(loc) = e.location() {
            assert!(loc.span.offset + loc.span.len <= text.len(), "{e:?}");
            assert!(loc.span.start.line >= 1);
        }
        let _ = e.render();
    };
    if let Ok(ast) = strata_frontend::parse_ast(text, "Dockerfile") {
        let _ = strata_frontend::ast::dump(&ast.nodes);
        for pair in ast.nodes.windows(2) {
            assert!(pair[0].end_line < pair[1].start_line);
        }
        for n in &ast.nodes {
            assert!(n.start_line <= n.end_line);
        }
    }
    let df = match strata_frontend::parse(text, "Dockerfile") {
        Ok(df) => df,
        Err(e) => return check(&e),
    };
    let p = match plan(&df, &options()) {
        Ok(p) => p,
        Err(e) => return check(&e),
    };
    for s in &p.stages {
        if let Err(e) = evaluate_stage(&df, &p, s.index, BaseState::scratch("linux")) {
            check(&e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        exercise(&text);
    }

    #[test]
    fn dockerfile_like_text_never_panics(text in dockerfile_like()) {
        exercise(&text);
    }

    #[test]
    fn lexer_never_panics(word in "\\PC{0,60}", escape in prop::sample::select(vec!['\\', '`'])) {
        let env = vec![("A".to_string(), "1".to_string())];
        let _ = Lexer::new(escape).process_word(&word, &env);
        let _ = Lexer::new(escape).process_words(&word, &env);
    }

    #[test]
    fn plain_words_expand_to_themselves(word in "[a-zA-Z0-9_./:,=+-]{0,40}") {
        let env: Vec<(String, String)> = Vec::new();
        let e = Lexer::new('\\').process_word(&word, &env).unwrap();
        prop_assert_eq!(&e.value, &word);
        prop_assert!(e.matched.is_empty() && e.unmatched.is_empty());
    }

    #[test]
    fn single_quotes_keep_everything(inner in "[^']{0,40}") {
        let env = vec![("A".to_string(), "1".to_string())];
        let e = Lexer::new('\\').process_word(&format!("'{inner}'"), &env).unwrap();
        prop_assert_eq!(e.value, inner);
    }

    #[test]
    fn set_variables_are_substituted(name in "[A-Z_][A-Z0-9_]{0,8}", value in "[a-z ]{0,10}") {
        let env = vec![(name.clone(), value.clone())];
        let e = Lexer::new('\\').process_word(&format!("<${{{name}}}>"), &env).unwrap();
        prop_assert_eq!(e.value, format!("<{value}>"));
        prop_assert!(e.matched.contains(&name));
    }

    #[test]
    fn matcher_never_panics(patterns in prop::collection::vec("\\PC{0,12}", 0..5), path in "\\PC{0,30}") {
        if let Ok(m) = Matcher::new(&patterns) {
            let _ = m.matches(&path);
            let _ = m.matches_single_parent(&path);
            let _ = m.decide_dir(&path);
        }
    }

    #[test]
    fn literal_patterns_exclude_their_subtree(dir in "[a-z]{1,8}(/[a-z]{1,8}){0,2}", child in "[a-z]{1,8}") {
        let inside = format!("{dir}/{child}");
        let m = Matcher::new(std::slice::from_ref(&dir)).unwrap();
        prop_assert!(m.matches(&dir).unwrap());
        prop_assert!(m.matches(&inside).unwrap());
        let reinclude = Matcher::new(&[dir.clone(), format!("!{inside}")]).unwrap();
        prop_assert!(!reinclude.matches(&inside).unwrap());
        prop_assert_eq!(
            reinclude.decide_dir(&dir).unwrap(),
            strata_frontend::dockerignore::DirDecision::ExcludeButDescend
        );
    }
}
