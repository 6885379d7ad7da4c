//! The nemeses: faults injected into a running cluster on a schedule, each healed before
//! the next, every one recorded with its times.
//!
//! A schedule is bounded in count and in time: `rounds` rounds of (quiet, fault held for
//! `hold`, heal), and never past the workload's end.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::Cluster;

/// How often a leader-transfer storm moves a shard's leadership.
pub const STORM_INTERVAL: Duration = Duration::from_millis(300);
/// How long past its hold a node given a crashing failpoint may take to reach it before
/// the fault counts as not made.
pub const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long a membership change may take to complete when it is undone.
pub const MEMBERSHIP_WAIT: Duration = Duration::from_secs(30);
/// Fsyncs a node makes after its restart before the injected fsync error.
pub const FSYNCS_BEFORE_ERROR: u32 = 20;
/// The clock skew of `clock-skew`, at most (either way).
pub const SKEW_MAX_S: u64 = 120;
/// The clock skew of `clock-skew`, at least (either way).
pub const SKEW_MIN_S: u64 = 5;
/// Where libfaketime (Debian's `faketime`) is looked for.
pub const FAKETIME_LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];
/// The coordinator's failpoints (tally-node `service::xshard`), one per two-phase step.
pub const COORDINATOR_STEPS: [&str; 3] = [
    "coordinator::after_first_leg",
    "coordinator::after_decision",
    "coordinator::between_resolutions",
];

/// The libfaketime library, if installed.
#[must_use]
pub fn faketime_lib() -> Option<&'static str> {
    FAKETIME_LIBS.into_iter().find(|p| std::path::Path::new(p).exists())
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// SIGKILL one random node, restart it when healing.
    KillOne,
    /// SIGKILL a minority of the nodes at once.
    KillMinority,
    /// SIGKILL the leader of a random shard.
    KillLeader,
    /// SIGSTOP one random node, SIGCONT when healing.
    Pause,
    /// Cut the leader of a random shard off from every other node.
    IsolateLeader,
    /// Split the nodes into a random majority and minority.
    MajorityMinority,
    /// Two halves that hear only one node in the middle (with 3 nodes: 1 and 3 cut).
    Bridge,
    /// The nodes in a ring, each hearing only its neighbours (needs 5 or more nodes to
    /// cut anything).
    Ring,
    /// The leader of a random shard stops hearing every other node (they still hear it).
    OneWay,
    /// Every node drops 20 % of incoming packets at random.
    Loss,
    /// Leadership of random shards moved to random nodes every [`STORM_INTERVAL`].
    LeaderStorm,
    /// A random node restarted with failing WAL fsyncs (failpoint `storage::fsync` after
    /// [`FSYNCS_BEFORE_ERROR`]): it must stop; restarted clean when healing.
    FsyncError,
    /// A random node restarted to crash (panic, the process aborts) at one two-phase step
    /// of the next cross-shard transaction it coordinates; restarted clean when healing.
    CoordinatorCrash,
    /// A random node restarted with its wall clock skewed (libfaketime) by
    /// [`SKEW_MIN_S`]..=[`SKEW_MAX_S`] seconds either way; restarted on the true clock
    /// when healing.
    ClockSkew,
    /// A random node (the leader, every other time) removed from a random shard's
    /// replicas (`SetShardReplicas`); re-added when healing.
    Membership,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Self; 15] = [
        Self::KillOne,
        Self::KillMinority,
        Self::KillLeader,
        Self::Pause,
        Self::IsolateLeader,
        Self::MajorityMinority,
        Self::Bridge,
        Self::Ring,
        Self::OneWay,
        Self::Loss,
        Self::LeaderStorm,
        Self::FsyncError,
        Self::CoordinatorCrash,
        Self::ClockSkew,
        Self::Membership,
    ];

    /// Its name on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::KillOne => "kill-one",
            Self::KillMinority => "kill-minority",
            Self::KillLeader => "kill-leader",
            Self::Pause => "pause",
            Self::IsolateLeader => "isolate-leader",
            Self::MajorityMinority => "majority-minority",
            Self::Bridge => "bridge",
            Self::Ring => "ring",
            Self::OneWay => "one-way",
            Self::Loss => "loss",
            Self::LeaderStorm => "leader-storm",
            Self::FsyncError => "fsync-error",
            Self::CoordinatorCrash => "coordinator-crash",
            Self::ClockSkew => "clock-skew",
            Self::Membership => "membership",
        }
    }

    /// The nemesis named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    /// Whether it needs network faults (namespaces).
    #[must_use]
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Self::IsolateLeader
                | Self::MajorityMinority
                | Self::Bridge
                | Self::Ring
                | Self::OneWay
                | Self::Loss
        )
    }
}

