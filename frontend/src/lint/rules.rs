//! BuildKit's lint rules (`frontend/dockerfile/linter/ruleset.go`): names, descriptions and
//! documentation links, word for word.
//!
//! The ruleset of the commit `testdata/conformance/dockerfile-lint/COMMIT` names is the source
//! for all but two details that later BuildKit releases added: the rule `ExposeInvalidFormat`,
//! and the documentation URL of `InvalidBaseImagePlatform` (that commit gives it none, and
//! `docker build --check` then prints no ` - URL` after the rule name).

/// One lint rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The name `# check=skip=` takes (`JSONArgsRecommended`).
    pub name: &'static str,
    /// What the rule is about, as BuildKit's `docker build --check` JSON carries it.
    pub description: &'static str,
    /// The rule's documentation page.
    pub url: &'static str,
    /// Off unless `# check=experimental=<name>` or `experimental=all` turns it on; `skip` does not
    /// apply to it.
    pub experimental: bool,
}

macro_rules! rules {
    ($($(#[$doc:meta])* $const:ident = $name:literal, $page:literal, $experimental:literal, $description:expr;)*) => {
        $(
            $(#[$doc])*
            pub const $const: Rule = Rule {
                name: $name,
                description: $description,
                url: concat!("https://docs.docker.com/go/dockerfile/rule/", $page, "/"),
                experimental: $experimental,
            };
        )*
        /// Every rule, in BuildKit's order.
        pub const ALL: &[Rule] = &[$($const),*];
    };
}

rules! {
    /// `FROM x AS Name`.
    STAGE_NAME_CASING = "StageNameCasing", "stage-name-casing", false,
        "Stage names should be lowercase";
    /// `FROM x as y`.
    FROM_AS_CASING = "FromAsCasing", "from-as-casing", false,
        "The 'as' keyword should match the case of the 'from' keyword";
    /// A blank line inside a continued instruction.
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation", "no-empty-continuation", false,
        "Empty continuation lines will become errors in a future release";
    /// `run` among `RUN`s, or `Run`.
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing", "consistent-instruction-casing", false,
        "All commands within the Dockerfile should use the same casing (either upper or lower)";
    /// Two stages with one name.
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "duplicate-stage-name", false,
        "Stage names should be unique";
    /// `AS scratch`, `AS context`.
    RESERVED_STAGE_NAME = "ReservedStageName", "reserved-stage-name", false,
        "Reserved words should not be used as stage names";
    /// Shell-form `CMD`/`ENTRYPOINT` without a `SHELL`.
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended", "json-args-recommended", false,
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    /// `MAINTAINER`.
    MAINTAINER_DEPRECATED = "MaintainerDeprecated", "maintainer-deprecated", false,
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    /// `FROM $X` with no global `ARG X`.
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "undefined-arg-in-from", false,
        "FROM command must use declared ARGs";
    /// The first `WORKDIR` of a build is relative.
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath", "workdir-relative-path", false,
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    /// `$X` that no ENV, ARG or base image defines.
    UNDEFINED_VAR = "UndefinedVar", "undefined-var", false,
        "Variables should be defined before their use";
    /// Two `CMD`, `ENTRYPOINT` or `HEALTHCHECK` in one stage.
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed", "multiple-instructions-disallowed", false,
        "Multiple instructions of the same type should not be used in the same stage";
    /// `ENV key value`.
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat", "legacy-key-value-format", false,
        "Legacy key/value format with whitespace separator should not be used";
    /// The base image is for another OS or architecture than the stage.
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform", "invalid-base-image-platform", false,
        "Base image platform does not match expected target platform";
    /// `FROM --platform=$TARGETPLATFORM`.
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform", "redundant-target-platform", false,
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    /// `ARG PASSWORD`, `ENV API_KEY=...`.
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env", false,
        "Sensitive data should not be used in the ARG or ENV commands";
    /// `ARG TAG` + `FROM image:$TAG`: the default gives no valid reference.
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom", "invalid-default-arg-in-from", false,
        "Default value for global ARG results in an empty or invalid base image name";
    /// `FROM --platform=linux/amd64` in a stage whose name names no platform.
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed", false,
        "FROM --platform flag should not use a constant value";
    /// `COPY x` where `.dockerignore` excludes `x`.
    COPY_IGNORED_FILE = "CopyIgnoredFile", "copy-ignored-file", true,
        "Attempting to Copy file that is excluded by .dockerignore";
    /// A comment above a stage or ARG that does not start with its name.
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription", "invalid-definition-description", true,
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.";
    /// `EXPOSE 80/TCP`.
    EXPOSE_PROTO_CASING = "ExposeProtoCasing", "expose-proto-casing", false,
        "Protocol in EXPOSE instruction should be lowercase";
    /// `EXPOSE 127.0.0.1:80:80`.
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat", "expose-invalid-format", false,
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release";
}

impl Rule {
    /// The rule called `name` (exact, as BuildKit compares them).
    pub fn by_name(name: &str) -> Option<&'static Rule> {
        ALL.iter().find(|r| r.name == name)
    }
}
