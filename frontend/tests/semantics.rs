//! Behaviour of the planner and the stage evaluator, case by case, as BuildKit behaves.

use std::collections::BTreeMap;

use strata_frontend::eval::{BaseState, EvaluatedStage, Expanded, evaluate_stage};
use strata_frontend::mount::MountType;
use strata_frontend::plan::{Base, BuildOptions, Plan, Platform, SourceRef, plan};
use strata_frontend::{Dockerfile, parse};

fn options(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        target_platform: Platform::new("linux", "arm64", ""),
        build_platform: Platform::new("linux", "amd64", ""),
    }
}

fn planned(text: &str, args: &[(&str, &str)], target: Option<&str>) -> (Dockerfile, Plan) {
    let df = parse(text, "Dockerfile").unwrap_or_else(|e| panic!("{}", e.render()));
    let p = plan(&df, &options(args, target)).unwrap_or_else(|e| panic!("{}", e.render()));
    (df, p)
}

fn plan_error(text: &str, target: Option<&str>) -> String {
    let df = parse(text, "Dockerfile").unwrap_or_else(|e| panic!("{}", e.render()));
    plan(&df, &options(&[], target)).unwrap_err().to_string()
}

fn evaluate(df: &Dockerfile, p: &Plan, stage: usize, base: BaseState) -> EvaluatedStage {
    evaluate_stage(df, p, stage, base).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn env_value(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[test]
fn only_needed_stages_in_dependency_order() {
    let (_, p) = planned(
        "FROM busybox AS base\nFROM base AS build\nRUN make\nFROM busybox AS unused\n\
         FROM busybox AS tools\nFROM scratch\nCOPY --from=build /out /\nCOPY --from=3 /t /\n",
        &[],
        None,
    );
    let indices: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(indices, vec![0, 1, 3, 4]);
    assert_eq!(p.stages[1].base, Base::Stage(0));
    assert_eq!(p.stages[3].base, Base::Scratch);
    assert_eq!(p.stages[3].depends_on, vec![1, 3]);
    assert_eq!(p.waves(), vec![vec![0, 3], vec![1], vec![4]]);
    assert_eq!(p.target, 3);
}

#[test]
fn targets_are_case_insensitive_and_unknown_ones_fail() {
    let (_, p) = planned("FROM busybox AS Build\nFROM busybox\n", &[], Some("BUILD"));
    assert_eq!(p.stages.len(), 1);
    assert_eq!(p.stages[0].name.as_deref(), Some("build"));
    assert_eq!(
        plan_error("FROM busybox AS a\n", Some("b")),
        "target stage \"b\" could not be found"
    );
}

#[test]
fn references_resolve_to_stages_indices_or_images() {
    let (df, p) = planned(
        "FROM busybox AS one\nFROM busybox\nCOPY --from=ONE /a /a\nCOPY --from=0 /b /b\n\
         COPY --from=nginx:1.27 /c /c\nRUN --mount=type=bind,from=one,target=/m true\n\
         RUN --mount=type=cache,from=alpine,target=/c true\n",
        &[],
        None,
    );
    let last = p.stages.last().unwrap();
    assert_eq!(last.depends_on, vec![0]);
    assert_eq!(last.source_images, vec!["nginx:1.27", "alpine"]);
    let ev = evaluate(&df, &p, 1, BaseState::scratch("linux"));
    let Expanded::Copy(c) = &ev.steps[2].expanded else {
        panic!()
    };
    assert_eq!(c.from, Some(SourceRef::Image("nginx:1.27".into())));
    let Expanded::Run(r) = &ev.steps[3].expanded else {
        panic!()
    };
    assert_eq!(r.mounts[0].kind, MountType::Bind);
    assert_eq!(r.mount_sources, vec![Some(SourceRef::Stage(0))]);
}

#[test]
fn cycles_forward_references_and_bad_indices_fail() {
    assert_eq!(
        plan_error("FROM busybox AS a\nCOPY --from=a /x /x\n", None),
        "circular dependency detected on stage: a"
    );
    assert_eq!(
        plan_error(
            "FROM busybox AS a\nCOPY --from=c /x /x\nFROM busybox AS b\nCOPY --from=a /x /x\n\
             FROM busybox AS c\nCOPY --from=b /x /x\n",
            None
        ),
        "circular dependency detected on stage: a"
    );
    assert_eq!(
        plan_error(
            "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n",
            Some("a")
        ),
        "cannot copy from stage \"b\", it needs to be defined before current stage \"a\""
    );
    assert_eq!(
        plan_error("FROM busybox\nCOPY --from=5 /x /x\n", None),
        "invalid stage index 5"
    );
    assert_eq!(
        plan_error("ARG X\n", None),
        "dockerfile contains no stages to build"
    );
}

#[test]
fn global_args_feed_from_and_need_redeclaring_in_stages() {
    let (df, p) = planned(
        "ARG TAG=1.36\nARG IMG=busybox:${TAG}\nFROM ${IMG}\nRUN echo $TAG\nARG TAG\nRUN echo $TAG\n",
        &[],
        None,
    );
    assert_eq!(p.stages[0].base, Base::Image("busybox:1.36".into()));
    assert!(p.stages[0].used_global_args.contains("IMG"));
    let ev = evaluate(&df, &p, 0, BaseState::scratch("linux"));
    assert_eq!(env_value(&ev.steps[0].env, "TAG"), None);
    assert_eq!(env_value(&ev.steps[2].env, "TAG"), Some("1.36".into()));
    let (_, p) = planned("ARG IMG=busybox\nFROM $IMG\n", &[("IMG", "alpine")], None);
    assert_eq!(p.stages[0].base, Base::Image("alpine".into()));
    assert_eq!(
        plan_error("ARG IMG\nFROM ${IMG}\n", None),
        "base name (${IMG}) should not be blank"
    );
}

#[test]
fn predefined_platform_args() {
    let (df, p) = planned(
        "FROM --platform=$BUILDPLATFORM busybox\nARG TARGETPLATFORM TARGETARCH BUILDOS TARGETSTAGE\n",
        &[],
        None,
    );
    assert_eq!(
        p.stages[0].platform,
        Some(Platform::new("linux", "amd64", ""))
    );
    let ev = evaluate(&df, &p, 0, BaseState::scratch("linux"));
    let Expanded::Arg(args) = &ev.steps[0].expanded else {
        panic!()
    };
    let values: Vec<Option<&str>> = args.iter().map(|a| a.value.as_deref()).collect();
    assert_eq!(
        values,
        vec![Some("linux/arm64"), Some("arm64"), Some("linux"), Some("")]
    );
    let (_, p) = planned("FROM scratch AS final\n", &[], None);
    assert!(
        p.global_args
            .contains(&("TARGETSTAGE".to_string(), "final".to_string()))
    );
}

#[test]
fn base_image_env_is_the_starting_environment() {
    let (df, p) = planned(
        "FROM img\nENV PATH=$PATH:/x\nENV A=1 B=$A\nRUN true\n",
        &[],
        None,
    );
    let base = BaseState::from_image(&["PATH=/bin".into(), "A=0".into()], "/w", &[], "linux");
    let ev = evaluate(&df, &p, 0, base);
    let Expanded::Env(pairs) = &ev.steps[0].expanded else {
        panic!()
    };
    assert_eq!(pairs[0], ("PATH".into(), "/bin:/x".into()));
    let Expanded::Env(pairs) = &ev.steps[1].expanded else {
        panic!()
    };
    // All words of one ENV are expanded before any is set.
    assert_eq!(pairs[1], ("B".into(), "0".into()));
    assert_eq!(
        ev.final_state.config_env_strings(),
        vec!["PATH=/bin:/x", "A=1", "B=0"]
    );
    assert_eq!(ev.steps[2].workdir, "/w");
}

#[test]
fn default_path_is_added_when_the_base_has_none() {
    let base = BaseState::from_image(&[], "", &[], "linux");
    assert_eq!(
        base.config_env_strings(),
        vec![format!("PATH={}", strata_frontend::eval::DEFAULT_PATH)]
    );
}

#[test]
fn arg_after_inherited_env_wins_and_env_after_arg_wins() {
    let (df, p) = planned(
        "FROM img\nARG FOO\nRUN echo $FOO\nENV FOO=env\nRUN echo $FOO\n",
        &[("FOO", "arg")],
        None,
    );
    let base = BaseState::from_image(&["FOO=image".into()], "", &[], "linux");
    let ev = evaluate(&df, &p, 0, base);
    assert_eq!(env_value(&ev.steps[1].env, "FOO"), Some("arg".into()));
    assert_eq!(env_value(&ev.steps[3].env, "FOO"), Some("env".into()));
    // ARG values never reach the image config.
    assert!(
        ev.final_state
            .config_env_strings()
            .contains(&"FOO=env".to_string())
    );
}

#[test]
fn build_args_used_by_each_step() {
    let (df, p) = planned(
        "FROM img\nARG V=1 W\nENV X=$V\nWORKDIR /src/$W\nLABEL plain=yes\nRUN make\n",
        &[("W", "w")],
        None,
    );
    let ev = evaluate(&df, &p, 0, BaseState::scratch("linux"));
    let used = |i: usize| -> Vec<String> {
        ev.steps[i]
            .used_build_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    assert_eq!(used(1), vec!["V=1"]);
    assert_eq!(used(2), vec!["W=w"]);
    assert!(used(3).is_empty());
    // RUN sees every ARG in scope in its environment.
    assert_eq!(used(4), vec!["V=1", "W=w"]);
    let Expanded::Run(r) = &ev.steps[4].expanded else {
        panic!()
    };
    assert_eq!(
        r.history_build_args,
        vec![("V".into(), "1".into()), ("W".into(), "w".into())]
    );
}

#[test]
fn unused_build_args_and_proxies() {
    let (_, p) = planned(
        "ARG G\nFROM img\nARG S\n",
        &[
            ("G", "1"),
            ("S", "2"),
            ("X", "3"),
            ("http_proxy", "http://p:3128"),
            ("TARGETARCH", "arm64"),
        ],
        None,
    );
    assert_eq!(p.unused_build_args, vec!["X"]);
    assert_eq!(
        p.proxy_env,
        vec![
            ("HTTP_PROXY".to_string(), "http://p:3128".to_string()),
            ("http_proxy".to_string(), "http://p:3128".to_string())
        ]
    );
}

#[test]
fn child_stages_inherit_the_parent_state_and_onbuild() {
    let (df, p) = planned(
        "FROM img AS parent\nARG A=1\nENV E=2\nWORKDIR /app\nONBUILD RUN echo child\n\
         FROM parent\nRUN echo $A $E\n",
        &[],
        None,
    );
    let parent = evaluate(&df, &p, 0, BaseState::scratch("linux"));
    assert_eq!(parent.final_state.onbuild, vec!["RUN echo child"]);
    let child = evaluate(&df, &p, 1, parent.final_state.clone());
    assert!(child.steps[0].from_onbuild);
    assert_eq!(child.steps[1].workdir, "/app");
    assert_eq!(env_value(&child.steps[1].env, "A"), Some("1".into()));
    let Expanded::Run(r) = &child.steps[1].expanded else {
        panic!()
    };
    assert_eq!(r.history_build_args, vec![("A".into(), "1".into())]);
}

#[test]
fn onbuild_triggers_of_the_base_image_run_first() {
    let (df, p) = planned("FROM img\nRUN two\n", &[], None);
    let base = BaseState::from_image(&[], "", &["ENV T=1".into(), "RUN one".into()], "linux");
    let ev = evaluate(&df, &p, 0, base);
    assert_eq!(ev.steps.len(), 3);
    assert!(ev.steps[0].from_onbuild && ev.steps[1].from_onbuild);
    assert_eq!(env_value(&ev.steps[2].env, "T"), Some("1".into()));
    let bad = BaseState::from_image(&[], "", &["FROM x".into()], "linux");
    let err = evaluate_stage(&df, &p, 0, bad).unwrap_err();
    assert_eq!(err.to_string(), "*instructions.Stage is not a command type");
    assert_eq!(err.location().unwrap().span.start.line, 1);
}

#[test]
fn heredocs_expand_unless_quoted() {
    let (df, p) = planned(
        "FROM img\nARG NAME=world\nCOPY <<A <<\"B\" /dst/\nhi $NAME\nA\nbye $NAME\nB\n",
        &[],
        None,
    );
    let ev = evaluate(&df, &p, 0, BaseState::scratch("linux"));
    let Expanded::Copy(c) = &ev.steps[1].expanded else {
        panic!()
    };
    assert_eq!(c.inline[0].data, "hi world\n");
    assert_eq!(c.inline[1].data, "bye $NAME\n");
}

#[test]
fn dispatch_time_validation_matches_buildkit() {
    let err = |text: &str| {
        let (df, p) = planned(text, &[], None);
        evaluate_stage(&df, &p, 0, BaseState::scratch("linux"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("FROM img\nSTOPSIGNAL SIGBOGUS\n"),
        "Invalid signal: SIGBOGUS"
    );
    assert_eq!(err("FROM img\nEXPOSE 80/tcpx\n"), "invalid proto: tcpx");
    assert_eq!(
        err("FROM img\nCOPY --chmod=999 a b\n"),
        "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777"
    );
    assert_eq!(
        err("FROM img\nRUN --mount=type=secret,id=x,sharing=locked true\n"),
        "secret mount should not define sharing"
    );
    assert_eq!(
        err("FROM img\nVOLUME $EMPTY\n"),
        "VOLUME specified can not be an empty string"
    );
    let (df, p) = planned("FROM img\nEXPOSE 80 8000-8001/udp\n", &[], None);
    let ev = evaluate(&df, &p, 0, BaseState::scratch("linux"));
    let Expanded::Expose(ports) = &ev.steps[0].expanded else {
        panic!()
    };
    assert_eq!(ports, &["80/tcp", "8000/udp", "8001/udp"]);
}

#[test]
fn errors_point_at_the_instruction() {
    let text = "FROM img\n\nRUN --network=bridge true\n";
    let err = parse(text, "Dockerfile.dev").unwrap_err();
    assert_eq!(
        err.to_string(),
        "dockerfile parse error on line 3: invalid network mode \"bridge\""
    );
    let loc = err.location().unwrap();
    assert_eq!(loc.file, "Dockerfile.dev");
    assert_eq!((loc.span.start.line, loc.span.start.column), (3, 1));
    let rendered = err.render();
    assert!(rendered.contains("Dockerfile.dev:3:1"), "{rendered}");
    assert!(rendered.contains("RUN --network=bridge true"), "{rendered}");
}

#[test]
fn parse_keeps_positions_and_original_text() {
    let df = parse(
        "# syntax=docker/dockerfile:1\nFROM img AS a\nRUN echo a \\\n    b\n\nCOPY x y\n",
        "Dockerfile",
    )
    .unwrap();
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    let run = &df.stages[0].instructions[0];
    assert_eq!((run.location.start_line, run.location.end_line), (3, 4));
    assert_eq!(run.original, "RUN echo a     b");
    assert_eq!(df.stages[0].instructions[1].location.start_line, 6);
    let trigger = strata_frontend::parse_instruction("RUN echo hi").unwrap();
    assert_eq!(trigger.kind.name(), "RUN");
}

#[test]
fn lines_over_the_limit_are_rejected() {
    let long = format!(
        "FROM img\nRUN {}\n",
        "x".repeat(strata_frontend::MAX_LINE_LENGTH)
    );
    let err = parse(&long, "Dockerfile").unwrap_err();
    assert_eq!(
        err.to_string(),
        "dockerfile line greater than max allowed size of 65535"
    );
    let fits = format!(
        "FROM img\nRUN {}\n",
        "x".repeat(strata_frontend::MAX_LINE_LENGTH - 4)
    );
    parse(&fits, "Dockerfile").unwrap();
}
