//! `tally-chaos`: the chaos suite. It starts a cluster of real `tallyd` processes (each
//! in its own network namespace where permitted), runs a recorded workload through
//! `tally-client` while a nemesis injects faults, heals, waits for the cluster to settle,
//! reads everything back and checks the invariants of DESIGN.md from the outside, the way
//! an auditor would.
//!
//! Layout:
//! - [`net`] — namespaces, veth pairs and a bridge (or loopback); partitions and packet
//!   loss with iptables inside the namespaces;
//! - [`cluster`] — the `tallyd` processes: start, SIGKILL, SIGSTOP/SIGCONT, admin calls;
//! - [`workload`] — the population and the seeded request generator, every request
//!   recorded with its times and outcome;
//! - [`nemesis`] — the faults and their bounded schedule;
//! - [`checker`] — the invariants, each violation with its evidence;
//! - [`run`] — one run from start to report;
//! - [`chart`] — the PNG timeline of a run (throughput and faults).

pub mod chart;
pub mod checker;
pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod workload;
