//! `tally-chaos`: the chaos suite. Today: the invariant checker that the fault-injection
//! runs will feed; it works on what a client can read back over the wire, so it judges a
//! cluster from the outside, the way an auditor would.
//!
//! Layout:
//! - [`checker`] — invariants I1 (conservation per ledger), I2 (no balance flag violated)
//!   and I3/I4 (every acknowledged transfer stored exactly once, with identical fields),
//!   each reported with a minimal counterexample.

pub mod checker;
