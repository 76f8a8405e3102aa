//! Property tests: validation never panics, whatever bytes it is given, and every problem
//! it reports points inside the text.

use mcp_orchestration::manifest::policy::TrustPolicy;
use mcp_orchestration::manifest::{RepoFiles, TextFile, check};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../examples/ecosystem/ecosystem-manifest.yaml");

fn check_text(text: &str) {
    let files = RepoFiles {
        manifest: TextFile::new("m.yaml", text),
        policies: vec![],
        trust: None,
    };
    // YAML breaks lines at `\n`, `\r\n` and a lone `\r`; a problem may sit just past the end.
    let lines = text.matches('\n').count() + text.replace("\r\n", "\n").matches('\r').count() + 2;
    if let Err(diags) = check(&files, &TrustPolicy::shipped()) {
        assert!(!diags.is_empty());
        for d in diags {
            assert!(
                d.line >= 1 && d.line <= lines,
                "{d} is outside a {lines}-line text"
            );
            assert!(d.column >= 1, "{d}");
        }
    }
}

/// One random edit to a text: delete, duplicate or insert a line, or replace a byte range.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    InsertLine(usize, String),
    Replace(usize, usize, String),
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len();
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Edit::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Edit::InsertLine(i, s) => lines.insert(i % n, s.clone()),
        Edit::Replace(at, len, s) => {
            let joined = lines.join("\n");
            let mut start = at % joined.len();
            while !joined.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(joined.len());
            while !joined.is_char_boundary(end) {
                end -= 1;
            }
            return format!("{}{}{}", &joined[..start], s, &joined[end..]);
        }
    }
    lines.join("\n")
}

fn edit() -> impl Strategy<Value = Edit> {
    let yamlish =
        || prop::string::string_regex(r#"[ a-z_:\-\[\]{}"'&*!|>#0-9.,\n]{0,24}"#).unwrap();
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), yamlish()).prop_map(|(i, s)| Edit::InsertLine(i, s)),
        (any::<usize>(), 0usize..12, yamlish()).prop_map(|(i, l, s)| Edit::Replace(i, l, s)),
    ]
}

proptest! {
    // Bounded so CI spends seconds here; raise PROPTEST_CASES to search longer.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_text(&text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_text(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_valid_manifests_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let mut text = EXAMPLE.to_owned();
        for e in &edits {
            text = apply(&text, e);
        }
        check_text(&text);
    }
}
