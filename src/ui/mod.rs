//! The status page: one HTML page, its script and its style sheet, compiled into the binary
//! (no build step, nothing fetched from elsewhere). The page reads the API on the same
//! origin, with the key the operator types kept in the tab's session storage, and stays
//! live on `GET /events`. `api::page` serves the files with [`POLICY`], a content security
//! policy that allows nothing but this origin, so the page cannot load or send anything
//! off the agent.

/// The page.
pub const INDEX: &str = include_str!("index.html");
/// Its script.
pub const SCRIPT: &str = include_str!("app.js");
/// Its style sheet.
pub const STYLE: &str = include_str!("app.css");

/// Only this origin, for everything; no inline script or style; no framing.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Each file by the path it is served at, with its media type.
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", INDEX),
    ("/ui/app.js", "text/javascript; charset=utf-8", SCRIPT),
    ("/ui/app.css", "text/css; charset=utf-8", STYLE),
];

/// What the three files may weigh together, uncompressed as they are served: no framework
/// and no build step keep the page small (BENCHMARKS.md, "The status page").
pub const BUDGET_BYTES: usize = 48 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_keeps_to_its_budget() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(
            total <= BUDGET_BYTES,
            "{total} bytes, budget {BUDGET_BYTES}"
        );
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        for (path, _, body) in ASSETS {
            for foreign in ["http://", "https://", "//cdn", "@import"] {
                let allowed = |line: &str| line.contains("http://www.w3.org/2000/svg");
                assert!(
                    body.lines().all(|l| !l.contains(foreign) || allowed(l)),
                    "{path} refers to {foreign}"
                );
            }
        }
        assert!(INDEX.contains(r#"<script src="/ui/app.js">"#));
        assert!(INDEX.contains(r#"href="/ui/app.css""#));
        assert!(
            !INDEX.contains("<script>"),
            "inline script breaks the policy"
        );
    }
}
