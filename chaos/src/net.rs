//! Where the nodes live on the network, and the network faults.
//!
//! [`Network::Namespaces`]: each node in its own Linux network namespace with its own
//! address `10.213.<run>.<node>` on a veth pair whose other end is on a bridge the suite
//! creates (the suite itself reaches the nodes through the bridge's address `.254`).
//! Partitions and packet loss are `iptables` rules inside the namespaces (nf_tables
//! backend). Everything is removed when the value is dropped, also after a failure.
//!
//! [`Network::Loopback`]: where namespaces are not permitted (no root, no `ip`), every
//! node listens on its own `127.x.y.<node>` address; processes can still be killed and
//! paused, but no network fault can be injected, and scenarios that need one are skipped
//! with a message saying so.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The gRPC port every node listens on (each has its own address).
pub const PORT: u16 = 7100;

/// How the nodes are reached and cut off.
#[derive(Debug)]
pub enum Network {
    /// One namespace per node, on a bridge.
    Namespaces {
        /// Third octet of the run's subnet `10.213.<run>.0/24`.
        run: u8,
        /// The nodes, `1..=nodes`.
        nodes: u8,
        /// Whether the bridge's forwarding rule was added to the host's FORWARD chain
        /// (and must be removed).
        forward_rule: bool,
    },
    /// Loopback addresses; no network faults.
    Loopback {
        /// Second and third octets of `127.a.b.<node>`.
        a: u8,
        /// See `a`.
        b: u8,
    },
}

/// Why a network command failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {reason}")]
pub struct NetError {
    /// The command line.
    pub command: String,
    /// Its stderr, or why it could not run.
    pub reason: String,
}

/// Runs `program args`; an error with its stderr unless it succeeds.
pub fn exec(program: &str, args: &[&str]) -> Result<(), NetError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError { command: command.clone(), reason: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(NetError { command, reason: format!("{}: {reason}", output.status) })
    }
}

impl Network {
    /// Namespaces for `nodes` nodes if this process may create them, else loopback; the
    /// second value says why namespaces were not used.
    #[must_use]
    pub fn create(nodes: u8, prefer_namespaces: bool) -> (Self, Option<String>) {
        // A new id for every network this process makes: the kernel frees a deleted
        // namespace's links in the background, so names are never reused at once.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pid = std::process::id();
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = u8::try_from(pid.wrapping_add(made) % 250).unwrap_or(0) + 1;
        let loopback = Self::Loopback { a: 100 + u8::try_from(pid % 100).unwrap_or(0), b: run };
        if !prefer_namespaces {
            return (loopback, Some("--loopback given".to_owned()));
        }
        let mut net = Self::Namespaces { run, nodes, forward_rule: false };
        match net.build() {
            Ok(()) => (net, None),
            Err(e) => {
                drop(net); // removes whatever was made
                (loopback, Some(e.to_string()))
            }
        }
    }

    fn bridge(run: u8) -> String {
        format!("tchaos{run}br")
    }

    fn namespace(run: u8, node: u8) -> String {
        format!("tchaos{run}n{node}")
    }

    fn veth(run: u8, node: u8) -> String {
        format!("tchaos{run}v{node}")
    }

