//! Real `tallyd` processes on loopback, driven through `tally-client`.
//!
//! Each cluster gets its own loopback addresses (`127.A.B.{1,2,3}`, A from the process id,
//! B from a counter), so clusters never race for ports. Clusters run one at a time (they
//! share two cores). Every wait polls a condition with a bound; nothing sleeps blindly.

mod harness;
mod key;
mod shard_map;
mod shards;
mod tests;
mod xshard;
