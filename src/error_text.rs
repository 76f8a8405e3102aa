//! Turning an error and its sources into one line for people.

/// `outer: inner: innermost`, skipping a cause whose text the message already contains.
/// HTTP clients' top-level messages ("error sending request", "client error (Connect)")
/// say little without their causes.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_joined_once() {
        let e = E(
            "error sending request",
            Some(Box::new(E("connection refused", None))),
        );
        assert_eq!(chain(&e), "error sending request: connection refused");
        let repeated = E(
            "connect: connection refused",
            Some(Box::new(E("connection refused", None))),
        );
        assert_eq!(chain(&repeated), "connect: connection refused");
    }
}
