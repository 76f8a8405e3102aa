//! Publishing versions of the example server to a test registry, as a release pipeline would.

use std::io::Write;
use std::process::{Command, Stdio};

use super::docker::{docker, example_image, with_image_build_lock};

/// Pushes `host/example/server:version`; `health` other than `healthy` makes that release's
/// `/health` start in that mode (a broken release). Returns the pushed reference.
pub fn publish(host: &str, version: &str, health: &str) -> String {
    let local = example_image(version);
    let remote = format!("{host}/example/server:{version}");
    if health == "healthy" {
        docker(&["tag", &local, &remote]);
    } else {
        with_image_build_lock(|| build_variant(&local, &remote, health));
    }
    docker(&["push", "--quiet", &remote]);
    remote
}

fn build_variant(local: &str, remote: &str, health: &str) {
    let mut child = Command::new("docker")
        .args(["build", "--quiet", "--tag", remote, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker build runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("FROM {local}\nENV EXAMPLE_SERVER_HEALTH={health}\n").as_bytes())
        .expect("write the Dockerfile");
    assert!(
        child.wait().expect("docker build").success(),
        "building {remote} failed"
    );
}
