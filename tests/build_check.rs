//! `strata build --check`: BuildKit's lint warnings with file:line and the source lines, exit
//! codes for `# check=error=true`, `skip=` and `--build-arg`, nothing built; and the one-line
//! warnings a normal build prints first.

mod store_support;

use store_support::Root;

/// A store with the base image `lintbase` (busybox whose config sets `PATH` and `APP_HOME`) and a
/// context directory.
struct Env {
    root: Root,
    context: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let root = Root::new();
        root.stdout(&[
            "import",
            store_support::busybox_tar().to_str().unwrap(),
            "lintbase",
            "--change",
            "ENV PATH=/usr/bin:/bin",
            "--change",
            "ENV APP_HOME=/app",
        ]);
        let context = tempfile::tempdir().unwrap();
        std::fs::write(context.path().join("app.txt"), "hello\n").unwrap();
        Env { root, context }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.context.path().join(name), text).unwrap();
    }

    /// Runs `strata build <args> CONTEXT`; returns exit code, stdout and stderr.
    fn build(&self, args: &[&str]) -> (i32, String, String) {
        let out = self
            .root
            .strata()
            .arg("build")
            .args(args)
            .arg(self.context.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn image_count(&self) -> usize {
        self.root.stdout(&["images", "-q"]).lines().count()
    }
}

const PROBLEMS: &str = "\
FROM lintbase as Build
MAINTAINER me@example.org
ENV PATH=$APP_HOME/bin:$PAHT
copy app.txt $APP_HOME/
WORKDIR $APP_HOME
CMD serve --port 80
";

#[test]
fn check_prints_buildkits_warnings_and_builds_nothing() {
    let env = Env::new();
    env.write("Dockerfile", PROBLEMS);
    let images = env.image_count();

    let (code, stdout, stderr) = env.build(&["--check"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let expected = "\
Check complete, 6 warnings have been found!

WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/
Stage name 'Build' should be lowercase
Dockerfile:1
--------------------
   1 | >>> FROM lintbase as Build
   2 |     MAINTAINER me@example.org
   3 |     ENV PATH=$APP_HOME/bin:$PAHT
--------------------

WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/
'as' and 'FROM' keywords' casing do not match
Dockerfile:1
--------------------
   1 | >>> FROM lintbase as Build
   2 |     MAINTAINER me@example.org
   3 |     ENV PATH=$APP_HOME/bin:$PAHT
--------------------

WARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/
Maintainer instruction is deprecated in favor of using label
Dockerfile:2
--------------------
   1 |     FROM lintbase as Build
   2 | >>> MAINTAINER me@example.org
   3 |     ENV PATH=$APP_HOME/bin:$PAHT
   4 |     copy app.txt $APP_HOME/
--------------------
";
    assert!(stdout.starts_with(expected), "stdout:\n{stdout}");
    // The rest, by rule: the undefined variable (APP_HOME comes from the base image, PAHT from
    // nowhere), the lower-case instruction and the shell-form CMD.
    for (rule, detail, marked) in [
        (
            "UndefinedVar - https://docs.docker.com/go/dockerfile/rule/undefined-var/",
            "Usage of undefined variable '$PAHT' (did you mean $PATH?)",
            "   3 | >>> ENV PATH=$APP_HOME/bin:$PAHT",
        ),
        (
            "ConsistentInstructionCasing - https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
            "Command 'copy' should match the case of the command majority (uppercase)",
            "   4 | >>> copy app.txt $APP_HOME/",
        ),
        (
            "JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
            "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
            "   6 | >>> CMD serve --port 80",
        ),
    ] {
        let block = format!("\nWARNING: {rule}\n{detail}\nDockerfile:");
        let at = stdout
            .find(&block)
            .unwrap_or_else(|| panic!("no {block:?} in\n{stdout}"));
        assert!(stdout[at..].contains(marked), "{marked:?} in\n{stdout}");
    }
    assert_eq!(stdout.matches("\nWARNING: ").count(), 6, "{stdout}");
    assert!(!stdout.contains("APP_HOME'"), "{stdout}");
    assert_eq!(env.image_count(), images, "--check built an image");
}

#[test]
fn check_error_true_fails_and_skip_leaves_rules_out() {
    let env = Env::new();

    // error=true: the warnings, then the failure, exit 1.
    env.write("Dockerfile", &format!("# check=error=true\n{PROBLEMS}"));
    let (code, stdout, stderr) = env.build(&["--check"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with("Check complete, 6 warnings have been found!\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "lint violation found for rules: StageNameCasing, FromAsCasing, MaintainerDeprecated, \
             ConsistentInstructionCasing, UndefinedVar, JSONArgsRecommended"
        ),
        "{stderr}"
    );

    // skip= drops the rules it names; error=true fails on what is left.
    env.write(
        "Dockerfile",
        &format!(
            "# check=skip=FromAsCasing,StageNameCasing,MaintainerDeprecated,UndefinedVar;error=true\n{PROBLEMS}"
        ),
    );
    let (code, stdout, stderr) = env.build(&["--check"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with("Check complete, 2 warnings have been found!\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nWARNING: ConsistentInstructionCasing - ")
            && stdout.contains("\nWARNING: JSONArgsRecommended - "),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "lint violation found for rules: ConsistentInstructionCasing, JSONArgsRecommended"
        ),
        "{stderr}"
    );

    // Everything skipped: clean, exit 0, even with error=true.
    env.write(
        "Dockerfile",
        &format!("# check=skip=all;error=true\n{PROBLEMS}"),
    );
    let (code, stdout, stderr) = env.build(&["--check"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout, "Check complete, no warnings found.\n");

    // A --build-arg replaces the directive: error=true turned off, one rule skipped.
    env.write("Dockerfile", &format!("# check=error=true\n{PROBLEMS}"));
    let (code, stdout, stderr) = env.build(&[
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with("Check complete, 5 warnings have been found!\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("JSONArgsRecommended"), "{stdout}");
}

#[test]
fn check_build_args_and_errors() {
    let env = Env::new();
    // A build arg does not make a global ARG's default valid (InvalidDefaultArgInFrom), and
    // `-f` names the file in the report.
    env.write(
        "other.Dockerfile",
        "ARG TAG\nFROM lintbase:$TAG\nCMD [\"sh\"]\n",
    );
    let (code, stdout, stderr) = env.build(&[
        "--check",
        "-f",
        env.context
            .path()
            .join("other.Dockerfile")
            .to_str()
            .unwrap(),
        "--build-arg",
        "TAG=latest",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(
            "\nWARNING: InvalidDefaultArgInFrom - https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/\n\
             Default value for ARG lintbase:$TAG results in empty or invalid base image name\n\
             other.Dockerfile:2\n"
        ),
        "{stdout}"
    );

    // A clean file.
    env.write("Dockerfile", "FROM lintbase\nCMD [\"sh\"]\n");
    let (code, stdout, _) = env.build(&["--check"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "Check complete, no warnings found.\n");

    // A Dockerfile that does not parse: the warnings before the error, then the error, exit 1.
    env.write("Dockerfile", "FROM lintbase AS Base\nBADCMD\n");
    let (code, stdout, stderr) = env.build(&["--check"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("\nWARNING: StageNameCasing - "), "{stdout}");
    assert!(
        stderr.contains("dockerfile parse error on line 2: unknown instruction: BADCMD"),
        "{stderr}"
    );
    assert!(stderr.contains("   2 | >>> BADCMD"), "{stderr}");
}

#[test]
fn build_prints_one_line_warnings_first() {
    let env = Env::new();
    env.write("Dockerfile", "FROM lintbase\nMAINTAINER me\nCMD serve\n");
    let (code, _, stderr) = env.build(&["-t", "linted", "--progress", "plain"]);
    assert_eq!(code, 0, "{stderr}");
    let first = stderr
        .find(" - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)\n")
        .unwrap_or_else(|| panic!("{stderr}"));
    let second = stderr
        .find(" - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)\n")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(first < second);
    assert!(stderr.contains("2 warnings found"), "{stderr}");
    assert!(env.root.stdout(&["images"]).contains("linted"));

    // Quiet builds print only the image ID.
    let (code, stdout, stderr) = env.build(&["-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("MaintainerDeprecated"), "{stderr}");
    assert!(stdout.trim().starts_with("sha256:"), "{stdout}");

    // error=true fails the build before anything is built.
    env.write(
        "Dockerfile",
        "# check=error=true\nFROM lintbase\nCMD serve\n",
    );
    let images = env.image_count();
    let (code, _, stderr) = env.build(&["-t", "strict"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("lint violation found for rules: JSONArgsRecommended"),
        "{stderr}"
    );
    assert_eq!(env.image_count(), images);
}
