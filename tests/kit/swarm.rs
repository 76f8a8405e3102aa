//! A real Docker Swarm of several nodes on this one machine, for tests of what only a
//! cluster shows: placement by constraint, a node that dies and comes back, ports published
//! on a node other than the manager. The recipe is the one in the design notes ("A swarm of
//! several nodes, on one machine"), made safe to run from tests:
//!
//! - Each node is a `dockerd` in its own network namespace, all on one bridge of their own,
//!   so the nodes have distinct addresses while sharing the host's kernel and disk. The
//!   daemon is entered with `nsenter --net`, not `ip netns exec`, which remounts `/sys` and
//!   leaves dockerd without its devices cgroup.
//! - Names (bridge, veths, namespaces, `/tmp` dirs) carry the test process id and a
//!   counter, and the /24 is picked from 10.232.0.0/14 away from every network the host
//!   already has, so two test processes, a benchmark and a hand-made swarm never meet.
//!   Whatever a killed test process (Ctrl-C) left behind is removed by the next swarm.
//! - Nothing reaches for a registry: the nodes have no default route, their daemons run
//!   with `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1` so a task never pulls, and images are
//!   copied in from the host engine ([`Swarm::load_image`]).
//! - Ports are published in host mode (`--publish mode=host,target=8080`) and reached on
//!   the node's address. The routing mesh needs IPVS, which this kernel lacks; its ingress
//!   network is removed at the start (see `remove_ingress`), so ingress-mode publishing is
//!   refused at `service create` instead of never answering.
//! - One swarm at a time per test process (three daemons are plenty for a 2-core CI
//!   machine), and everything is torn down on drop, panics included.
//!
//! Nodes are numbered from 1, as their labels (`node.labels.name==n1`) and addresses
//! (`.2`, `.3`, …) are, so `stop_node(2)` stops the node a `n2` constraint placed a task
//! on. Node 1 is the only manager. The calls block the calling thread: where the same
//! runtime also drives the agent under test, call them through `spawn_blocking` (a `Swarm`
//! is `Send + Sync`; share it in an `Arc`), or the agent stalls while a node restarts.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// Every name this kit gives a bridge, veth, namespace or `/tmp` dir starts with this, then
/// the owning process id in base 36, `-` and a decimal counter: `mosw2ex8g-0`. The pid in
/// the name is how a later swarm knows that a leftover's owner is gone.
const PREFIX: &str = "mosw";
/// Interface names are at most 15 bytes: the prefix (4), a pid (5 in base 36), `-`, a
/// counter (3) and the veth suffix `v<n>` (2) just fit.
const MAX_NODES: usize = 9;
/// Generous for a loaded 2-core machine (an engine starts in 1-3 s when idle); every wait is
/// a poll, so a fast machine does not wait this long.
pub const SWARM_DEADLINE: Duration = Duration::from_secs(60);
/// A single CLI call; a hung daemon must fail a test, not hang it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Teardown runs in `Drop`, maybe during a panic: it gives up sooner.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(100);
/// The manager notices a silent node after a few heartbeats; the default (5 s) would make
/// every failure test wait 15 s or more.
const HEARTBEAT: &str = "1s";

/// Whether a swarm can be built here: Docker (see `docker_or_skip`), root, and the `ip`,
/// `iptables`, `nsenter`, `setsid` and `dockerd` programs. Without them a test should
/// return early: on CI (`CI=true`) that is a failure, because CI must exercise the real
/// thing; elsewhere a skip line.
pub fn swarm_or_skip(test: &str) -> bool {
    if !super::docker::docker_or_skip(test) {
        return false;
    }
    static USABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let usable = USABLE.get_or_init(|| {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("root (network namespaces, a bridge, iptables)".to_string());
        }
        for (program, flag) in [
            ("ip", "-V"),
            ("iptables", "-V"),
            ("nsenter", "-V"),
            ("setsid", "-V"),
            ("dockerd", "--version"),
        ] {
            run(Command::new(program).arg(flag), CALL_TIMEOUT)
                .map_err(|e| format!("the `{program}` program: {e}"))?;
        }
        Ok(())
    });
    match usable {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: a Docker Swarm is required on CI (CI=true), which needs {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: a Docker Swarm needs {why}");
            false
        }
    }
}

/// A running swarm of `nodes()` nodes; dropping it removes every trace of it.
pub struct Swarm {
    names: Names,
    /// The host's address on the bridge; node *n* has `.n+1`.
    bridge_addr: Ipv4Addr,
    nodes: Vec<Node>,
    // Dropped after `Drop::drop` has torn the swarm down, so the next swarm of this process
    // starts only then.
    _turn: Turn,
}

