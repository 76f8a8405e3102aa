//! `mcp-orchestration validate`: every class of mistake is reported with its location.

use std::fs;

use crate::support::{REPO, run_in, stderr, stdout};

/// A valid server entry; tests splice one mistake into it.
const GOOD_SERVER: &str = r#"  - id: alpha
    version: "1.0.0"
    docker:
      image: ghcr.io/liminalcommons/alpha
      port: 8080
"#;

struct Outcome {
    code: i32,
    out: String,
}

fn validate_text(manifest: &str, extra: &[(&str, &str)], args: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ecosystem-manifest.yaml"), manifest).unwrap();
    for (path, text) in extra {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    let mut all = vec!["validate"];
    all.extend_from_slice(args);
    let o = run_in(dir.path(), &all);
    Outcome {
        code: o.status.code().unwrap_or(-1),
        out: stdout(&o) + &stderr(&o),
    }
}

/// Asserts the manifest is rejected with exactly one error, and that it reads `expected`.
fn assert_one_error(manifest: &str, expected: &str) {
    let o = validate_text(manifest, &[], &[]);
    assert_eq!(o.code, 1, "{}", o.out);
    let errors: Vec<&str> = o.out.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors, [expected], "full output:\n{}", o.out);
}

fn manifest_with(servers: &str) -> String {
    format!("version: \"1.1\"\nservers:\n{servers}")
}

#[test]
fn the_example_ecosystem_is_valid() {
    let o = run_in(REPO.as_ref(), &["validate", "examples/ecosystem"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "examples/ecosystem/ecosystem-manifest.yaml: valid (3 servers: mcp-server-lightrag, mcp-server-n8n, mcp-server-coda)"
    );
}

#[test]
fn five_distinct_mistakes_give_five_located_errors() {
    let manifest = r#"version: "1.1"
servers:
  - id: alpha
    version: "1.0"
    docker:
      image: ghcr.io/liminalcommons/alpha
      port: 8080
    health_check:
      interval_seconds: 1
      timeout_seconds: 5
  - id: alpha
    version: "2.0.0"
    descripton: the second one
    docker:
      image: docker.io/someone/else
      port: 8080
    update_policy: standrd
"#;
    let o = validate_text(manifest, &[], &[]);
    assert_eq!(o.code, 1);
    let errors: Vec<&str> = o.out.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        errors,
        [
            "ecosystem-manifest.yaml:4:14: error: `1.0` is not a semantic version (MAJOR.MINOR.PATCH, e.g. \"1.0.0\"): unexpected end of input while parsing minor version number (at servers[0].version)",
            "ecosystem-manifest.yaml:10:24: error: timeout_seconds (5) must be less than interval_seconds (1), or probes would overlap (at servers[0].health_check.timeout_seconds)",
            "ecosystem-manifest.yaml:11:9: error: duplicate server id `alpha` (first used by servers[0] on line 3) (at servers[1].id)",
            "ecosystem-manifest.yaml:13:5: error: unknown field `descripton`, did you mean `description`? (at servers[1].descripton)",
            "ecosystem-manifest.yaml:15:14: error: image `docker.io/someone/else` is not allowed by the agent's trust policy (built-in default), which allows: ghcr.io/liminalcommons/ (at servers[1].docker.image)",
            "ecosystem-manifest.yaml:17:20: error: unknown update policy `standrd`; did you mean `standard`? (at servers[1].update_policy)",
        ]
    );
    assert!(
        o.out
            .ends_with("ecosystem-manifest.yaml: invalid: 6 errors, 0 warnings\n"),
        "{}",
        o.out
    );
}

#[test]
fn json_output_is_an_array_of_located_diagnostics() {
    let o = validate_text(
        &manifest_with(&GOOD_SERVER.replace("id: alpha", "id: Alpha")),
        &[],
        &["--output", "json"],
    );
    assert_eq!(o.code, 1);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{
            "severity": "error",
            "file": "ecosystem-manifest.yaml",
            "line": 3,
            "column": 9,
            "path": "servers[0].id",
            "message": "invalid server id `Alpha`: use 1 to 63 lowercase letters, digits and `-`, starting with a letter or digit"
        }])
    );
}