impl Nemesis {
    /// Whether it needs a `tallyd` built with the `failpoints` feature.
    #[must_use]
    pub fn needs_failpoints(self) -> bool {
        matches!(self, Self::FsyncError | Self::CoordinatorCrash)
    }

    /// Whether it needs libfaketime.
    #[must_use]
    pub fn needs_faketime(self) -> bool {
        self == Self::ClockSkew
    }
}

/// One fault as injected.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// The nemesis.
    pub nemesis: Nemesis,
    /// What exactly was done.
    pub what: String,
    /// Injected at, milliseconds since the start of the run.
    pub at_ms: u64,
    /// Healed at.
    pub healed_ms: u64,
    /// Problems while injecting or healing (a fault that could not be made is reported,
    /// not hidden).
    pub errors: Vec<String>,
    /// How far ahead a node's wall clock was set (`clock-skew`), milliseconds: cluster
    /// time never goes back, so pending timeouts can end up to this much later in real
    /// time once the clock is true again (`docs/ARCHITECTURE.md`, "Clock skew").
    pub clock_ahead_ms: u64,
}

/// The schedule's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Faults, at most.
    pub rounds: u32,
    /// Quiet time before each fault.
    pub quiet: Duration,
    /// How long each fault is held.
    pub hold: Duration,
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs `nemesis` on `cluster` by `schedule` until `end`; the faults injected.
pub async fn run(
    cluster: &tokio::sync::Mutex<Cluster>,
    nemesis: Nemesis,
    schedule: Schedule,
    seed: u64,
    start: Instant,
    end: Instant,
) -> Vec<FaultRecord> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let mut faults = Vec::new();
    for _ in 0..schedule.rounds {
        if Instant::now() + schedule.quiet + schedule.hold > end {
            break;
        }
        tokio::time::sleep(schedule.quiet).await;
        let at_ms = ms(start);
        let mut errors = Vec::new();
        let (what, undo) = inject(cluster, nemesis, &mut rng, &mut errors).await;
        if nemesis == Nemesis::LeaderStorm {
            storm(cluster, &mut rng, Instant::now() + schedule.hold, &mut errors).await;
        } else {
            tokio::time::sleep(schedule.hold).await;
        }
        heal(cluster, &undo, &mut errors).await;
        let clock_ahead_ms = undo.clock_ahead_ms;
        faults.push(FaultRecord {
            nemesis,
            what,
            at_ms,
            healed_ms: ms(start),
            errors,
            clock_ahead_ms,
        });
    }
    faults
}

