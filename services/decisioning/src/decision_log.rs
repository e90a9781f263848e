//! The decision log writer. Decide returns only after its decision row is
//! committed, but concurrent Decide calls share one multi-row insert: a
//! single task takes every record queued while the previous insert ran and
//! writes them together. Under load many small inserts become a few larger
//! ones. When idle, a record is written on its own at once.

use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::{mpsc, oneshot};

use crate::error::DecisioningError;
use crate::store::{self, DecisionRecord};

/// Maximum rows in one insert: 9 columns each stay far below the bind parameter
/// limits of SQLite (32766) and PostgreSQL (65535).
const MAX_ROWS_PER_INSERT: usize = 256;
/// Records waiting for the writer. A full queue makes Decide wait, so a slow
/// database slows callers down instead of growing memory.
const QUEUE_LEN: usize = 4096;

struct Pending {
    tenant: String,
    record: DecisionRecord,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle that queues decisions for the writer task.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    queue: mpsc::Sender<Pending>,
}

impl DecisionLog {
    /// Starts the writer task. It ends once every handle is dropped and the
    /// queue is empty, so no accepted record is left unwritten at shutdown.
    pub fn start(db: DatabaseConnection) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_LEN);
        tokio::spawn(write_batches(db, receiver));
        Self { queue }
    }

    /// Stores one decision and returns once it is committed.
    pub async fn append(&self, tenant: &str, record: DecisionRecord) -> Result<(), DecisioningError> {
        let (done, committed) = oneshot::channel();
        let pending = Pending {
            tenant: tenant.to_owned(),
            record,
            done,
        };
        let stopped = || DecisioningError::Database {
            operation: "logging a decision",
            source: DbErr::Custom("the decision log writer has stopped".to_owned()),
        };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        match committed.await.map_err(|_| stopped())? {
            Ok(()) => Ok(()),
            Err(message) => Err(DecisioningError::Database {
                operation: "logging a decision",
                source: DbErr::Custom(message),
            }),
        }
    }
}

async fn write_batches(db: DatabaseConnection, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_ROWS_PER_INSERT);
    while receiver.recv_many(&mut batch, MAX_ROWS_PER_INSERT).await > 0 {
        let rows: Vec<(&str, &DecisionRecord)> = batch
            .iter()
            .map(|pending| (pending.tenant.as_str(), &pending.record))
            .collect();
        let result = store::insert_decisions(&db, &rows).await.map_err(|error| {
            tracing::error!(rows = rows.len(), %error, "logging decisions failed");
            error.to_string()
        });
        // Rows over inserts is the mean batch size, which shows how much the sharing saves.
        metrics::counter!("rtim_decisioning_log_inserts_total").increment(1);
        metrics::counter!("rtim_decisioning_log_rows_total").increment(batch.len() as u64);
        for pending in batch.drain(..) {
            // A caller that went away no longer needs the result.
            let _ = pending.done.send(result.clone());
        }
    }
}
