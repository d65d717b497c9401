//! Group commit: the checkpoints of concurrent executions share one
//! transaction, one commit record and one WAL flush, where each would
//! otherwise pay for its own. Each caller still returns only once its own
//! checkpoint is committed, so an execution's next side effect never runs
//! ahead of it.
//!
//! A few lanes (one connection each while a group runs) take what is
//! waiting when they are free, up to [`MOST`] checkpoints: under load,
//! groups grow by themselves; when nothing else waits, a checkpoint goes
//! alone at once. A statement that fails rolls its group back, and each of
//! the group's checkpoints is then run alone, so one bad checkpoint fails
//! only itself. A failed commit fails the whole group (as a single
//! statement whose commit fails: the callers give their claims back).

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgArguments;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Error, Result};

/// What a checkpoint statement returns when it wrote the row: the row's
/// new revision and `updated_at`.
pub type Row = (i64, DateTime<Utc>);

/// Most checkpoints in one transaction.
pub const MOST: usize = 64;

/// A group committer over a pool; clones share it.
#[derive(Clone)]
pub struct Group {
    pool: PgPool,
    lanes: usize,
    /// Started with the first checkpoint (it needs a runtime to spawn on).
    queue: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
}

/// A checkpoint waiting for its group.
struct Pending {
    sql: &'static str,
    args: PgArguments,
    answer: oneshot::Sender<Result<Option<Row>>>,
}

impl Group {
    /// A committer over `pool` with `lanes` transactions in flight at most
    /// (0: each checkpoint alone, as without one).
    pub fn new(pool: PgPool, lanes: usize) -> Group {
        Group {
            pool,
            lanes,
            queue: Arc::default(),
        }
    }

    /// Runs `sql` with `args` in the next group; its row, once committed.
    ///
    /// # Errors
    /// The statement's error, or the group's failed commit.
    pub async fn run(&self, sql: &'static str, args: PgArguments) -> Result<Option<Row>> {
        if self.lanes == 0 {
            return alone(&self.pool, sql, args).await;
        }
        let (answer, rx) = oneshot::channel();
        let queue = self.queue.get_or_init(|| self.start());
        if queue.send(Pending { sql, args, answer }).is_err() {
            return Err(closed());
        }
        rx.await.map_err(|_| closed())?
    }

    /// Spawns the lanes; they end when every clone is gone.
    fn start(&self) -> mpsc::UnboundedSender<Pending> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.lanes {
            let (pool, rx) = (self.pool.clone(), rx.clone());
            tokio::spawn(async move {
                while let Some(group) = next(&rx).await {
                    commit(&pool, group).await;
                }
            });
        }
        tx
    }
}

/// What waits, up to [`MOST`], once something does; `None` when closed.
async fn next(rx: &Mutex<mpsc::UnboundedReceiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut group = vec![first];
    while group.len() < MOST {
        match rx.try_recv() {
            Ok(p) => group.push(p),
            Err(_) => break,
        }
    }
    Some(group)
}

/// Commits `group` in one transaction and answers each; see the module.
async fn commit(pool: &PgPool, group: Vec<Pending>) {
    if group.len() == 1 {
        let p = group.into_iter().next().expect("one");
        let _ = p.answer.send(alone(pool, p.sql, p.args).await);
        return;
    }
    let together = async {
        let mut tx = pool.begin().await?;
        let mut rows = Vec::with_capacity(group.len());
        for p in &group {
            let q = sqlx::query_as_with(p.sql, p.args.clone());
            match q.fetch_optional(&mut *tx).await {
                Ok(row) => rows.push(row),
                // Rolled back when `tx` drops: each goes alone below.
                Err(e) => return Ok(Err(e)),
            }
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Ok(rows))
    };
    match together.await {
        Ok(Ok(rows)) => {
            for (p, row) in group.into_iter().zip(rows) {
                let _ = p.answer.send(Ok(row));
            }
        }
        Ok(Err(_)) => {
            for p in group {
                let _ = p.answer.send(alone(pool, p.sql, p.args).await);
            }
        }
        Err(e) => {
            for p in group {
                let _ = p.answer.send(Err(copy(&e).into()));
            }
        }
    }
}

/// `e` for one more caller, keeping what callers tell apart (the database
/// unreachable or not).
fn copy(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(format!("group commit: {other}")),
    }
}

/// One checkpoint, its own transaction.
async fn alone(pool: &PgPool, sql: &'static str, args: PgArguments) -> Result<Option<Row>> {
    Ok(sqlx::query_as_with(sql, args).fetch_optional(pool).await?)
}

fn closed() -> Error {
    sqlx::Error::PoolClosed.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Arguments;
    use std::collections::HashSet;

    /// The transaction it ran in (`$1` only to have an argument).
    const TXID: &str = "SELECT txid_current()::int8 + $1::int8 * 0, now()";
    /// Fails for 0.
    const DIVIDE: &str = "SELECT (1 / $1::int8)::int8, now()";

    fn arg(n: i64) -> PgArguments {
        let mut a = PgArguments::default();
        a.add(n).unwrap();
        a
    }

    async fn run_all(group: &Group, bad: Option<usize>) -> Vec<Result<Option<Row>>> {
        futures::future::join_all((0..20).map(|i| {
            let g = group.clone();
            async move {
                match bad {
                    Some(b) if b == i => g.run(DIVIDE, arg(0)).await,
                    _ => g.run(TXID, arg(i as i64)).await,
                }
            }
        }))
        .await
    }

    fn transactions(out: &[Result<Option<Row>>]) -> HashSet<i64> {
        out.iter()
            .filter_map(|r| Some(r.as_ref().ok()?.as_ref()?.0))
            .collect()
    }

    #[sqlx::test]
    async fn checkpoints_waiting_together_share_a_transaction_and_a_bad_one_fails_alone(
        pool: PgPool,
    ) {
        let group = Group::new(pool.clone(), 1);
        let out = run_all(&group, None).await;
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(
            transactions(&out).len(),
            1,
            "twenty waiting, one transaction"
        );

        // One statement fails: it alone fails; the others commit, each then
        // in its own transaction.
        let out = run_all(&group, Some(7)).await;
        assert!(out[7].is_err());
        assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 19);
        assert_eq!(transactions(&out).len(), 19);

        // Without lanes, each alone.
        let out = run_all(&Group::new(pool, 0), None).await;
        assert_eq!(transactions(&out).len(), 20);
    }
}
