//! Typed reading of a located YAML tree that keeps going after a problem.
//!
//! Every accessor reports what is wrong with a value (with its position and field path) and
//! returns `None`, so the caller can go on and report the next problem too. Every path it
//! visits is remembered with its position, so later semantic checks can point at a field.

use std::collections::{BTreeMap, HashMap};

use super::diagnostic::{Diagnostics, Position, did_you_mean};
use super::yaml::{Node, Value};

pub struct Decoder {
    pub diags: Diagnostics,
    locations: HashMap<String, Position>,
}

/// The entries of a mapping whose keys were checked against the allowed field names.
pub struct Object<'a> {
    pub at: Position,
    pub path: String,
    entries: Vec<(&'a str, &'a Node)>,
}

impl<'a> Object<'a> {
    pub fn get(&self, field: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    pub fn has(&self, field: &str) -> bool {
        self.entries.iter().any(|(k, _)| *k == field)
    }

    pub fn field_path(&self, field: &str) -> String {
        join(&self.path, field)
    }
}

pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl Decoder {
    pub fn new(file: impl Into<String>) -> Self {
        Decoder {
            diags: Diagnostics::new(file),
            locations: HashMap::new(),
        }
    }

    /// Where a path was found; falls back to the closest parent that was seen.
    pub fn at(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(at) = self.locations.get(p) {
                return *at;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.locations.get("").copied().unwrap_or_default(),
            }
        }
    }

    /// Whether a value was decoded at exactly `path`.
    pub fn was_seen(&self, path: &str) -> bool {
        self.locations.contains_key(path)
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let at = self.at(path);
        self.diags.error(at, path, message);
    }

    pub fn warning(&mut self, path: &str, message: impl Into<String>) {
        let at = self.at(path);
        self.diags.warning(at, path, message);
    }

    fn seen(&mut self, path: &str, node: &Node) {
        self.locations.entry(path.to_owned()).or_insert(node.at);
    }

    /// A mapping whose keys must be among `allowed`; unknown and repeated keys are reported.
    pub fn object<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Object<'a>> {
        self.seen(path, node);
        let Value::Map(raw) = &node.value else {
            self.diags.error(
                node.at,
                path,
                format!("expected a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut entries: Vec<(&'a str, &'a Node)> = Vec::with_capacity(raw.len());
        for (key, value) in raw {
            let Value::Scalar { text, .. } = &key.value else {
                self.diags
                    .error(key.at, path, "mapping keys must be plain names");
                continue;
            };
            let field_path = join(path, text);
            if !allowed.contains(&text.as_str()) {
                let mut message = format!("unknown field `{text}`");
                match did_you_mean(text, allowed.iter().copied()) {
                    Some(s) => message.push_str(&format!(", did you mean `{s}`?")),
                    None => message.push_str(&format!(", expected one of: {}", allowed.join(", "))),
                }
                self.diags.error(key.at, &field_path, message);
                continue;
            }
            if entries.iter().any(|(k, _)| *k == text) {
                self.diags
                    .error(key.at, &field_path, format!("field `{text}` is set twice"));
                continue;
            }
            self.seen(&field_path, value);
            entries.push((text.as_str(), value));
        }
        Some(Object {
            at: node.at,
            path: path.to_owned(),
            entries,
        })
    }

    /// A required field: reports its absence at the mapping that lacks it.
    pub fn required<'a>(&mut self, obj: &Object<'a>, field: &str) -> Option<&'a Node> {
        let node = obj.get(field);
        if node.is_none() {
            self.diags.error(
                obj.at,
                &obj.field_path(field),
                format!("missing required field `{field}`"),
            );
        }
        node
    }

    pub fn list<'a>(&mut self, node: &'a Node, path: &str) -> Option<&'a [Node]> {
        self.seen(path, node);
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.seen(&index(path, i), item);
                }
                Some(items)
            }
            _ => {
                self.diags.error(
                    node.at,
                    path,
                    format!("expected a list, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// Any scalar as text: numbers and booleans are accepted where a string is expected,
    /// because people write `version: 1.0` and mean the text.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        self.seen(path, node);
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.diags.error(
                    node.at,
                    path,
                    format!("expected a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        self.seen(path, node);
        match &node.value {
            Value::Scalar { text, plain: true }
                if text == "true" || text == "True" || text == "TRUE" =>
            {
                Some(true)
            }
            Value::Scalar { text, plain: true }
                if text == "false" || text == "False" || text == "FALSE" =>
            {
                Some(false)
            }
            _ => {
                self.diags.error(
                    node.at,
                    path,
                    format!("expected true or false, found {}", describe(node)),
                );
                None
            }
        }
    }

    /// A non-negative number of seconds (or any non-negative decimal).
    pub fn number(&mut self, node: &Node, path: &str) -> Option<f64> {
        self.seen(path, node);
        let parsed = match &node.value {
            Value::Scalar { text, plain: true } => {
                text.parse::<f64>().ok().filter(|v| v.is_finite())
            }
            _ => None,
        };
        if parsed.is_none() {
            self.diags.error(
                node.at,
                path,
                format!("expected a number, found {}", describe(node)),
            );
        }
        parsed
    }

    pub fn integer<T: TryFrom<i128>>(&mut self, node: &Node, path: &str, what: &str) -> Option<T> {
        self.seen(path, node);
        let parsed = match &node.value {
            Value::Scalar { text, plain: true } => {
                text.parse::<i128>().ok().and_then(|v| T::try_from(v).ok())
            }
            _ => None,
        };
        if parsed.is_none() {
            self.diags.error(
                node.at,
                path,
                format!("expected {what}, found {}", describe(node)),
            );
        }
        parsed
    }

    /// One of a closed set of words.
    pub fn choice<T: Copy>(&mut self, node: &Node, path: &str, options: &[(&str, T)]) -> Option<T> {
        let text = self.string(node, path)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let mut message = format!("`{text}` is not one of: {}", names.join(", "));
        if let Some(s) = did_you_mean(&text, names.iter().copied()) {
            message.push_str(&format!("; did you mean `{s}`?"));
        }
        self.diags.error(node.at, path, message);
        None
    }

    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &index(path, i)) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A mapping of names to string values, such as environment variables.
    pub fn string_map(&mut self, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
        self.seen(path, node);
        let Value::Map(entries) = &node.value else {
            self.diags.error(
                node.at,
                path,
                format!("expected a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (key, value) in entries {
            let Some(name) = self.string(key, path) else {
                continue;
            };
            let field_path = join(path, &name);
            if out.contains_key(&name) {
                self.diags
                    .error(key.at, &field_path, format!("`{name}` is set twice"));
                continue;
            }
            if let Some(v) = self.string(value, &field_path) {
                out.insert(name, v);
            }
        }
        Some(out)
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => format!("`{text}`"),
        _ => node.kind().to_owned(),
    }
}