#[test]
fn duplicate_ids_are_reported() {
    assert_one_error(
        &manifest_with(&format!("{GOOD_SERVER}{GOOD_SERVER}")),
        "ecosystem-manifest.yaml:8:9: error: duplicate server id `alpha` (first used by servers[0] on line 3) (at servers[1].id)",
    );
}

#[test]
fn invalid_semver_is_reported() {
    assert_one_error(
        &manifest_with(&GOOD_SERVER.replace("\"1.0.0\"", "latest")),
        "ecosystem-manifest.yaml:4:14: error: `latest` is not a semantic version (MAJOR.MINOR.PATCH, e.g. \"1.0.0\"): unexpected character 'l' while parsing major version number (at servers[0].version)",
    );
}

#[test]
fn invalid_semver_requirement_is_reported() {
    assert_one_error(
        &manifest_with(&format!(
            "{GOOD_SERVER}    update_policy: {{ version_strategy: semantic, constraint: \"^^1\" }}\n"
        )),
        "ecosystem-manifest.yaml:8:62: error: `^^1` is not a semver requirement (e.g. \"^1.2\", \">=1.0, <2.0\"): unexpected character '^' while parsing major version number (at servers[0].update_policy.constraint)",
    );
}

#[test]
fn a_constraint_the_version_does_not_satisfy_is_reported() {
    assert_one_error(
        &manifest_with(&format!(
            "{GOOD_SERVER}    update_policy: {{ constraint: \">=2.0.0\" }}\n"
        )),
        "ecosystem-manifest.yaml:8:34: error: the server's version 1.0.0 does not satisfy its own constraint `>=2.0.0` (at servers[0].update_policy.constraint)",
    );
}

#[test]
fn a_timeout_not_below_the_interval_is_reported() {
    assert_one_error(
        &manifest_with(&format!(
            "{GOOD_SERVER}    health_check: {{ interval_seconds: 0.2, timeout_seconds: 0.2 }}\n"
        )),
        "ecosystem-manifest.yaml:8:61: error: timeout_seconds (0.2) must be less than interval_seconds (0.2), or probes would overlap (at servers[0].health_check.timeout_seconds)",
    );
}

#[test]
fn thresholds_below_one_are_reported() {
    let o = validate_text(
        &manifest_with(&format!(
            "{GOOD_SERVER}    health_check: {{ failure_threshold: 0, success_threshold: -1 }}\n"
        )),
        &[],
        &[],
    );
    assert_eq!(o.code, 1);
    assert!(o.out.contains("ecosystem-manifest.yaml:8:40: error: failure_threshold must be at least 1 (at servers[0].health_check.failure_threshold)"), "{}", o.out);
    assert!(o.out.contains("ecosystem-manifest.yaml:8:62: error: success_threshold must be at least 1 (at servers[0].health_check.success_threshold)"), "{}", o.out);
}

#[test]
fn duplicate_fixed_host_ports_are_reported() {
    let one = GOOD_SERVER.replace("port: 8080\n", "port: 8080\n      host_port: 18080\n");
    let two = one.replace("alpha", "beta");
    assert_one_error(
        &manifest_with(&format!("{one}{two}")),
        "ecosystem-manifest.yaml:14:18: error: host port 18080 is also used by `alpha`; two servers cannot share a fixed port (at servers[1].docker.host_port)",
    );
}

#[test]
fn an_unknown_named_policy_is_reported() {
    assert_one_error(
        &manifest_with(&format!("{GOOD_SERVER}    update_policy: weekly\n")),
        "ecosystem-manifest.yaml:8:20: error: unknown update policy `weekly`; known policies: conservative, latest, pinned, standard (add your own in policies/weekly.yaml) (at servers[0].update_policy)",
    );
}

#[test]
fn a_repo_policy_file_defines_a_new_named_policy() {
    let o = validate_text(
        &manifest_with(&format!("{GOOD_SERVER}    update_policy: weekly\n")),
        &[(
            "policies/weekly.yaml",
            "version_strategy: semantic\nallow: patch\n",
        )],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.out);
}

