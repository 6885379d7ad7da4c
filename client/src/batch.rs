//! Building `CreateTransfers` requests that respect the protocol limits.
//!
//! A linked chain must travel in one request: a chain split across two requests would be
//! two independent chains, and the first could apply without the second. The builder adds
//! chains whole or not at all.

use std::fmt;

use tally_proto::limits::BATCH_EVENTS_MAX;
use tally_proto::v1;

/// Why a chain was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// The chain does not fit in what is left of this batch; send it and start a new one.
    Full {
        /// Events already in the batch.
        events: usize,
        /// Events in the chain.
        chain: usize,
    },
    /// The chain is longer than any batch may be.
    ChainTooLong {
        /// Events in the chain.
        chain: usize,
    },
    /// The chain is empty, or its last event is linked (the chain would be open).
    MalformedChain,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { events, chain } => write!(
                f,
                "batch holds {events} events; a chain of {chain} would pass batch_events_max {BATCH_EVENTS_MAX}"
            ),
            Self::ChainTooLong { chain } => {
                write!(f, "a chain of {chain} events exceeds batch_events_max {BATCH_EVENTS_MAX}")
            }
            Self::MalformedChain => {
                write!(f, "a chain must be non-empty and end with an unlinked event")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// Accumulates transfers for one `CreateTransfers` request.
#[derive(Clone, Debug, Default)]
pub struct TransferBatch {
    transfers: Vec<v1::Transfer>,
}

impl TransferBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chain (one unlinked transfer, or linked transfers ending in an unlinked one).
    ///
    /// # Errors
    /// Nothing is added if the chain is malformed, longer than `BATCH_EVENTS_MAX`, or does not
    /// fit in the room left.
    pub fn push_chain(&mut self, chain: &[v1::Transfer]) -> Result<(), BatchError> {
        let linked = v1::TransferFlag::Linked as u32;
        let well_formed = chain.last().is_some_and(|last| last.flags & linked == 0)
            && chain[..chain.len().saturating_sub(1)].iter().all(|t| t.flags & linked != 0);
        if !well_formed {
            return Err(BatchError::MalformedChain);
        }
        if chain.len() > BATCH_EVENTS_MAX as usize {
            return Err(BatchError::ChainTooLong { chain: chain.len() });
        }
        if self.transfers.len() + chain.len() > BATCH_EVENTS_MAX as usize {
            return Err(BatchError::Full { events: self.transfers.len(), chain: chain.len() });
        }
        self.transfers.extend_from_slice(chain);
        Ok(())
    }

    /// Events in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// The request to send.
    #[must_use]
    pub fn into_request(self) -> v1::CreateTransfersRequest {
        v1::CreateTransfersRequest { transfers: self.transfers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loyalty::{Redemption, redeem};

    fn single(id: u128) -> v1::Transfer {
        v1::Transfer { id: Some(id.into()), ..Default::default() }
    }

    /// Chains go in whole; a chain that does not fit is refused and the batch is unchanged.
    #[test]
    fn chains_are_never_split() {
        let mut batch = TransferBatch::new();
        for id in 1..BATCH_EVENTS_MAX {
            batch.push_chain(&[single(u128::from(id))]).unwrap();
        }
        let chain = redeem(&Redemption {
            stock: Some(crate::loyalty::StockLeg::example()),
            ..Redemption::example()
        });
        assert_eq!(chain.len(), 2);
        let error = batch.push_chain(&chain).unwrap_err();
        assert_eq!(error, BatchError::Full { events: 8189, chain: 2 });
        assert_eq!(batch.len(), 8189);
        batch.push_chain(&[single(9_999)]).unwrap();
        assert_eq!(batch.into_request().transfers.len(), BATCH_EVENTS_MAX as usize);
    }

    /// Open or empty chains are refused, as are chains no batch can hold.
    #[test]
    fn malformed_and_oversized_chains_are_refused() {
        let mut batch = TransferBatch::new();
        let open = v1::Transfer { flags: v1::TransferFlag::Linked as u32, ..single(1) };
        assert_eq!(batch.push_chain(&[open]), Err(BatchError::MalformedChain));
        assert_eq!(batch.push_chain(&[]), Err(BatchError::MalformedChain));
        assert_eq!(batch.push_chain(&[single(1), single(2)]), Err(BatchError::MalformedChain));
        let mut long = vec![open; BATCH_EVENTS_MAX as usize];
        long.push(single(2));
        assert_eq!(batch.push_chain(&long), Err(BatchError::ChainTooLong { chain: 8191 }));
        assert!(batch.is_empty());
    }
}
