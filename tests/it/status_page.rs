//! The status page in a real headless Chromium against a live agent (process runtime, the
//! gateway on, keys required for reads): it asks for the key and keeps it out of the URL,
//! follows a health transition and a rollout without a reload, rolls a server back with a
//! confirmed click, and never requests anything but the agent. Screenshots of the main
//! views land in `target/screenshots/`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::agent::{Options, TEST_API_KEY, TestAgent, process_manifest};
use crate::support::browser::{Browser, available_or_skip, screenshot_path};
use crate::support::git::ManifestRepo;
use crate::support::{admin, eventually};

const DEADLINE: Duration = Duration::from_secs(30);

/// The health word the fleet table shows for `server`.
const ROW_HEALTH: &str = "(() => { \
    const row = document.querySelector(`tr[data-server=\"${arguments[0]}\"]`); \
    return row && row.querySelector('[data-health]').dataset.health; })()";

/// Waits until `server` runs `version`, healthy, asking with the key (reads need one
/// here); returns its view.
async fn running(agent: &TestAgent, server: &str, version: &str) -> Value {
    eventually(DEADLINE, &format!("{server} running {version}"), || async {
        let (_, v) = agent
            .call(reqwest::Method::GET, &format!("/servers/{server}"), None)
            .await;
        (v["running_version"] == version && v["health"] == "healthy").then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_the_fleet_live_and_rolls_back_with_a_confirmed_click() {
    let name = "the_status_page_follows_the_fleet_live";
    if !available_or_skip(name) {
        return;
    }
    let repo = ManifestRepo::new();
    repo.push_manifest(
        &process_manifest(&[("alpha", "1.0.0"), ("beta", "1.0.0")]),
        "two servers",
    );
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            gateway: true,
            require_key_for_reads: true,
            ..Default::default()
        },
    )
    .await;
    let alpha = running(&agent, "alpha", "1.0.0").await;
    running(&agent, "beta", "1.0.0").await;

    // The page's answers allow nothing but the agent.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = http.get(format!("{}/", agent.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");

    let browser = Browser::start(1280, 900).await;
    let started = Instant::now();
    browser.goto(&format!("{}/", agent.url)).await;

    // Reads need a key here: the page asks for it, and keeps it in the tab's session.
    browser
        .wait_for(
            "the key dialog",
            "return document.getElementById('key-dialog').open;",
            json!([]),
        )
        .await;
    browser.type_into("#key-input", TEST_API_KEY).await;
    browser.click("#key-ok").await;
    let rows = "return document.querySelectorAll('tr[data-server]').length === 2 && \
        [...document.querySelectorAll('tr[data-server] [data-health]')].map(e => e.dataset.health);";
    let healths = browser
        .wait_for("the fleet's two rows", rows, json!([]))
        .await;
    eprintln!(
        "the fleet rendered {:?} after the page was asked for",
        started.elapsed()
    );
    assert_eq!(healths, json!(["healthy", "healthy"]));
    let kept = browser
        .eval(
            "return [sessionStorage.getItem('mcp-orchestration-key'), location.href];",
            json!([]),
        )
        .await;
    assert_eq!(kept[0], TEST_API_KEY);
    assert!(!kept[1].as_str().unwrap().contains(TEST_API_KEY), "{kept}");
    // The gateway's tool counts reach the page.
    browser
        .wait_for(
            "alpha's tools",
            "const row = document.querySelector('tr[data-server=\"alpha\"]'); \
             return row.children[6].textContent === '3';",
            json!([]),
        )
        .await;
    // A mark the page would lose on a reload.
    browser
        .eval("window.__mark = 'no reload';", json!([]))
        .await;
    browser.screenshot(&screenshot_path("fleet")).await;

    // A health transition shows without a reload.
    let endpoint = alpha["endpoint"].as_str().unwrap().to_owned();
    admin(&endpoint, "/admin/health/unhealthy").await;
    browser
        .wait_for(
            "alpha unhealthy on the page",
            &format!("return ({ROW_HEALTH}) === 'unhealthy';"),
            json!(["alpha"]),
        )
        .await;
    admin(&endpoint, "/admin/health/healthy").await;
    browser
        .wait_for(
            "alpha healthy again",
            &format!("return ({ROW_HEALTH}) === 'healthy';"),
            json!(["alpha"]),
        )
        .await;

    // A rollout shows on the server's page as it happens.
    browser
        .eval("location.hash = '#/servers/beta';", json!([]))
        .await;
    browser
        .wait_for(
            "beta's page",
            "return document.querySelector('h1') && document.querySelector('h1').textContent.startsWith('beta');",
            json!([]),
        )
        .await;
    repo.push_manifest(
        &process_manifest(&[("alpha", "1.0.0"), ("beta", "1.1.0")]),
        "beta 1.1.0",
    );
    let upgrade = "return [...document.querySelectorAll('details.rollout summary')] \
        .map(s => s.textContent).find(t => t.includes('1.0.0 → 1.1.0') && t.includes('succeeded')) || null;";
    browser
        .wait_for("the upgrade's rollout on the page", upgrade, json!([]))
        .await;
    browser
        .wait_for(
            "the upgrade's timeline and gate probes",
            "return document.querySelector('details.rollout[open] .timeline li') !== null \
                && document.querySelector('details.rollout[open] svg.chart rect') !== null;",
            json!([]),
        )
        .await;
    // The server's probe history (`GET /servers/{id}/health/history`) is plotted.
    browser
        .wait_for(
            "the probe latency over the last hour",
            "return document.querySelector('svg.chart polyline') !== null;",
            json!([]),
        )
        .await;
    browser.screenshot(&screenshot_path("server")).await;

    // A rollback, clicked and confirmed.
    browser.click("button[data-action=\"rollback\"]").await;
    browser
        .wait_for(
            "the confirmation",
            "return document.getElementById('confirm-dialog').open;",
            json!([]),
        )
        .await;
    browser.click("#confirm-ok").await;
    let said = browser
        .wait_for(
            "the rollback's outcome",
            "const o = document.querySelector('[data-outcome]'); return o && o.textContent;",
            json!([]),
        )
        .await;
    assert!(
        said.as_str().unwrap().contains("rolling back to 1.0.0"),
        "{said}"
    );
    running(&agent, "beta", "1.0.0").await;
    browser
        .wait_for(
            "the hold on the page",
            "return document.body.textContent.includes('held at 1.0.0');",
            json!([]),
        )
        .await;

    // Runs per commit and the event log.
    browser.eval("location.hash = '#/runs';", json!([])).await;
    let runs = browser
        .wait_for(
            "two runs",
            "const n = document.querySelectorAll('tr[data-run]').length; return n >= 2 && n;",
            json!([]),
        )
        .await;
    assert!(runs.as_u64().unwrap() >= 2);
    // Each applied run says what its plan did.
    browser
        .wait_for(
            "the upgrade's plan",
            "return [...document.querySelectorAll('.plan')].some(p => p.textContent === 'plan: update beta');",
            json!([]),
        )
        .await;
    // And each change of the plan the run kept, with what moved it.
    browser
        .wait_for(
            "the upgrade's plan line",
            "return [...document.querySelectorAll('.plan-lines li')].some(l => l.textContent === 'update beta: 1.0.0 → 1.1.0 (version)');",
            json!([]),
        )
        .await;
    browser.screenshot(&screenshot_path("runs")).await;
    browser.eval("location.hash = '#/events';", json!([])).await;
    browser
        .wait_for(
            "health transitions in the event log",
            "return document.querySelector('tr[data-kind=\"health.transition\"]') !== null;",
            json!([]),
        )
        .await;
    browser.screenshot(&screenshot_path("events")).await;
    // Filtered by kind (the agent filters: `GET /events/history?kind=`).
    browser
        .eval("location.hash = '#/events?kind=rollout';", json!([]))
        .await;
    browser
        .wait_for(
            "only rollout events",
            "const rows = [...document.querySelectorAll('tr[data-kind]')]; \
             return rows.length > 0 && rows.every(r => r.dataset.kind.startsWith('rollout'));",
            json!([]),
        )
        .await;

    // Never reloaded, and nothing requested but the agent.
    let mark = browser.eval("return window.__mark;", json!([])).await;
    assert_eq!(mark, "no reload");
    let requested: Value = browser
        .eval(
            "return performance.getEntriesByType('resource').map(e => e.name) \
                .concat(performance.getEntriesByType('navigation').map(e => e.name));",
            json!([]),
        )
        .await;
    let origin = agent.url.trim_end_matches('/');
    for url in requested.as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(url.starts_with(origin), "the page requested {url}");
    }
    drop(browser);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_fits_a_phone_and_needs_no_key_on_loopback_reads() {
    let name = "the_status_page_fits_a_phone";
    if !available_or_skip(name) {
        return;
    }
    let repo = ManifestRepo::new();
    repo.push_manifest(&process_manifest(&[("alpha", "1.0.0")]), "one server");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    agent.wait_running("alpha", "1.0.0", DEADLINE).await;
    let browser = Browser::start(390, 844).await;
    browser
        .goto(&format!("{}/#/servers/alpha", agent.url))
        .await;
    browser
        .wait_for(
            "alpha's page",
            "return document.querySelector('h1 [data-health]') !== null;",
            json!([]),
        )
        .await;
    let dialog = browser
        .eval(
            "return document.getElementById('key-dialog').open;",
            json!([]),
        )
        .await;
    assert_eq!(dialog, false, "loopback reads need no key");
    let overflow = browser
        .eval(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than the phone by {overflow} px"
    );
    browser.screenshot(&screenshot_path("phone-server")).await;
    // A write still needs the key: the page asks for it instead of failing silently.
    browser.click("button[data-action=\"restart\"]").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for(
            "the key dialog after a refused write",
            "return document.getElementById('key-dialog').open;",
            json!([]),
        )
        .await;
    let said = browser
        .wait_for(
            "the refusal",
            "const o = document.querySelector('[data-outcome=\"error\"]'); return o && o.textContent;",
            json!([]),
        )
        .await;
    assert!(said.as_str().unwrap().contains("UNAUTHORIZED"), "{said}");
    let (_, page) = agent.get("/servers/alpha/rollouts").await;
    assert_eq!(page["rollouts"].as_array().unwrap().len(), 1, "{page:#}");
    drop(browser);
    agent.stop().await;
}

/// A manifest of `n` example servers probed every second.
fn fleet_of(n: usize) -> String {
    let bin = crate::support::example_server_bin();
    let mut text = String::from("version: \"1.1\"\nservers:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - id: s{i:03}\n    version: \"1.0.0\"\n    process:\n      command: {}\n      args: [\"--port\", \"{{port}}\", \"--version\", \"{{version}}\"]\n    health_check: {{ interval_seconds: 1, timeout_seconds: 0.5, failure_threshold: 1, success_threshold: 1 }}\n",
            bin.display()
        ));
    }
    text
}

