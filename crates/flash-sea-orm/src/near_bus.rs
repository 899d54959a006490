//! [`PgBus`]: the near tier's invalidation channel on PostgreSQL
//! `LISTEN`/`NOTIFY`, for caches without pub/sub of their own (memcached).

use async_trait::async_trait;
use flash_core::{BackendError, NearBus};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use std::time::Duration;

/// Room for one `NOTIFY` payload (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7900;

/// A PostgreSQL notification channel as the near tier's [`NearBus`].
/// Notifications are delivered in commit order, which is what the tier's
/// heartbeat argument needs. Publishing costs a statement on the pool.
#[derive(Clone, Debug)]
pub struct PgBus {
    db: DatabaseConnection,
    channel: String,
}

impl PgBus {
    /// The channel `channel` (an SQL identifier: letters, digits, `_`) on the
    /// PostgreSQL database of `db`; anything else is [`BackendError::BadUrl`].
    pub fn new(db: &DatabaseConnection, channel: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BadUrl {
            url: channel.to_owned(),
            reason: reason.to_owned(),
        };
        if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Err(bad("PgBus needs a PostgreSQL connection"));
        }
        if channel.is_empty()
            || channel.len() > 63
            || !channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad("channel names are [A-Za-z0-9_], at most 63 bytes"));
        }
        Ok(PgBus {
            db: db.clone(),
            channel: channel.to_owned(),
        })
    }

    async fn notify(&self, payload: &str) -> Result<(), BackendError> {
        self.db
            .execute(Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [self.channel.clone().into(), payload.to_owned().into()],
            ))
            .await
            .map(|_| ())
            .map_err(|e| BackendError::Unreachable(e.to_string()))
    }
}

#[async_trait]
impl NearBus for PgBus {
    /// Messages are ASCII (keys and a tag); a long list of keys is split
    /// over several notifications, each one a whole message.
    async fn publish(&self, message: &[u8]) -> Result<(), BackendError> {
        let text = std::str::from_utf8(message)
            .map_err(|_| BackendError::Protocol("near message is not text".into()))?;
        if text.len() <= MAX_PAYLOAD {
            return self.notify(text).await;
        }
        let (tag, keys) = text.split_once('\n').unwrap_or((text, ""));
        let mut chunk = String::new();
        for key in keys.split('\n') {
            if !chunk.is_empty() && chunk.len() + key.len() + 1 > MAX_PAYLOAD {
                self.notify(&chunk).await?;
                chunk.clear();
            }
            if chunk.is_empty() {
                chunk.push_str(tag);
            }
            chunk.push('\n');
            chunk.push_str(key);
        }
        if !chunk.is_empty() {
            self.notify(&chunk).await?;
        }
        Ok(())
    }

    #[cfg(feature = "postgres")]
    async fn listen(
        &self,
        deliver: &(dyn for<'m> Fn(&'m [u8]) + Send + Sync),
        lost: &(dyn Fn() + Send + Sync),
    ) {
        use sea_orm::sqlx::postgres::PgListener;
        loop {
            let attempt = async {
                let mut l =
                    PgListener::connect_with(self.db.get_postgres_connection_pool()).await?;
                l.listen(&self.channel).await?;
                Ok::<_, sea_orm::sqlx::Error>(l)
            };
            if let Ok(mut listener) = attempt.await {
                // `try_recv` answers `None` when the connection was lost (it
                // reconnects on the next call): notifications sent meanwhile
                // are gone, so the tier must hear that.
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => deliver(n.payload().as_bytes()),
                        Ok(None) => lost(),
                        Err(e) => {
                            tracing::warn!(error = %e, "near tier: LISTEN failed");
                            break;
                        }
                    }
                }
            }
            lost();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[cfg(not(feature = "postgres"))]
    async fn listen(
        &self,
        _deliver: &(dyn for<'m> Fn(&'m [u8]) + Send + Sync),
        _lost: &(dyn Fn() + Send + Sync),
    ) {
        // Without the driver no notification arrives: the tier stays bypassed.
        std::future::pending::<()>().await
    }
}