#[test]
fn an_image_outside_the_trust_policy_is_reported() {
    assert_one_error(
        &manifest_with(&GOOD_SERVER.replace(
            "ghcr.io/liminalcommons/alpha",
            "ghcr.io/liminalcommons-evil/alpha",
        )),
        "ecosystem-manifest.yaml:6:14: error: image `ghcr.io/liminalcommons-evil/alpha` is not allowed by the agent's trust policy (built-in default), which allows: ghcr.io/liminalcommons/ (at servers[0].docker.image)",
    );
}

#[test]
fn the_operators_trust_policy_replaces_the_default_and_a_repo_can_only_narrow_it() {
    let manifest = manifest_with(&GOOD_SERVER.replace(
        "ghcr.io/liminalcommons/alpha",
        "127.0.0.1:5000/example/server",
    ));
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust.yaml");
    fs::write(&trust, "allowed_images: [\"127.0.0.1:5000/\"]\n").unwrap();
    let trust = trust.to_str().unwrap();
    let o = validate_text(&manifest, &[], &["--trust-policy", trust]);
    assert_eq!(o.code, 0, "{}", o.out);
    // The repo narrows to another organisation: the image is refused.
    let o = validate_text(
        &manifest,
        &[(
            "trust-policy.yaml",
            "allowed_images: [\"127.0.0.1:5000/other/\", \"docker.io/\"]\n",
        )],
        &["--trust-policy", trust],
    );
    assert_eq!(o.code, 1, "{}", o.out);
    assert!(o.out.contains("ecosystem-manifest.yaml:6:14: error: image `127.0.0.1:5000/example/server` is not allowed by the repository's trust-policy.yaml"), "{}", o.out);
    // Trying to widen is only a warning, and widens nothing.
    assert!(
        o.out.contains(
            "trust-policy.yaml:1:43: warning: `docker.io/` is outside the agent's trust policy"
        ),
        "{}",
        o.out
    );
}

#[test]
fn an_image_with_a_tag_or_digest_is_reported() {
    assert_one_error(
        &manifest_with(&GOOD_SERVER.replace("liminalcommons/alpha", "liminalcommons/alpha:1.0.0")),
        "ecosystem-manifest.yaml:6:14: error: `ghcr.io/liminalcommons/alpha:1.0.0` carries a tag; give the repository only, the server's `version` is the tag (at servers[0].docker.image)",
    );
    assert_one_error(
        &manifest_with(
            &GOOD_SERVER.replace("liminalcommons/alpha", "liminalcommons/alpha@sha256:abcd"),
        ),
        "ecosystem-manifest.yaml:6:14: error: `ghcr.io/liminalcommons/alpha@sha256:abcd` pins a digest; give the repository only, the agent resolves digests itself (at servers[0].docker.image)",
    );
}

#[test]
fn unknown_fields_get_a_suggestion() {
    assert_one_error(
        &manifest_with(&format!("{GOOD_SERVER}    helth_check: {{}}\n")),
        "ecosystem-manifest.yaml:8:5: error: unknown field `helth_check`, did you mean `health_check`? (at servers[0].helth_check)",
    );
}

