//! A YAML document as a tree of located nodes.
//!
//! serde gives up at the first problem and forgets where values came from; operators need
//! every problem at once, each with its line and column. So the manifest is first read into
//! this tree (yaml-rust2's event parser supplies the positions) and then decoded by hand.
//! The tree never interprets scalars beyond keeping their text and whether they were quoted.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostic::Position;

/// Deeper nesting than this is not a manifest; refusing it keeps recursion bounded.
const MAX_DEPTH: usize = 64;
/// Upper bound on nodes, so aliases cannot expand a small file into a huge tree…
const MAX_NODES: usize = 200_000;
/// …and on the bytes of scalar text the tree holds once aliases are expanded: few nodes
/// can still be huge (one 1 MB scalar aliased 400×400 times asks for 160 GB).
const MAX_EXPANDED_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub at: Position,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar's text; `plain` is false when it was quoted or a block scalar, which makes
    /// `"1.0"` a string where a plain `1.0` is a number.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// True for `~`, `null`, `Null`, `NULL` and an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn kind(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why a text could not be read as a single YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: Position,
    pub message: String,
}

/// Parses one YAML document. An empty text gives `Ok(None)`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(SyntaxError {
            at: position(*e.marker()),
            message: e.info().to_owned(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    if builder.documents.len() > 1 {
        return Err(SyntaxError {
            at: builder.documents[1].at,
            message: "expected a single YAML document, found several (remove the extra `---`)"
                .to_owned(),
        });
    }
    Ok(builder.documents.pop())
}

fn position(m: Marker) -> Position {
    // yaml-rust2 counts lines from 1 and columns from 0; people count both from 1.
    Position {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Seq(Position, usize, Vec<Node>),
    Map(Position, usize, Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Node>,
    nodes: usize,
    bytes: usize,
    error: Option<SyntaxError>,
}

impl Builder {
    fn fail(&mut self, at: Position, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                at,
                message: message.into(),
            });
        }
    }

    /// Counts `nodes` more values holding `bytes` more text; false (with the error set)
    /// once the document is over either bound, so nothing more is built.
    fn count(&mut self, at: Position, nodes: usize, bytes: usize) -> bool {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            self.fail(at, "document too large (aliases expand to too many values)");
        } else if self.bytes > MAX_EXPANDED_BYTES {
            self.fail(
                at,
                format!(
                    "document too large (aliases expand to more than {} MiB of text)",
                    MAX_EXPANDED_BYTES / (1024 * 1024)
                ),
            );
        }
        self.error.is_none()
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            // The kept copy costs memory too: nested anchors would otherwise multiply it
            // past the bounds without ever being counted.
            let (nodes, bytes) = size(&node);
            if !self.count(node.at, nodes, bytes) {
                return;
            }
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

/// A node's (values, bytes of scalar text), aliases included.
fn size(node: &Node) -> (usize, usize) {
    let add = |a: (usize, usize), b: (usize, usize)| (a.0 + b.0, a.1.saturating_add(b.1));
    match &node.value {
        Value::Scalar { text, .. } => (1, text.len()),
        Value::Seq(items) => items.iter().map(size).fold((1, 0), add),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| add(size(k), size(v)))
            .fold((1, 0), add),
    }
}

/// Applies YAML merge keys (`<<: *defaults`): entries of the merged mappings are added
/// unless the mapping sets them itself.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge =
        |k: &Node| matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    for (key, value) in merges {
        let sources = match value.value {
            Value::Seq(items) => items,
            _ => vec![value],
        };
        for source in sources {
            match source.value {
                Value::Map(extra) => {
                    for (k, v) in extra {
                        if !own.iter().any(|(o, _)| o.value == k.value) {
                            own.push((k, v));
                        }
                    }
                }
                // Left in place so the decoder reports it as an unknown field `<<`.
                _ => own.push((key.clone(), source)),
            }
        }
    }
    own
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = position(mark);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                if !self.count(at, 1, text.len()) {
                    return;
                }
                let plain = style == TScalarStyle::Plain;
                self.finish(
                    Node {
                        at,
                        value: Value::Scalar { text, plain },
                    },
                    anchor,
                );
            }
            // Counted before it is copied: the copy is what would exhaust memory.
            Event::Alias(id) => match self.anchors.get(&id).map(size) {
                Some((nodes, bytes)) => {
                    if !self.count(at, nodes, bytes) {
                        return;
                    }
                    if let Some(mut node) = self.anchors.get(&id).cloned() {
                        node.at = at;
                        self.finish(node, 0);
                    }
                }
                None => self.fail(at, "alias refers to an unknown anchor"),
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(at, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                if !self.count(at, 1, 0) {
                    return;
                }
                self.stack
                    .push(if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq(at, anchor, Vec::new())
                    } else {
                        Frame::Map(at, anchor, Vec::new(), None)
                    });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(at, anchor, items)) => self.finish(
                    Node {
                        at,
                        value: Value::Seq(items),
                    },
                    anchor,
                ),
                Some(Frame::Map(at, anchor, entries, _)) => self.finish(
                    Node {
                        at,
                        value: Value::Map(merge_keys(entries)),
                    },
                    anchor,
                ),
                None => self.fail(at, "unbalanced collection end"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> (&str, bool) {
        match &node.value {
            Value::Scalar { text, plain } => (text, *plain),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_count_from_one() {
        let doc = parse("a: 1\nb:\n  - x\n").unwrap().unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!()
        };
        assert_eq!(entries[0].0.at, Position { line: 1, column: 1 });
        // A block sequence starts at its first `-`.
        assert_eq!(entries[1].1.at, Position { line: 3, column: 3 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].at, Position { line: 3, column: 5 });
    }

    #[test]
    fn quoting_is_kept() {
        let doc = parse("a: \"1.0\"\nb: 1.0\n").unwrap().unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!()
        };
        assert_eq!(scalar(&entries[0].1), ("1.0", false));
        assert_eq!(scalar(&entries[1].1), ("1.0", true));
    }

    #[test]
    fn aliases_and_merge_keys_expand() {
        let text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n";
        let doc = parse(text).unwrap().unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!()
        };
        let Value::Map(used) = &entries[1].1.value else {
            panic!()
        };
        let pairs: Vec<_> = used
            .iter()
            .map(|(k, v)| (scalar(k).0, scalar(v).0))
            .collect();
        assert_eq!(pairs, [("y", "3"), ("x", "1")]);
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.at.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn empty_text_is_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("too large"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(1000);
        assert!(parse(&text).is_err());
    }

    #[test]
    fn several_documents_are_refused() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("single YAML document"), "{err:?}");
    }

    #[test]
    fn aliases_of_a_large_scalar_cannot_expand_without_bound() {
        // One 1 MB scalar, aliased 400 times, that list aliased 400 times: few nodes,
        // 160 GB of text. It must fail fast with a located error, not allocate.
        let big = "x".repeat(1024 * 1024);
        let mut text = format!("a: &a \"{big}\"\nb: &b [");
        text.push_str(&vec!["*a"; 400].join(", "));
        text.push_str("]\nc: [");
        text.push_str(&vec!["*b"; 400].join(", "));
        text.push_str("]\n");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("MiB of text"), "{err:?}");
        assert!(err.at.line >= 2, "{err:?}");
    }

    #[test]
    fn nested_anchors_count_the_copies_they_keep() {
        // Each level anchors a list of aliases of the one before: the kept copies alone
        // would grow geometrically.
        let mut text = format!("a0: &a0 \"{}\"\n", "z".repeat(64 * 1024));
        for level in 1..60 {
            let prev = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("too large"), "{err:?}");
    }
}
