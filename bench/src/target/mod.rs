//! What a load run drives: a Tally cluster or the PostgreSQL peer, behind one interface so
//! both run the same operations through the same harness.

pub mod postgres;
pub mod tally;

use std::sync::atomic::AtomicU64;

use crate::BenchError;
use crate::model::{Check, Model, Outcome};
use crate::population::PopulationSpec;
use crate::scenario::Op;

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
