//! Which rules run and whether warnings fail the build: the `# check=` directive or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, parsed as BuildKit's `linter.ParseLintOptions` does.

use std::collections::BTreeMap;

use super::rules::Rule;
use crate::Directives;
use crate::error::{Error, ErrorKind};
use crate::golang::{parse_bool, quote, trim_space};

/// The build arg that overrides the `# check=` directive (BuildKit reads it from the build
/// options, so a `--build-arg` replaces the file's configuration entirely).
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// A linter configuration: `skip=Rule1,Rule2|all;experimental=Rule|all;error=true|false`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintConfig {
    /// `skip=all`: no rule runs except experimental ones that are turned on.
    pub skip_all: bool,
    /// `skip=A,B`: rules that do not run.
    pub skip: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`: experimental rules turned on (`skip` does not turn them off again).
    pub experimental: Vec<String>,
    /// `error=true`: any warning fails the build (and `build --check`).
    pub error: bool,
}

fn rule_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|r| trim_space(r).to_string())
        .collect()
}

impl LintConfig {
    /// Parses a check configuration. Errors are BuildKit's messages (`invalid check option "x"`).
    pub fn parse(text: &str) -> Result<LintConfig, String> {
        let text = trim_space(text);
        let mut config = LintConfig::default();
        if text.is_empty() {
            return Ok(config);
        }
        // `strings.SplitN(s, ";", 3)`: a third option keeps any further `;` in its value.
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", quote(part)));
            };
            match trim_space(key) {
                "skip" => match trim_space(value) {
                    "all" => config.skip_all = true,
                    v => config.skip = rule_list(v),
                },
                "experimental" => match trim_space(value) {
                    "all" => config.experimental_all = true,
                    v => config.experimental = rule_list(v),
                },
                "error" => {
                    let v = trim_space(value);
                    config.error = parse_bool(v).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            quote(part),
                            quote(v)
                        )
                    })?;
                }
                other => return Err(format!("invalid check option {}", quote(other))),
            }
        }
        Ok(config)
    }

    /// The configuration a build uses: the `BUILDKIT_DOCKERFILE_CHECK` build arg when given, else
    /// the `# check=` directive, else everything but experimental rules.
    pub fn resolve(
        directives: &Directives,
        build_args: &BTreeMap<String, String>,
    ) -> Result<LintConfig, Error> {
        let (text, context) = match build_args.get(CHECK_BUILD_ARG) {
            Some(v) => (
                v.as_str(),
                format!("failed to parse build-arg:{CHECK_BUILD_ARG}"),
            ),
            None => (
                directives.check.as_deref().unwrap_or(""),
                "failed to parse check options".to_string(),
            ),
        };
        LintConfig::parse(text)
            .map_err(|m| Error::new(ErrorKind::Syntax, format!("{context}: {m}")))
    }

    /// Whether `rule` runs under this configuration.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !self.skip_all && !self.skip.iter().any(|r| r == rule.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::rules;

    #[test]
    fn parses_like_buildkit() {
        let c = LintConfig::parse(" skip = A, B ;error=true").unwrap();
        assert_eq!(c.skip, vec!["A", "B"]);
        assert!(c.error && !c.skip_all);
        let c = LintConfig::parse("skip=all;experimental=CopyIgnoredFile").unwrap();
        assert!(c.skip_all);
        assert!(c.enabled(&rules::COPY_IGNORED_FILE));
        assert!(!c.enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
        assert!(!c.enabled(&rules::JSON_ARGS_RECOMMENDED));
        assert_eq!(
            LintConfig::parse("skip").unwrap_err(),
            "invalid check option \"skip\""
        );
        assert_eq!(
            LintConfig::parse("warn=1").unwrap_err(),
            "invalid check option \"warn\""
        );
        assert_eq!(
            LintConfig::parse("error=maybe").unwrap_err(),
            "failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        // Only three options are split off; the rest stays in the third value.
        let c = LintConfig::parse("error=false;skip=A;skip=B;C").unwrap();
        assert_eq!(c.skip, vec!["B;C"]);
        assert_eq!(LintConfig::parse("").unwrap(), LintConfig::default());
    }

    #[test]
    fn the_build_arg_replaces_the_directive() {
        let directives = Directives {
            check: Some("error=true".into()),
            ..Directives::default()
        };
        let args = BTreeMap::from([(CHECK_BUILD_ARG.to_string(), "skip=all".to_string())]);
        let c = LintConfig::resolve(&directives, &args).unwrap();
        assert!(c.skip_all && !c.error);
        let c = LintConfig::resolve(&directives, &BTreeMap::new()).unwrap();
        assert!(c.error);
        let err = LintConfig::resolve(
            &directives,
            &BTreeMap::from([(CHECK_BUILD_ARG.to_string(), "bad".to_string())]),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"bad\""
        );
    }
}
