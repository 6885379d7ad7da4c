//! What a load run drives: a Tally cluster or the PostgreSQL peer, behind one interface so
//! both run the same operations through the same harness.

pub mod postgres;
pub mod tally;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::BenchError;
use crate::model::{Check, Model, Outcome};
use crate::population::PopulationSpec;
use crate::scenario::Op;

/// Distinct error texts an [`ErrorLog`] keeps; further ones are counted together.
pub const ERROR_TEXTS_MAX: usize = 32;
/// Characters of an error text an [`ErrorLog`] keeps.
pub const ERROR_TEXT_CHARS_MAX: usize = 240;
/// What the counts of errors beyond [`ERROR_TEXTS_MAX`] are reported under.
pub const OTHER_ERRORS: &str = "(other errors)";

/// The errors behind a run's unknown outcomes: each request error's text (cut to
/// [`ERROR_TEXT_CHARS_MAX`]) with the operations it left unknown. Shared by a target's
/// sessions.
#[derive(Clone, Debug, Default)]
pub struct ErrorLog(Arc<parking_lot::Mutex<BTreeMap<String, u64>>>);

impl ErrorLog {
    /// Counts `ops` operations left unknown by `error`.
    pub fn record(&self, error: &dyn Display, ops: u64) {
        let text: String = error.to_string().chars().take(ERROR_TEXT_CHARS_MAX).collect();
        let mut log = self.0.lock();
        let key = if log.contains_key(&text) || log.len() < ERROR_TEXTS_MAX {
            text
        } else {
            OTHER_ERRORS.to_owned()
        };
        *log.entry(key).or_default() += ops;
    }

    /// The counts since the last call, emptying the log.
    #[must_use]
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// A system under load.
#[derive(Clone, Debug)]
pub enum Target {
    /// A Tally cluster.
    Tally(tally::TallyTarget),
    /// A PostgreSQL server.
    Postgres(postgres::PgTarget),
}

/// One client task's connection to the target.
#[derive(Debug)]
pub enum Session {
    /// Tally sessions share the client's connections (it multiplexes).
    Tally(tally::TallyTarget),
    /// One PostgreSQL connection.
    Postgres(postgres::PgSession),
}

impl Target {
    /// `tally` or `postgres`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tally(_) => "tally",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Loads the population.
    ///
    /// # Errors
    /// A request error, or a setup event that did not apply.
    pub async fn setup(&self, spec: &PopulationSpec, seqs: &AtomicU64) -> Result<(), BenchError> {
        match self {
            Self::Tally(t) => t.setup(spec, seqs).await,
            Self::Postgres(p) => p.setup(spec).await,
        }
    }

    /// A session for one client task.
    ///
    /// # Errors
    /// A connection error.
    pub async fn session(&self) -> Result<Session, BenchError> {
        match self {
            Self::Tally(t) => Ok(Session::Tally(t.clone())),
            Self::Postgres(p) => Ok(Session::Postgres(p.session().await?)),
        }
    }

    /// The errors behind the unknown outcomes since the last call (see [`ErrorLog`]).
    #[must_use]
    pub fn take_errors(&self) -> BTreeMap<String, u64> {
        match self {
            Self::Tally(t) => t.errors().take(),
            Self::Postgres(p) => p.errors().take(),
        }
    }

    /// The attempts resent by the client library since the last call, by cause (none for
    /// PostgreSQL: its sessions do not resend).
    #[must_use]
    pub fn take_retries(&self) -> BTreeMap<String, u64> {
        match self {
            Self::Tally(t) => t.take_retries(),
            Self::Postgres(_) => BTreeMap::new(),
        }
    }

    /// Reads everything back and checks it against `model` (see the targets' `verify`).
    ///
    /// # Errors
    /// A request error while reading back.
    pub async fn verify(
        &self,
        model: &mut Model,
        records: &[(Op, Outcome)],
    ) -> Result<Vec<Check>, BenchError> {
        match self {
            Self::Tally(t) => t.verify(model, records).await,
            Self::Postgres(p) => p.verify(model, records).await,
        }
    }
}

impl Session {
    /// Runs one request's operations; one outcome per operation.
    pub async fn execute(&self, ops: &[Op]) -> Vec<Outcome> {
        match self {
            Self::Tally(t) => t.execute(ops).await,
            Self::Postgres(p) => p.execute(ops).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_log_counts_texts_up_to_its_limit_and_the_rest_together() {
        let log = ErrorLog::default();
        log.record(&"status: Unavailable, message: \"NotLeader\"", 32);
        log.record(&"status: Unavailable, message: \"NotLeader\"", 4);
        for n in 1..ERROR_TEXTS_MAX {
            log.record(&format!("error {n}"), 1);
        }
        log.record(&"one too many", 2);
        log.record(&"x".repeat(1000), 1);
        let counts = log.clone().take();
        assert_eq!(counts.len(), ERROR_TEXTS_MAX + 1, "{counts:?}");
        assert_eq!(counts["status: Unavailable, message: \"NotLeader\""], 36);
        assert_eq!(counts[OTHER_ERRORS], 3);
        assert!(counts.keys().all(|k| k.chars().count() <= ERROR_TEXT_CHARS_MAX));
        assert!(log.take().is_empty(), "taking empties the log");
    }
}