#[test]
fn an_inlined_secret_is_rejected() {
    assert_one_error(
        &manifest_with(&format!(
            "{GOOD_SERVER}    config_requirements:\n      - {{ name: API_KEY, secret: true, value: hunter2 }}\n"
        )),
        "ecosystem-manifest.yaml:9:47: error: `API_KEY` is a secret: remove the value from the manifest and give it to the agent through its environment or secrets file (at servers[0].config_requirements[0].value)",
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    let o = validate_text("version: \"1.1\"\nservers: [\n  - id: x\n", &[], &[]);
    assert_eq!(o.code, 1);
    let first = o.out.lines().next().unwrap();
    assert!(first.starts_with("ecosystem-manifest.yaml:3:"), "{}", o.out);
    assert!(first.contains(": error: invalid YAML: "), "{}", o.out);
}

#[test]
fn a_v1_0_manifest_loads_with_defaults_and_rejects_1_1_fields() {
    let v10 = "version: \"1.0\"\nservers:\n  - id: alpha\n    version: \"1.0.0\"\n    version_strategy: semantic\n    docker: { image: ghcr.io/liminalcommons/alpha, port: 8080 }\n";
    let o = validate_text(v10, &[], &[]);
    assert_eq!(o.code, 0, "{}", o.out);
    assert_one_error(
        &format!("{v10}    restart_policy: always\n"),
        "ecosystem-manifest.yaml:7:21: error: `restart_policy` needs schema version \"1.1\"; set `version: \"1.1\"` at the top of the manifest (at servers[0].restart_policy)",
    );
}

#[test]
fn a_missing_file_is_an_environment_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["validate", "nowhere.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read nowhere.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_schema_command_prints_a_json_schema() {
    let o = run_in(REPO.as_ref(), &["schema"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(v["required"], serde_json::json!(["version", "servers"]));
}

/// A server asking Swarm for two tasks on labelled nodes (schema 1.2).
const SCHEDULED: &str = "version: \"1.2\"\nservers:\n  - id: alpha\n    version: \"1.0.0\"\n    docker:\n      image: ghcr.io/liminalcommons/alpha\n      port: 8080\n      replicas: 2\n      placement: { constraints: [\"node.labels.zone==a\"] }\n";

#[test]
fn replicas_and_placement_need_schema_1_2_and_a_constraint_swarm_understands() {
    let older = SCHEDULED.replace("\"1.2\"", "\"1.1\"");
    let o = validate_text(&older, &[], &[]);
    assert_eq!(o.code, 1, "{}", o.out);
    let errors: Vec<&str> = o.out.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        errors,
        [
            "ecosystem-manifest.yaml:8:17: error: `replicas` needs schema version \"1.2\"; set `version: \"1.2\"` at the top of the manifest (at servers[0].docker.replicas)",
            "ecosystem-manifest.yaml:9:18: error: `placement` needs schema version \"1.2\"; set `version: \"1.2\"` at the top of the manifest (at servers[0].docker.placement)",
        ],
        "{}",
        o.out
    );
    assert_one_error(
        &SCHEDULED.replace("node.labels.zone==a", "zone=a"),
        "ecosystem-manifest.yaml:9:34: error: `zone=a` is not a placement constraint; write `ATTRIBUTE==VALUE` or `ATTRIBUTE!=VALUE`, e.g. `node.labels.zone==a` (at servers[0].docker.placement.constraints[0])",
    );
    assert_one_error(
        &SCHEDULED.replace("replicas: 2", "replicas: 0"),
        "ecosystem-manifest.yaml:8:17: error: 0 replicas: ask for 1 to 64 (at servers[0].docker.replicas)",
    );
}

#[test]
fn replicas_and_placement_are_refused_for_a_runtime_that_cannot_honour_them() {
    let o = validate_text(SCHEDULED, &[], &["--runtime", "docker"]);
    assert_eq!(o.code, 1, "{}", o.out);
    let errors: Vec<&str> = o.out.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        errors,
        [
            "ecosystem-manifest.yaml:8:17: error: `replicas: 2` needs a runtime that schedules (`--runtime swarm`); the docker runtime runs one instance of each server (at servers[0].docker.replicas)",
            "ecosystem-manifest.yaml:9:18: error: `placement` needs a runtime that schedules (`--runtime swarm`); the docker runtime runs every server on this host (at servers[0].docker.placement)",
        ],
        "{}",
        o.out
    );
    for args in [&["--runtime", "swarm"][..], &[]] {
        let o = validate_text(SCHEDULED, &[], args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.out);
    }
}

#[test]
fn a_command_outside_the_trust_policy_is_one_error_not_two() {
    // An existing program (so the host's symlink check could run too) that the built-in
    // policy does not allow: said once, by name.
    assert_one_error(
        &manifest_with(
            "  - id: alpha\n    version: \"1.0.0\"\n    process: { command: /bin/sh }\n",
        ),
        "ecosystem-manifest.yaml:5:25: error: command `/bin/sh` is not in a directory the agent's trust policy (built-in default) allows: nothing (at servers[0].process.command)",
    );
}
