//! House rules checked over the source tree, as rust-analyzer's tidy test does: what
//! `ARCHITECTURE.md` and the style guide promise, kept true by `cargo test`.

use std::path::{Path, PathBuf};

use crate::support::REPO;

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn src() -> Vec<(String, String)> {
    sources(&Path::new(REPO).join("src"))
}

/// The file's code before its unit tests.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn every_source_file_opens_with_a_doc_comment() {
    let missing: Vec<String> = src()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` paragraph: {missing:?}"
    );
}

#[test]
fn each_external_crate_is_named_only_by_its_owning_module() {
    let owners: &[(&str, &[&str])] = &[
        ("bollard", &["runtime/"]),
        ("git2", &["source/"]),
        ("rusqlite", &["store/"]),
        // The gateway's listener is an axum router served like the API's, with its read
        // routes.
        (
            "axum",
            &[
                "api/",
                "gateway/mod.rs",
                "gateway/status.rs",
                "gateway/profiles.rs",
                "gateway/shortcut.rs",
            ],
        ),
        // The HTTP probe drives one hyper connection per probe (no pool); the gateway's
        // backend client keeps its connections.
        (
            "hyper",
            &["api/serve.rs", "health/probe/http.rs", "gateway/http.rs"],
        ),
        (
            "hyper_util",
            &["api/serve.rs", "health/probe/http.rs", "gateway/http.rs"],
        ),
        (
            "http_body_util",
            &[
                "health/probe/http.rs",
                "gateway/http.rs",
                "gateway/shortcut.rs",
            ],
        ),
        ("sse_stream", &["gateway/http.rs"]),
        (
            "tower_service",
            &["api/serve.rs", "api/mod.rs", "gateway/shortcut.rs"],
        ),
        // The operator's MCP tools, and the gateway's MCP server and backend sessions.
        ("rmcp", &["mcp/", "gateway/"]),
        ("clap", &["cli/"]),
        ("clap_complete", &["cli/completions.rs"]),
        ("clap_mangen", &["cli/completions.rs"]),
        ("tracing_subscriber", &["cli/"]),
        ("tracing_appender", &["cli/"]),
        // Client configurations: the files' formats, and the artifacts' signatures.
        ("jsonc_parser", &["clients/edit/"]),
        ("toml_edit", &["clients/edit/"]),
        (
            "ed25519_dalek",
            &["clients/keys.rs", "clients/artifact.rs", "clients/trust.rs"],
        ),
        ("serde_json_canonicalizer", &["clients/artifact.rs"]),
        // Signing keys' seeds, and webhook subscriptions' and deliveries' ids.
        (
            "getrandom",
            &["clients/keys.rs", "subscriptions/deliver.rs"],
        ),
    ];
    let mut strays = Vec::new();
    for (path, text) in src() {
        for (krate, homes) in owners {
            let named = text.lines().any(|l| {
                let l = l.trim_start();
                !l.starts_with("//")
                    && (l.contains(&format!("{krate}::")) || l.contains(&format!("use {krate};")))
                    && !l.contains(&format!("_{krate}::"))
            });
            if named && !homes.iter().any(|h| path.starts_with(h)) {
                strays.push(format!("{path} names {krate} (owned by {homes:?})"));
            }
        }
    }
    assert!(strays.is_empty(), "{strays:#?}");
}

#[test]
fn daemon_code_has_no_unwrap_or_expect() {
    // Everything but the CLI and the binary's entry runs inside the long-lived agent.
    let mut found = Vec::new();
    for (path, text) in src() {
        if path.starts_with("cli/") || path == "main.rs" || path.ends_with("tests.rs") {
            continue;
        }
        for (n, line) in without_tests(&text).lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(".unwrap()") || code.contains(".expect(") {
                found.push(format!("{path}:{}: {}", n + 1, code));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_code_map_names_every_module() {
    let arch = std::fs::read_to_string(Path::new(REPO).join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for (path, _) in src() {
        let module = path
            .trim_end_matches(".rs")
            .trim_end_matches("/mod")
            .replace('/', "::");
        if module == "lib" || module == "main" || module.ends_with("tests") {
            continue;
        }
        // Named in full, or below its top-level module's row without the prefix
        // (`execute::gate` for `reconcile::execute::gate`).
        let parts: Vec<&str> = module.split("::").collect();
        let mut names = vec![module.clone()];
        if parts.len() > 2 {
            names.push(parts[1..].join("::"));
        }
        let named = names.iter().any(|n| {
            [format!("`{n}`"), format!("`{n}::"), format!("`{n}(")]
                .iter()
                .any(|m| arch.contains(m.as_str()))
        });
        if !named {
            missing.push(module);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name {missing:?}"
    );
}

/// The top-level modules each file of `src/` names through `crate::` paths (comments
/// aside), as edges `from → to`.
fn module_edges() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (path, text) in src() {
        let from = path
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if from == "lib" || from == "main" {
            continue;
        }
        let deps = edges.entry(from.clone()).or_default();
        for line in text.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let to: String = line[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from && !line[..i].ends_with('_') {
                    deps.insert(to);
                }
            }
        }
    }
    edges
}

#[test]
fn the_module_graph_has_no_loop() {
    // Depth-first search for a back edge; the path to it is the loop to show.
    fn visit(
        m: &str,
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        done: &mut std::collections::BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if !done.insert(m.to_owned()) {
            return None;
        }
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let edges = module_edges();
    assert!(edges.contains_key("agent") && edges["agent"].contains("fleet"));
    let mut done = Default::default();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut done, &mut Vec::new()) {
            panic!("an import loop: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn async_code_reaches_the_store_only_through_its_blocking_pool() {
    // Outside `store/`, a `Store` is used through `call` (which runs SQLite on the blocking
    // pool), `subscribe` and `clone`; `Store::open` only inside `spawn_blocking`.
    let allowed = ["call", "subscribe", "clone"];
    let mut found = Vec::new();
    for (path, text) in src() {
        if path.starts_with("store/") || path.ends_with("tests.rs") {
            continue;
        }
        let code: String = without_tests(&text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // `store\n    .call(` is `store.call(` once the whitespace is gone.
        let squeezed: String = code.split_whitespace().collect();
        for (i, _) in squeezed.match_indices("store.") {
            let before = squeezed[..i].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let method: String = squeezed[i + "store.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let called = squeezed[i + "store.".len() + method.len()..].starts_with('(');
            if called && !allowed.contains(&method.as_str()) {
                found.push(format!("{path}: store.{method}(…)"));
            }
        }
        for (i, _) in squeezed.match_indices("Store::open(") {
            let window = &squeezed[i.saturating_sub(80)..i];
            if !window.contains("spawn_blocking") {
                found.push(format!("{path}: Store::open outside spawn_blocking"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
