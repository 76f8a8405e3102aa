//! The order `depends_on` puts servers in: a cycle, if there is one, for validation to
//! report. Pure.

use super::types::Manifest;

/// A cycle through `start` (`[start, a, b]` when start depends on a, a on b and b on
/// start), or none. Unknown ids are not followed: validation reports them on their own.
pub fn cycle_from<'a>(m: &'a Manifest, start: &'a str) -> Option<Vec<&'a str>> {
    let mut path = vec![start];
    let mut visited = vec![start];
    walk(m, start, &mut path, &mut visited).then_some(path)
}

/// Depth first from the last server of `path`; true once a dependency leads back to the
/// first, with `path` holding the cycle.
fn walk<'a>(
    m: &'a Manifest,
    start: &str,
    path: &mut Vec<&'a str>,
    visited: &mut Vec<&'a str>,
) -> bool {
    let Some(here) = path.last().and_then(|id| m.server(id)) else {
        return false;
    };
    for dep in &here.depends_on {
        // A server on itself is reported apart, not as a cycle.
        if dep == start && path.len() > 1 {
            return true;
        }
        if visited.contains(&dep.as_str()) || m.server(dep).is_none() {
            continue;
        }
        visited.push(dep);
        path.push(dep);
        if walk(m, start, path, visited) {
            return true;
        }
        path.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use crate::manifest::check_for_tests;

    fn manifest(deps: &[(&str, &[&str])]) -> String {
        let mut text = String::from("version: \"1.2\"\nservers:\n");
        for (id, on) in deps {
            text.push_str(&format!(
                "  - id: {id}\n    version: \"1.0.0\"\n    docker: {{ image: registry.local/{id}, port: 8080 }}\n    depends_on: [{}]\n",
                on.join(", ")
            ));
        }
        text
    }

    fn errors(deps: &[(&str, &[&str])]) -> Vec<(String, String)> {
        match check_for_tests(&manifest(deps)) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.into_iter().map(|d| (d.path, d.message)).collect(),
        }
    }

    #[test]
    fn a_chain_is_valid_and_has_no_cycle() {
        assert!(errors(&[("db", &[]), ("api", &["db"]), ("web", &["api", "db"])]).is_empty());
    }

    #[test]
    fn a_cycle_is_one_located_error_naming_it() {
        let e = errors(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "servers[0].depends_on[0]");
        assert!(e[0].1.contains("a → b → c → a"), "{e:?}");
    }

    #[test]
    fn itself_unknown_and_twice_are_each_located() {
        let e = errors(&[("a", &["a"]), ("b", &["api", "a", "a"])]);
        assert!(
            e.contains(&(
                "servers[0].depends_on[0]".into(),
                "server `a` cannot depend on itself".into()
            )),
            "{e:?}"
        );
        assert!(e.iter().any(|(p, m)| p == "servers[1].depends_on[0]" && m.contains("unknown server `api`")), "{e:?}");
        assert!(
            e.iter()
                .any(|(p, m)| p == "servers[1].depends_on[2]" && m.contains("listed twice")),
            "{e:?}"
        );
    }

    #[test]
    fn depends_on_needs_schema_1_2() {
        let text = manifest(&[("a", &[]), ("b", &["a"])]).replace("\"1.2\"", "\"1.1\"");
        let e = check_for_tests(&text).unwrap_err();
        assert!(
            e.iter()
                .any(|d| d.path == "servers[1].depends_on" && d.message.contains("1.2")),
            "{e:?}"
        );
    }
}
