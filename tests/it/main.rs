//! All integration tests, built as one binary so they share one build and one link.

mod manifest_fuzz;
mod support;
mod validate;