    fn build(&mut self) -> Result<(), NetError> {
        let Self::Namespaces { run, nodes, forward_rule } = self else { return Ok(()) };
        let (run, nodes) = (*run, *nodes);
        let bridge = Self::bridge(run);
        let gateway = format!("10.213.{run}.254/24");
        run_all(&[
            &["ip", "link", "add", &bridge, "type", "bridge"],
            &["ip", "addr", "add", &gateway, "dev", &bridge],
            &["ip", "link", "set", &bridge, "up"],
        ])?;
        // Docker hosts drop forwarded packets by default, and bridged packets pass the
        // host's FORWARD chain when br_netfilter is loaded: let the bridge's own through.
        exec("iptables", &["-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"])?;
        *forward_rule = true;
        for node in 1..=nodes {
            let (ns, veth) = (Self::namespace(run, node), Self::veth(run, node));
            let addr = format!("10.213.{run}.{node}/24");
            run_all(&[
                &["ip", "netns", "add", &ns],
                &["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns],
                &["ip", "link", "set", &veth, "master", &bridge, "up"],
                &["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"],
                &["ip", "-n", &ns, "link", "set", "eth0", "up"],
                &["ip", "-n", &ns, "link", "set", "lo", "up"],
            ])?;
        }
        Ok(())
    }

    /// Whether network faults can be injected.
    #[must_use]
    pub fn faults_possible(&self) -> bool {
        matches!(self, Self::Namespaces { .. })
    }

    /// `namespaces` or `loopback`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespaces { .. } => "namespaces",
            Self::Loopback { .. } => "loopback",
        }
    }

    /// Node `node`'s address.
    #[must_use]
    pub fn ip(&self, node: u8) -> Ipv4Addr {
        match *self {
            Self::Namespaces { run, .. } => Ipv4Addr::new(10, 213, run, node),
            Self::Loopback { a, b } => Ipv4Addr::new(127, a, b, node),
        }
    }

    /// Node `node`'s `host:port`.
    #[must_use]
    pub fn addr(&self, node: u8) -> String {
        format!("{}:{PORT}", self.ip(node))
    }

    /// A command that runs `program` as node `node` (inside its namespace).
    #[must_use]
    pub fn command(&self, node: u8, program: &std::path::Path) -> Command {
        match *self {
            Self::Namespaces { run, .. } => {
                // `ip netns exec` execs the program in place: the child's pid is the
                // program's, so signals reach it directly.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &Self::namespace(run, node)]).arg(program);
                command
            }
            Self::Loopback { .. } => Command::new(program),
        }
    }

    fn iptables(&self, node: u8, rule: &[&str]) -> Result<(), NetError> {
        let Self::Namespaces { run, .. } = *self else {
            return Err(NetError {
                command: format!("iptables {}", rule.join(" ")),
                reason: "no network faults on loopback".to_owned(),
            });
        };
        let ns = Self::namespace(run, node);
        let mut args = vec!["netns", "exec", &ns, "iptables"];
        args.extend_from_slice(rule);
        exec("ip", &args)
    }

    /// Node `to` stops hearing node `from` (one way: `from` may still hear `to`).
    ///
    /// # Errors
    /// On loopback, or if iptables fails.
    pub fn drop_from(&self, to: u8, from: u8) -> Result<(), NetError> {
        let source = self.ip(from).to_string();
        self.iptables(to, &["-A", "INPUT", "-s", &source, "-j", "DROP"])
    }

    /// Nodes `a` and `b` stop hearing each other.
    ///
    /// # Errors
    /// See [`Self::drop_from`].
    pub fn cut(&self, a: u8, b: u8) -> Result<(), NetError> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// Node `node` drops each incoming packet with probability `percent` / 100.
    ///
    /// # Errors
    /// See [`Self::drop_from`].
    pub fn lossy(&self, node: u8, percent: u8) -> Result<(), NetError> {
        let probability = format!("{:.2}", f64::from(percent.min(100)) / 100.0);
        self.iptables(
            node,
            &[
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )
    }

    /// Removes every network fault.
    ///
    /// # Errors
    /// If iptables fails (nothing to do on loopback).
    pub fn heal(&self) -> Result<(), NetError> {
        let Self::Namespaces { nodes, .. } = *self else { return Ok(()) };
        for node in 1..=nodes {
            self.iptables(node, &["-F", "INPUT"])?;
        }
        Ok(())
    }
}

fn run_all(commands: &[&[&str]]) -> Result<(), NetError> {
    for command in commands {
        exec(command[0], &command[1..])?;
    }
    Ok(())
}

impl Drop for Network {
    fn drop(&mut self) {
        let Self::Namespaces { run, nodes, forward_rule } = *self else { return };
        // Best effort, each on its own: a step that was never made fails harmlessly.
        for node in 1..=nodes {
            // Deleting the host's end removes the pair now (a namespace's links may
            // otherwise outlive it for a while).
            let _ = exec("ip", &["link", "del", &Self::veth(run, node)]);
            let _ = exec("ip", &["netns", "del", &Self::namespace(run, node)]);
        }
        let bridge = Self::bridge(run);
        if forward_rule {
            let _ =
                exec("iptables", &["-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]);
        }
        let _ = exec("ip", &["link", "del", &bridge]);
    }
}