struct Node {
    addr: Ipv4Addr,
    docker_host: String,
    /// Empty until the node has joined (only while `start` runs).
    id: String,
    run: Mutex<NodeRun>,
}

#[derive(Default)]
struct NodeRun {
    /// The daemon this process started, kept to reap it.
    child: Option<Child>,
    /// Images loaded while this node was stopped, loaded into it when it starts again.
    pending_images: Vec<String>,
}

/// A task of a service that is running, as the manager reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmTask {
    pub id: String,
    /// The node it runs on (1-based).
    pub node: usize,
    /// Its ports published in host mode, on that node's address.
    pub published_ports: Vec<u16>,
}

impl Swarm {
    /// A swarm of `nodes` nodes (1 to 9), each labelled `name=n<i>`, all `ready`; panics with
    /// the reason when it cannot be built. Call [`swarm_or_skip`] first.
    pub fn start(nodes: usize) -> Swarm {
        Swarm::try_start(nodes).unwrap_or_else(|e| panic!("cannot start a {nodes}-node swarm: {e}"))
    }

    /// [`Swarm::start`], returning why it failed instead; whatever was built is removed.
    /// Waits while another swarm of this process exists.
    pub fn try_start(nodes: usize) -> Result<Swarm, String> {
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(format!("{nodes} nodes: between 1 and {MAX_NODES}"));
        }
        let turn = Turn::take();
        remove_orphans();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let names = Names::new(
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed) % 1000,
            nodes,
        );
        // An earlier process with the same pid may have left these.
        names.teardown(&mut Vec::new());
        let mut swarm = Swarm {
            bridge_addr: Ipv4Addr::UNSPECIFIED,
            nodes: (1..=nodes)
                .map(|i| Node {
                    addr: Ipv4Addr::UNSPECIFIED,
                    docker_host: names.docker_host(i),
                    id: String::new(),
                    run: Mutex::new(NodeRun::default()),
                })
                .collect(),
            names,
            _turn: turn,
        };
        let started = Instant::now();
        // On an error the swarm is dropped here, which removes what was built.
        swarm.build()?;
        eprintln!(
            "swarm {}: {nodes} nodes on {}/24 ready in {:.1?}",
            swarm.names.tag,
            swarm.bridge_addr,
            started.elapsed()
        );
        Ok(swarm)
    }

    fn build(&mut self) -> Result<(), String> {
        let names = &self.names;
        let base = claim_subnet(&names.bridge)?;
        let [a, b, c, _] = base.octets();
        self.bridge_addr = Ipv4Addr::new(a, b, c, 1);
        for (k, node) in self.nodes.iter_mut().enumerate() {
            node.addr = Ipv4Addr::new(a, b, c, k as u8 + 2);
        }
        allow_forwarding(&names.bridge)?;
        for (k, node) in self.nodes.iter().enumerate() {
            let i = k + 1;
            let (ns, veth) = (names.netns(i), names.veth(i));
            let addr = format!("{}/24", node.addr);
            ip(&["netns", "add", &ns])?;
            // The peer is created inside the namespace, so it never appears on the host.
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &names.bridge, "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            std::fs::create_dir_all(names.node_dir(i).join("run"))
                .map_err(|e| format!("cannot create {}: {e}", names.node_dir(i).display()))?;
            // The host's /etc/docker/daemon.json (mirrors, a data root) is not ours to use.
            std::fs::write(names.config(i), "{}\n")
                .map_err(|e| format!("cannot write {}: {e}", names.config(i).display()))?;
        }
        // The engines start side by side; waiting for each in turn costs the slowest only.
        for i in 1..=self.nodes.len() {
            let child = self.spawn_dockerd(i)?;
            self.run(i).child = Some(child);
        }
        for i in 1..=self.nodes.len() {
            self.wait_engine(i)?;
        }

        let manager = self.nodes[0].addr.to_string();
        self.try_docker_on(
            1,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &manager,
                "--listen-addr",
                &format!("{manager}:2377"),
                "--dispatcher-heartbeat",
                HEARTBEAT,
            ],
        )?;
        remove_ingress(&self.nodes[0].docker_host)?;
        let token = self.try_docker_on(1, &["swarm", "join-token", "-q", "worker"])?;
        for i in 2..=self.nodes.len() {
            let addr = self.nodes[i - 1].addr.to_string();
            self.try_docker_on(
                i,
                &[
                    "swarm",
                    "join",
                    "--token",
                    &token,
                    "--advertise-addr",
                    &addr,
                    "--listen-addr",
                    &format!("{addr}:2377"),
                    &format!("{manager}:2377"),
                ],
            )?;
        }
        for i in 1..=self.nodes.len() {
            let id = self.try_docker_on(i, &["info", "--format", "{{.Swarm.NodeID}}"])?;
            if id.is_empty() {
                return Err(format!("node {i} reports no swarm node id after joining"));
            }
            self.nodes[i - 1].id = id;
        }
        for i in 1..=self.nodes.len() {
            self.try_wait_node_state(i, "ready", SWARM_DEADLINE)?;
            let id = self.nodes[i - 1].id.clone();
            self.try_docker_on(
                1,
                &["node", "update", "--label-add", &format!("name=n{i}"), &id],
            )?;
        }
        Ok(())
    }

    /// What to put in `DOCKER_HOST` to talk to the manager (node 1), e.g. for the agent under
    /// test or a `docker` command of the test's own.
    pub fn docker_host(&self) -> &str {
        &self.nodes[0].docker_host
    }

    /// `DOCKER_HOST` for node `i`: to look at what runs there without asking the manager.
    pub fn node_docker_host(&self, i: usize) -> &str {
        &self.node(i).docker_host
    }

    /// How many nodes the swarm has.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s address, where the host reaches the ports its tasks publish in host mode.
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        self.node(i).addr
    }

    /// Node `i`'s swarm node id, as `docker node ls` and a task's `NodeID` name it.
    pub fn node_id(&self, i: usize) -> &str {
        &self.node(i).id
    }

    /// The node (1-based) with swarm node id `id`, if it is one of this swarm's.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id).map(|k| k + 1)
    }

    /// The host's own address on the swarm's bridge: what a node reaches the host at, e.g. a
    /// registry or a gateway the test runs.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.bridge_addr
    }

    /// Runs `docker args` against node `i`, panicking with its stderr when it fails; returns
    /// trimmed stdout.
    pub fn docker_on(&self, i: usize, args: &[&str]) -> String {
        self.try_docker_on(i, args)
            .unwrap_or_else(|e| panic!("node {i}: {e}"))
    }

    /// [`Swarm::docker_on`] the manager, where services are created and nodes inspected.
    pub fn manager(&self, args: &[&str]) -> String {
        self.docker_on(1, args)
    }

    /// [`Swarm::docker_on`], returning the failure instead.
    pub fn try_docker_on(&self, i: usize, args: &[&str]) -> Result<String, String> {
        run(
            docker_cli(&self.node(i).docker_host).args(args),
            CALL_TIMEOUT,
        )
    }

    /// Copies `image` from the host engine (which must have it, e.g. from
    /// `docker::example_image`) into every node, because tasks never pull. A node that is
    /// stopped gets the image when [`Swarm::start_node`] starts it again, so a test can roll
    /// out a new version while a node is down.
    pub fn load_image(&self, image: &str) {
        let running: Vec<usize> = (1..=self.nodes.len())
            .filter(|&i| {
                let mut run = self.run(i);
                let up = self.pid(i, &mut run).is_some();
                if !up && !run.pending_images.iter().any(|p| p == image) {
                    run.pending_images.push(image.to_string());
                }
                up
            })
            .collect();
        self.copy_image(image, &running);
    }

    /// `docker save` on the host, `docker load` into `nodes`.
    fn copy_image(&self, image: &str, nodes: &[usize]) {
        if nodes.is_empty() {
            return;
        }
        // Two threads may load images into one swarm at once.
        static ARCHIVES: AtomicU32 = AtomicU32::new(0);
        let archive = self.names.dir.join(format!(
            "image-{}.tar",
            ARCHIVES.fetch_add(1, Ordering::Relaxed)
        ));
        let path = archive.to_str().expect("the swarm dir is UTF-8");
        super::docker::docker(&["save", "--output", path, image]);
        for &i in nodes {
            self.docker_on(i, &["load", "--quiet", "--input", path]);
        }
        let _ = std::fs::remove_file(&archive);
    }

    /// Stops node `i`'s engine as a failing machine would go: SIGTERM, SIGKILL after 20 s,
    /// and its containers with it. Returns once the daemon is gone; the manager notices a
    /// few seconds later ([`Swarm::wait_node_state`] `"down"`). Stopping node 1 leaves the
    /// swarm without its manager: nothing can be asked of it until node 1 starts again.
    pub fn stop_node(&self, i: usize) {
        let mut run = self.run(i);
        let Some(pid) = self.pid(i, &mut run) else {
            return;
        };
        let node_dir = self.names.node_dir(i);
        stop_process(pid, &mut run.child, Duration::from_secs(20));
        // After a SIGKILL the engine's containerd and shims may outlive it; a dead machine
        // runs nothing.
        kill_matching(&|cmdline| cmdline_is_of(cmdline, &node_dir, &self.names.ns_prefix(i)));
        if let Some(mut child) = run.child.take() {
            let _ = child.try_wait();
        }
        eprintln!("swarm {}: node {i} stopped", self.names.tag);
    }

    /// Starts node `i`'s engine again with the same command line, loads the images it missed,
    /// and returns once the manager sees the node `ready`. The node rejoins as its engine
    /// starts, so a task the swarm places there before those images are in fails once and
    /// is placed again.
    pub fn start_node(&self, i: usize) {
        let started = Instant::now();
        {
            let mut run = self.run(i);
            if self.pid(i, &mut run).is_some() {
                return;
            }
            let child = self
                .spawn_dockerd(i)
                .unwrap_or_else(|e| panic!("cannot start node {i}: {e}"));
            run.child = Some(child);
        }
        self.wait_engine(i)
            .unwrap_or_else(|e| panic!("node {i} did not start again: {e}"));
        let pending = std::mem::take(&mut self.run(i).pending_images);
        for image in pending {
            self.copy_image(&image, &[i]);
        }
        self.wait_node_state(i, "ready", SWARM_DEADLINE);
        eprintln!(
            "swarm {}: node {i} ready again in {:.1?}",
            self.names.tag,
            started.elapsed()
        );
    }

    /// Node `i`'s state as the manager sees it: `ready`, `down`, `unknown` or `disconnected`.
    pub fn node_state(&self, i: usize) -> String {
        self.manager(&[
            "node",
            "inspect",
            "--format",
            "{{.Status.State}}",
            self.node_id(i),
        ])
    }

    /// Waits until the manager reports node `i` in `state` (`"ready"`, `"down"`); panics
    /// after `deadline` with the state it saw last.
    pub fn wait_node_state(&self, i: usize, state: &str, deadline: Duration) {
        self.try_wait_node_state(i, state, deadline)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_wait_node_state(&self, i: usize, state: &str, deadline: Duration) -> Result<(), String> {
        let started = Instant::now();
        let id = self.node_id(i).to_string();
        loop {
            let seen = self.try_docker_on(
                1,
                &["node", "inspect", "--format", "{{.Status.State}}", &id],
            );
            if seen.as_deref() == Ok(state) {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(format!(
                    "node {i} ({id}) not {state} after {deadline:?}; last seen: {}",
                    seen.unwrap_or_else(|e| e)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The running tasks of `service`, with the node each runs on and the ports it published
    /// in host mode (`--publish mode=host,target=…` picks a free port on that node).
    pub fn running_tasks(&self, service: &str) -> Vec<SwarmTask> {
        let ids = self.manager(&[
            "service",
            "ps",
            "--quiet",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            service,
        ]);
        let mut tasks = Vec::new();
        for id in ids.split_whitespace() {
            // A task can go between the two calls.
            let Ok(line) = self.try_docker_on(
                1,
                &[
                    "inspect",
                    "--type",
                    "task",
                    "--format",
                    "{{.Status.State}} {{.NodeID}}{{range .Status.PortStatus.Ports}} {{.PublishedPort}}{{end}}",
                    id,
                ],
            ) else {
                continue;
            };
            let mut words = line.split_whitespace();
            if words.next() != Some("running") {
                continue;
            }
            let Some(node) = words.next().and_then(|n| self.node_index(n)) else {
                continue;
            };
            tasks.push(SwarmTask {
                id: id.to_string(),
                node,
                published_ports: words.filter_map(|p| p.parse().ok()).collect(),
            });
        }
        tasks
    }

    fn node(&self, i: usize) -> &Node {
        assert!(
            (1..=self.nodes.len()).contains(&i),
            "node {i}: this swarm's nodes are 1 to {}",
            self.nodes.len()
        );
        &self.nodes[i - 1]
    }

    fn run(&self, i: usize) -> MutexGuard<'_, NodeRun> {
        self.node(i)
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `i`'s daemon, if it runs.
    fn pid(&self, i: usize, run: &mut NodeRun) -> Option<i32> {
        let pid = daemon_pid(&self.names.pidfile(i), &self.names.node_dir(i))?;
        (!process_gone(pid, &mut run.child)).then_some(pid)
    }

    fn spawn_dockerd(&self, i: usize) -> Result<Child, String> {
        let names = &self.names;
        let dir = names.node_dir(i);
        let path = |sub: &str| dir.join(sub).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(names.log(i))
            .map_err(|e| format!("cannot open {}: {e}", names.log(i).display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", names.log(i).display()))?;
        let namespace = names.ns_prefix(i);
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", names.netns(i)))
            .args(["setsid", "dockerd", "--config-file"])
            .arg(names.config(i))
            .args(["--data-root", &path("data")])
            .args(["--exec-root", &path("exec")])
            .args(["--pidfile", &path("run/docker.pid")])
            .args(["-H", &names.docker_host(i)])
            // Its own containerd namespaces, so its shims are told apart from every other
            // engine's even if a system containerd were shared.
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}p")])
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            // A node reaches nothing but the bridge, and no proxy either.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run nsenter … dockerd for node {i}: {e}"))
    }

    /// Polls node `i`'s engine until it answers; fails at once if its daemon exits.
    fn wait_engine(&self, i: usize) -> Result<(), String> {
        let started = Instant::now();
        loop {
            {
                let mut run = self.run(i);
                if let Some(child) = run.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    run.child = None;
                    return Err(format!(
                        "dockerd of node {i} exited ({status}); its log ends:\n{}",
                        log_tail(&self.names.log(i), 20)
                    ));
                }
            }
            let answer = run(
                docker_cli(&self.node(i).docker_host).args(["info", "--format", "{{.ID}}"]),
                Duration::from_secs(10),
            );
            match answer {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > SWARM_DEADLINE => {
                    return Err(format!(
                        "node {i}'s engine did not answer within {SWARM_DEADLINE:?} ({e}); its log ends:\n{}",
                        log_tail(&self.names.log(i), 20)
                    ));
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 1..=self.nodes.len() {
                eprintln!(
                    "swarm {}: node {i}'s dockerd log ends:\n{}",
                    self.names.tag,
                    log_tail(&self.names.log(i), 15)
                );
            }
        }
        let mut children: Vec<Option<Child>> = self
            .nodes
            .iter_mut()
            .map(|n| {
                n.run
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .child
                    .take()
            })
            .collect();
        let started = Instant::now();
        self.names.teardown(&mut children);
        eprintln!(
            "swarm {}: removed in {:.1?}",
            self.names.tag,
            started.elapsed()
        );
    }
}

/// The names of one swarm's parts, all derived from its tag: enough to tear it down without
/// anything else, also when its owner is gone.
struct Names {
    tag: String,
    dir: PathBuf,
    bridge: String,
    nodes: usize,
}

impl Names {
    fn new(pid: u32, counter: u32, nodes: usize) -> Names {
        let tag = format!("{PREFIX}{}-{counter}", base36(pid));
        Names {
            dir: PathBuf::from("/tmp").join(&tag),
            bridge: tag.clone(),
            tag,
            nodes,
        }
    }

    fn netns(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    /// The host end of node `i`'s veth; its other end is `eth0` in the namespace.
    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    /// Node `i`'s containerd namespace; its shims carry it on their command line.
    fn ns_prefix(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    /// Short on purpose: the socket path below it must stay under 108 bytes.
    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}"))
    }

    fn config(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("daemon.json")
    }

    fn log(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("dockerd.log")
    }

    fn pidfile(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("run/docker.pid")
    }

    fn docker_host(&self, i: usize) -> String {
        format!("unix://{}/run/docker.sock", self.node_dir(i).display())
    }

    /// Removes everything, in the reverse of the order it was built; best effort, quiet,
    /// never panics (it runs in `Drop`). `children` are the daemons this process started,
    /// to be reaped.
    fn teardown(&self, children: &mut [Option<Child>]) {
        // The workers leave side by side, then the manager, so none waits for a manager
        // that is gone.
        let leave = |i: usize| {
            if self.node_dir(i).join("run/docker.sock").exists() {
                let _ = run(
                    docker_cli(&self.docker_host(i)).args(["swarm", "leave", "--force"]),
                    TEARDOWN_TIMEOUT,
                );
            }
        };
        std::thread::scope(|s| {
            for i in 2..=self.nodes {
                s.spawn(move || leave(i));
            }
        });
        leave(1);
        // All daemons get SIGTERM at once and shut down side by side.
        let pids: Vec<(usize, i32)> = (1..=self.nodes)
            .filter_map(|i| Some((i, daemon_pid(&self.pidfile(i), &self.node_dir(i))?)))
            .collect();
        for &(_, pid) in &pids {
            signal(pid, libc::SIGTERM);
        }
        for (i, pid) in pids {
            let mut none = None;
            let child = children.get_mut(i - 1).unwrap_or(&mut none);
            stop_process(pid, child, TEARDOWN_TIMEOUT);
        }
        // Reaped if they are gone; never a blocking wait in `Drop`.
        for child in children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.try_wait();
        }
        let dir = self.dir.clone();
        let tag = self.tag.clone();
        kill_matching(&|cmdline| cmdline_is_of(cmdline, &dir, &format!("{tag}-")));
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        for i in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.netns(i)]);
            // Gone with its namespace, unless something still holds that.
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        for chain in ["DOCKER-USER", "FORWARD"] {
            // A rule inserted twice (a retried setup) needs two deletes.
            for _ in 0..5 {
                if iptables(&forward_rule("-D", chain, &self.bridge)).is_err() {
                    break;
                }
            }
        }
    }
}

/// Serialises swarms within this test process; held by a [`Swarm`] until its teardown is
/// done. A flag and a condvar rather than a held `MutexGuard`, so a `Swarm` is `Send` and
/// can move into `spawn_blocking`.
struct Turn;

static BUSY: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();

impl Turn {
    fn take() -> Turn {
        let mut busy = BUSY.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy {
            busy = FREED.wait(busy).unwrap_or_else(PoisonError::into_inner);
        }
        *busy = true;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *BUSY.lock().unwrap_or_else(PoisonError::into_inner) = false;
        FREED.notify_one();
    }
}

/// Removes the swarm's ingress network before any worker joins. Its routing mesh needs
/// IPVS, which this machine's kernel lacks (the mesh never answers here), and while it
/// exists every engine's shutdown (a teardown, a [`Swarm::stop_node`]) waits 5 s for its
/// removal ("timeout while waiting for ingress network removal"). Without it a service that
/// publishes in ingress mode (`--publish 8080`, the CLI's default) is refused at creation
/// instead of silently never answering; host mode (`mode=host`) is what works here.
fn remove_ingress(manager: &str) -> Result<(), String> {
    // The CLI asks for confirmation (the routing-mesh warning).
    run_with_input(
        docker_cli(manager).args(["network", "rm", "ingress"]),
        b"y\n",
        CALL_TIMEOUT,
    )?;
    // The swarm forgets it at once; the manager's engine lets go of it a moment later.
    let started = Instant::now();
    while run(
        docker_cli(manager).args(["network", "inspect", "ingress"]),
        CALL_TIMEOUT,
    )
    .is_ok()
    {
        if started.elapsed() > SWARM_DEADLINE {
            return Err(format!(
                "the ingress network is still there {SWARM_DEADLINE:?} after `docker network rm ingress`"
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Tears down the swarms whose owning process is gone (a test killed by Ctrl-C or a
/// timeout never ran its `Drop`), found by name: namespaces, bridges, `/tmp` dirs and
/// iptables rules.
fn remove_orphans() {
    let mut names: Vec<String> = Vec::new();
    if let Ok(list) = ip(&["netns", "list"]) {
        names.extend(
            list.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(String::from),
        );
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        // "7: mosw1a2b-0: <BROADCAST,…" or "8: mosw1a2b-0v1@if2: …"
        names.extend(
            links
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n).to_string()),
        );
    }
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        names.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    for chain in ["DOCKER-USER", "FORWARD"] {
        if let Ok(rules) = iptables(&["-S", chain]) {
            names.extend(
                rules
                    .lines()
                    .filter_map(|l| l.split(" -i ").nth(1))
                    .filter_map(|r| r.split_whitespace().next())
                    .map(String::from),
            );
        }
    }
    let mut orphans: Vec<(String, u32)> = names
        .iter()
        .filter_map(|n| parse_tag(n))
        .filter(|(_, pid)| {
            *pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
        .map(|(tag, pid)| (tag.to_string(), pid))
        .collect();
    orphans.sort();
    orphans.dedup();
    for (tag, _) in orphans {
        eprintln!("swarm: removing {tag}, left by a test process that is gone");
        let names = Names {
            dir: PathBuf::from("/tmp").join(&tag),
            bridge: tag.clone(),
            tag,
            nodes: MAX_NODES,
        };
        names.teardown(&mut Vec::new());
    }
}

/// `mosw<pid base 36>-<counter>` at the start of `name` (a bridge, `…v<i>` veth, `…-<i>`
/// namespace or a dir), and that pid.
fn parse_tag(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(PREFIX)?;
    let pid_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c.is_ascii_lowercase()))
        .unwrap_or(rest.len());
    let pid = u32::from_str_radix(&rest[..pid_len], 36).ok()?;
    let after = rest[pid_len..].strip_prefix('-')?;
    let counter_len = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    if counter_len == 0 {
        return None;
    }
    let end = PREFIX.len() + pid_len + 1 + counter_len;
    match name[end..].chars().next() {
        None | Some('-') | Some('v') => Some((&name[..end], pid)),
        Some(_) => None,
    }
}

fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(n % 36, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// Makes the bridge and gives it `10.a.b.1/24` for a /24 of 10.232.0.0/14 that no interface
/// or route of the host touches; the first choice is derived from the bridge's name, so
/// concurrent processes start apart. Returns the /24's network address.
fn claim_subnet(bridge: &str) -> Result<Ipv4Addr, String> {
    ip(&["link", "add", bridge, "type", "bridge"])?;
    ip(&["link", "set", bridge, "up"])?;
    let seed = bridge.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    for k in 0..1024_u64 {
        let slot = (seed.wrapping_add(k) % 1024) as u16;
        let net = Ipv4Addr::new(10, 232 + (slot / 256) as u8, (slot % 256) as u8, 0);
        if host_networks()?
            .iter()
            .any(|&(a, len)| overlaps(a, len, net, 24))
        {
            continue;
        }
        let [a, b, c, _] = net.octets();
        ip(&["addr", "add", &format!("{a}.{b}.{c}.1/24"), "dev", bridge])?;
        // Another process may have taken the same /24 at the same moment: then both move on.
        let others = ip(&["-4", "-o", "addr", "show"])?
            .lines()
            .filter(|l| l.split_whitespace().nth(1) != Some(bridge))
            .filter_map(|l| parse_cidr(l.split(" inet ").nth(1)?.split_whitespace().next()?))
            .any(|(addr, len)| overlaps(addr, len, net, 24));
        if !others {
            return Ok(net);
        }
        ip(&["addr", "flush", "dev", bridge])?;
    }
    Err("no free /24 in 10.232.0.0/14".to_string())
}

/// Every network the host has an address in or a route to.
fn host_networks() -> Result<Vec<(Ipv4Addr, u8)>, String> {
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    let mut nets: Vec<(Ipv4Addr, u8)> = addrs
        .lines()
        .filter_map(|l| parse_cidr(l.split(" inet ").nth(1)?.split_whitespace().next()?))
        .collect();
    nets.extend(routes.lines().filter_map(|l| {
        let first = l
            .split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        parse_cidr(first)
    }));
    Ok(nets)
}

/// `10.0.0.0/8` or `10.1.2.3` (a /32).
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    Some((addr.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?))
}

fn overlaps(a: Ipv4Addr, a_len: u8, b: Ipv4Addr, b_len: u8) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a) & mask == u32::from(b) & mask
}

/// The host engine sets the FORWARD policy to DROP, and with `br_netfilter` traffic between
/// two ports of one bridge passes FORWARD: the nodes could not reach each other. Into
/// DOCKER-USER, which the host engine keeps first in FORWARD; without a host engine (no
/// such chain) into FORWARD itself.
fn allow_forwarding(bridge: &str) -> Result<(), String> {
    let chain = if iptables(&["-n", "-L", "DOCKER-USER"]).is_ok() {
        "DOCKER-USER"
    } else {
        "FORWARD"
    };
    iptables(&forward_rule("-I", chain, bridge)).map(drop)
}

fn forward_rule<'a>(op: &'a str, chain: &'a str, bridge: &'a str) -> [&'a str; 8] {
    [op, chain, "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
}

fn iptables(args: &[&str]) -> Result<String, String> {
    // -w: another process (a host engine starting) may hold the xtables lock.
    run(Command::new("iptables").arg("-w").args(args), CALL_TIMEOUT)
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args), CALL_TIMEOUT)
}

/// The docker CLI aimed at one engine, whatever context or TLS settings the caller has.
fn docker_cli(host: &str) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(["-H", host])
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    cmd
}

/// Runs `cmd` to completion within `timeout` (killed after it); returns its trimmed stdout,
/// or what failed with its stderr.
fn run(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    run_with_input(cmd, b"", timeout)
}

/// [`run`], with `input` on the command's stdin (an answer to a prompt).
fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Result<String, String> {
    let what = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let pid = child.id() as i32;
    let stdin = child.stdin.take();
    let input = input.to_vec();
    let (tx, rx) = mpsc::channel();
    // wait_with_output drains both pipes, so a chatty command cannot block on a full one.
    std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // Closed when dropped: the command sees the end of its input.
            let _ = std::io::Write::write_all(&mut stdin, &input);
        }
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| format!("{what}: {e}"))?,
        Err(_) => {
            signal(pid, libc::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(format!("{what} did not finish within {timeout:?}"));
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The pid in a daemon's pid file, if that process is still the daemon of `node_dir` (a
/// stale pid file may name a reused pid).
fn daemon_pid(pidfile: &Path, node_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let dir = format!("{}/", node_dir.display());
    (pid > 1 && cmdline(pid)?.contains(&dir)).then_some(pid)
}

/// `/proc/<pid>/cmdline` with spaces between the arguments.
fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Whether a command line belongs to the engine under `dir` (its dockerd, containerd or
/// a shim, whose socket is below `dir`), or is a shim of a containerd namespace starting
/// with `namespace`.
fn cmdline_is_of(cmdline: &str, dir: &Path, namespace: &str) -> bool {
    cmdline.contains(&format!("{}/", dir.display()))
        || cmdline.contains(&format!("-namespace {namespace}"))
}

fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory effects; pid names one process this kit started or
        // found by its command line (never a group: pid > 1).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Whether `pid` has exited: reaped if it is `child`, otherwise absent or a zombie.
fn process_gone(pid: i32, child: &mut Option<Child>) -> bool {
    if let Some(c) = child.as_mut()
        && c.id() as i32 == pid
    {
        return !matches!(c.try_wait(), Ok(None));
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// SIGTERM, then SIGKILL once `grace` has passed; returns when the process is gone (or
/// after 10 s more, if even SIGKILL did not end it).
fn stop_process(pid: i32, child: &mut Option<Child>, grace: Duration) {
    signal(pid, libc::SIGTERM);
    let started = Instant::now();
    while !process_gone(pid, child) {
        if started.elapsed() > grace {
            signal(pid, libc::SIGKILL);
            if started.elapsed() > grace + Duration::from_secs(10) {
                return;
            }
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILLs every process whose command line `matches`, and the children of those (a
/// container's first process is a shim's child, and dies with the shim only if it is told
/// to); waits up to 10 s until they are gone.
fn kill_matching(matches: &dyn Fn(&str) -> bool) {
    let me = std::process::id() as i32;
    let mut procs: Vec<(i32, i32, String)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            procs.push((pid, ppid, cmdline(pid).unwrap_or_default()));
        }
    }
    let matched: Vec<i32> = procs
        .iter()
        .filter(|(pid, _, cmd)| *pid != me && matches(cmd))
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut doomed: Vec<i32> = procs
        .iter()
        .filter(|(pid, ppid, _)| *pid != me && matched.contains(ppid))
        .map(|(pid, _, _)| *pid)
        .collect();
    doomed.extend(&matched);
    for &pid in &doomed {
        signal(pid, libc::SIGKILL);
    }
    let started = Instant::now();
    while doomed.iter().any(|&pid| !process_gone(pid, &mut None))
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(POLL);
    }
}

/// Detaches every mount at or below `dir`, deepest first: a daemon that was killed leaves
/// its data root's bind mount, overlay mounts and network namespace files behind, and
/// those keep the dir from being removed and a namespace from being freed.
fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    let root = dir.display().to_string();
    let below = format!("{root}/");
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| *p == root || p.starts_with(&below))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        let Ok(path) = std::ffi::CString::new(point) else {
            continue;
        };
        // SAFETY: umount2(2) reads a NUL-terminated path that lives across the call.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// The last `lines` lines of a log, for a failure message, without the complaints about
/// IPVS and neighbour-table settings a namespaced engine makes at every turn here.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("error reading the kernel parameter"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lead_back_to_their_swarm_and_owner() {
        let names = Names::new(4_194_303, 999, MAX_NODES);
        for name in [
            names.bridge.clone(),
            names.veth(MAX_NODES),
            names.netns(MAX_NODES),
        ] {
            assert!(name.len() <= 15, "{name} is too long for an interface");
            assert_eq!(
                parse_tag(&name),
                Some((names.tag.as_str(), 4_194_303)),
                "{name}"
            );
        }
        assert!(names.docker_host(MAX_NODES).len() < 100);
        assert_eq!(parse_tag("mosw1a-2x"), None);
        assert_eq!(parse_tag("mosw1a"), None);
        assert_eq!(parse_tag("br-sw"), None);
    }

    #[test]
    fn overlapping_networks() {
        let net = Ipv4Addr::new(10, 232, 7, 0);
        assert!(overlaps(Ipv4Addr::new(10, 0, 0, 0), 8, net, 24));
        assert!(overlaps(Ipv4Addr::new(10, 232, 7, 9), 32, net, 24));
        assert!(!overlaps(Ipv4Addr::new(10, 231, 0, 1), 24, net, 24));
        assert!(overlaps(Ipv4Addr::new(0, 0, 0, 0), 0, net, 24));
    }
}