/// What healing must undo.
#[derive(Debug, Default)]
struct Undo {
    restart: Vec<u8>,
    resume: Vec<u8>,
    network: bool,
    /// Nodes that must stop by themselves (a failpoint), then restart clean.
    must_exit: Vec<u8>,
    /// Nodes to restart with their usual environment (a skewed clock).
    restart_clean: Vec<u8>,
    /// A shard whose replicas go back to every node.
    replicas: Option<u32>,
    /// A node's wall clock was set this far ahead.
    clock_ahead_ms: u64,
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// Kills node `node` and starts it again with `extra` environment.
fn restart_with(c: &mut Cluster, node: u8, extra: &[(String, String)], errors: &mut Vec<String>) {
    c.kill(node);
    if let Err(e) = c.spawn_with(node, extra) {
        errors.push(e.to_string());
    }
}

fn pick(rng: &mut SmallRng, nodes: &[u8], count: usize) -> Vec<u8> {
    let mut left = nodes.to_vec();
    let mut picked = Vec::new();
    while picked.len() < count && !left.is_empty() {
        picked.push(left.swap_remove(rng.random_range(0..left.len())));
    }
    picked.sort_unstable();
    picked
}

async fn random_leader(cluster: &Cluster, rng: &mut SmallRng, shards: u32) -> Option<(u32, u8)> {
    let shard = rng.random_range(1..=shards);
    cluster.leader_of(shard).await.map(|leader| (shard, leader))
}

async fn inject(
    cluster: &tokio::sync::Mutex<Cluster>,
    nemesis: Nemesis,
    rng: &mut SmallRng,
    errors: &mut Vec<String>,
) -> (String, Undo) {
    let mut c = cluster.lock().await;
    let nodes = c.nodes();
    let shards = shard_count(&c).await;
    let mut undo = Undo::default();
    let mut net = |result: Result<(), crate::net::NetError>| {
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    };
    let what = match nemesis {
        Nemesis::KillOne | Nemesis::KillMinority | Nemesis::KillLeader => {
            let victims = match nemesis {
                Nemesis::KillOne => pick(rng, &nodes, 1),
                Nemesis::KillMinority => pick(rng, &nodes, (nodes.len() - 1) / 2),
                _ => match random_leader(&c, rng, shards).await {
                    Some((_, leader)) => vec![leader],
                    None => pick(rng, &nodes, 1),
                },
            };
            for &node in &victims {
                c.kill(node);
            }
            undo.restart = victims.clone();
            format!("SIGKILL nodes {victims:?}")
        }
        Nemesis::Pause => {
            let victim = pick(rng, &nodes, 1);
            for &node in &victim {
                c.pause(node);
            }
            undo.resume = victim.clone();
            format!("SIGSTOP node {victim:?}")
        }
        Nemesis::IsolateLeader | Nemesis::OneWay => {
            let (shard, leader) = match random_leader(&c, rng, shards).await {
                Some(found) => found,
                None => (0, pick(rng, &nodes, 1)[0]),
            };
            for &other in nodes.iter().filter(|&&n| n != leader) {
                if nemesis == Nemesis::OneWay {
                    net(c.net.drop_from(leader, other));
                } else {
                    net(c.net.cut(leader, other));
                }
            }
            undo.network = true;
            let how = if nemesis == Nemesis::OneWay { "hears no other node" } else { "cut off" };
            format!("node {leader} (leader of shard {shard}) {how}")
        }
        Nemesis::MajorityMinority => {
            let minority = pick(rng, &nodes, (nodes.len() - 1) / 2);
            for &a in &minority {
                for &b in nodes.iter().filter(|n| !minority.contains(n)) {
                    net(c.net.cut(a, b));
                }
            }
            undo.network = true;
            format!("minority {minority:?} cut from the rest")
        }
        Nemesis::Bridge => {
            let mut shuffled = nodes.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            let middle = shuffled.len() / 2;
            let (left, right) = (&shuffled[..middle], &shuffled[middle + 1..]);
            for &a in left {
                for &b in right {
                    net(c.net.cut(a, b));
                }
            }
            undo.network = true;
            format!("{left:?} and {right:?} hear each other only through node {}", shuffled[middle])
        }
        Nemesis::Ring => {
            let n = nodes.len();
            let mut cut = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    let adjacent = j - i == 1 || (i == 0 && j == n - 1);
                    if !adjacent {
                        net(c.net.cut(nodes[i], nodes[j]));
                        cut.push((nodes[i], nodes[j]));
                    }
                }
            }
            undo.network = true;
            format!("ring of {n}: pairs cut {cut:?}")
        }
        Nemesis::Loss => {
            for &node in &nodes {
                net(c.net.lossy(node, 20));
            }
            undo.network = true;
            "every node drops 20 % of incoming packets".to_owned()
        }
        Nemesis::LeaderStorm => format!("leadership moved every {STORM_INTERVAL:?}"),
        Nemesis::FsyncError => {
            let victim = pick(rng, &nodes, 1)[0];
            let failpoint = format!("storage::fsync={FSYNCS_BEFORE_ERROR}*off->return");
            restart_with(&mut c, victim, &env(&[("FAILPOINTS", failpoint)]), errors);
            undo.must_exit = vec![victim];
            format!("node {victim} restarted; its WAL fsyncs fail after {FSYNCS_BEFORE_ERROR}")
        }
        Nemesis::CoordinatorCrash => {
            let victim = pick(rng, &nodes, 1)[0];
            let step = COORDINATOR_STEPS[rng.random_range(0..COORDINATOR_STEPS.len())];
            restart_with(&mut c, victim, &env(&[("FAILPOINTS", format!("{step}=panic"))]), errors);
            undo.must_exit = vec![victim];
            format!("node {victim} restarted to crash at {step}")
        }
        Nemesis::ClockSkew => {
            let victim = pick(rng, &nodes, 1)[0];
            let seconds = rng.random_range(SKEW_MIN_S..=SKEW_MAX_S);
            let sign = if rng.random_bool(0.5) { '+' } else { '-' };
            match faketime_lib() {
                Some(lib) => {
                    let extra = env(&[
                        ("LD_PRELOAD", lib.to_owned()),
                        ("FAKETIME", format!("{sign}{seconds}s")),
                        // Only the wall clock is skewed, as NTP trouble would: timers and
                        // timeouts run on the monotonic clock.
                        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
                        ("FAKETIME_NO_CACHE", "1".to_owned()),
                    ]);
                    restart_with(&mut c, victim, &extra, errors);
                    undo.restart_clean = vec![victim];
                    if sign == '+' {
                        undo.clock_ahead_ms = seconds * 1000;
                    }
                }
                None => errors.push("libfaketime is not installed (Debian: faketime)".to_owned()),
            }
            format!("node {victim} restarted with its wall clock {sign}{seconds} s")
        }
        Nemesis::Membership => {
            let shard = rng.random_range(1..=shards);
            let victim = match c.leader_of(shard).await {
                Some(leader) if rng.random_bool(0.5) => leader,
                _ => pick(rng, &nodes, 1)[0],
            };
            let rest: Vec<u8> = nodes.iter().copied().filter(|&n| n != victim).collect();
            if let Err(e) = c.set_replicas(rest[0], shard, &rest).await {
                errors.push(e);
            }
            undo.replicas = Some(shard);
            format!("node {victim} removed from shard {shard}'s replicas")
        }
    };
    (what, undo)
}