/// A fleet of 100 servers on the page: how long the first render takes, and how long a
/// health transition takes from the agent's event to the page (printed for BENCHMARKS.md,
/// "The status page"; the test asserts only what the page shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_a_fleet_of_100_servers_and_its_updates() {
    let name = "the_status_page_renders_a_fleet_of_100_servers";
    if !available_or_skip(name) {
        return;
    }
    let repo = ManifestRepo::new();
    repo.push_manifest(&fleet_of(100), "a hundred servers");
    let agent = TestAgent::start(repo.remote().to_str().unwrap(), Options::default()).await;
    eventually(Duration::from_secs(180), "100 servers healthy", || async {
        let (_, fleet) = agent.get("/servers").await;
        let servers = fleet["servers"].as_array()?;
        (servers.len() == 100 && servers.iter().all(|s| s["health"] == "healthy")).then_some(())
    })
    .await;

    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{}/", agent.url)).await;
    browser
        .wait_for(
            "100 rows",
            "return document.querySelectorAll('tr[data-server] [data-health=\"healthy\"]').length === 100;",
            json!([]),
        )
        .await;
    let first = browser
        .eval(
            "return performance.getEntriesByName('fleet-rendered')[0].startTime;",
            json!([]),
        )
        .await;

    let s050 = agent.server("s050").await.unwrap();
    admin(
        s050["endpoint"].as_str().unwrap(),
        "/admin/health/unhealthy",
    )
    .await;
    browser
        .wait_for(
            "s050 unhealthy on the page",
            &format!("return ({ROW_HEALTH}) === 'unhealthy';"),
            json!(["s050"]),
        )
        .await;
    let (_, page) = agent
        .get("/events/history?server=s050&kind=health.transition")
        .await;
    let at = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["data"]["to_state"] == "unhealthy")
        .unwrap_or_else(|| panic!("no transition to unhealthy: {page:#}"))["at"]
        .clone();
    // The first render after the event that shows it: the page's clock and the agent's are
    // this machine's.
    let update = browser
        .eval(
            "const at = Date.parse(arguments[0]); \
             const shown = performance.getEntriesByName('fleet-rendered') \
                .map(m => performance.timeOrigin + m.startTime).find(t => t >= at); \
             return shown - at;",
            json!([at]),
        )
        .await;
    eprintln!(
        "status page, 100 servers: first render {:.0} ms after navigation start; health event → on the page {:.0} ms",
        first.as_f64().unwrap(),
        update.as_f64().unwrap()
    );
    browser.screenshot(&screenshot_path("fleet-100")).await;
    drop(browser);
    agent.stop().await;
}