async fn shard_count(cluster: &Cluster) -> u32 {
    for node in cluster.nodes() {
        if let Some(reply) = cluster.shards(node).await {
            return reply.shards;
        }
    }
    1
}

async fn storm(
    cluster: &tokio::sync::Mutex<Cluster>,
    rng: &mut SmallRng,
    until: Instant,
    errors: &mut Vec<String>,
) {
    let (mut moved, mut refused) = (0_u32, 0_u32);
    while Instant::now() < until {
        {
            let c = cluster.lock().await;
            let nodes = c.nodes();
            let shards = shard_count(&c).await;
            let shard = rng.random_range(1..=shards);
            let to = nodes[rng.random_range(0..nodes.len())];
            let via = nodes[rng.random_range(0..nodes.len())];
            if c.transfer_leader(via, shard, to).await {
                moved += 1;
            } else {
                refused += 1;
            }
        }
        tokio::time::sleep(STORM_INTERVAL).await;
    }
    if moved == 0 {
        errors.push(format!("no leadership transfer succeeded ({refused} refused)"));
    }
}

async fn heal(cluster: &tokio::sync::Mutex<Cluster>, undo: &Undo, errors: &mut Vec<String>) {
    let mut c = cluster.lock().await;
    for &node in &undo.must_exit {
        let deadline = Instant::now() + EXIT_WAIT;
        let status = loop {
            if let Some(status) = c.exited(node) {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(crate::cluster::POLL_INTERVAL).await;
        };
        match status {
            Some(status) if !status.success() => {}
            Some(status) => {
                errors.push(format!("node {node} stopped with {status}, not a failure"))
            }
            None => {
                errors.push(format!(
                    "node {node} never reached its failpoint ({EXIT_WAIT:?} past the hold)"
                ));
                c.kill(node);
            }
        }
        if let Err(e) = c.spawn(node) {
            errors.push(e.to_string());
        }
    }
    for &node in &undo.restart_clean {
        restart_with(&mut c, node, &[], errors);
    }
    if let Some(shard) = undo.replicas {
        let nodes = c.nodes();
        let via = nodes[0];
        match c.set_replicas(via, shard, &nodes).await {
            Ok(_) => {
                if let Err(e) = c.wait_replicas(via, shard, &nodes, MEMBERSHIP_WAIT).await {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if undo.network
        && let Err(e) = c.net.heal()
    {
        errors.push(e.to_string());
    }
    for &node in &undo.resume {
        c.resume(node);
    }
    for &node in &undo.restart {
        if let Err(e) = c.spawn(node) {
            errors.push(e.to_string());
        }
    }
}

/// What [`heal_all`] found.
#[derive(Debug, Default)]
pub struct Healed {
    /// Errors healing (as text).
    pub errors: Vec<String>,
    /// Nodes that had exited on their own (not killed by the nemesis), with their status:
    /// a node stops itself only on a broken invariant or a storage error.
    pub crashed: Vec<String>,
}

/// Makes the whole cluster whole: network healed, paused nodes resumed, stopped or
/// exited nodes restarted.
pub async fn heal_all(cluster: &tokio::sync::Mutex<Cluster>) -> Healed {
    let mut healed = Healed::default();
    let mut c = cluster.lock().await;
    if let Err(e) = c.net.heal() {
        healed.errors.push(e.to_string());
    }
    for node in c.nodes() {
        c.resume(node);
        if let Some(status) = c.exited(node) {
            let log = c.node_dir(node).join("tallyd.log");
            healed
                .crashed
                .push(format!("node {node} exited on its own ({status}); see {}", log.display()));
        }
        if let Err(e) = c.spawn(node) {
            healed.errors.push(e.to_string());
        }
    }
    healed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nemesis_parses_back_from_its_name() {
        for n in Nemesis::ALL {
            assert_eq!(Nemesis::parse(n.name()), Some(n));
        }
        assert_eq!(Nemesis::parse("kill-everything"), None);
    }

    #[test]
    fn picking_takes_distinct_nodes() {
        let mut rng = SmallRng::seed_from_u64(7);
        for count in 0..=4 {
            let picked = pick(&mut rng, &[1, 2, 3], count);
            assert_eq!(picked.len(), count.min(3));
            assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
        }
    }
}
