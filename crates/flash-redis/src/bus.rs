//! [`RedisBus`]: the near tier's invalidation channel on Redis pub/sub.

use crate::conn::{bad_url, map_err, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use async_trait::async_trait;
use flash_core::{BackendError, NearBus};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// How long a lost subscription waits before subscribing again.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

/// A Redis pub/sub channel as the near tier's [`NearBus`]. On a Redis
/// Cluster, give it one node's `redis://` URL: `PUBLISH` reaches the
/// subscribers of every node.
#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    publisher: ConnectionManager,
    channel: String,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// The channel `channel` on the server of `url` (`redis://…`); connects
    /// on first use. Only a malformed URL is an error.
    pub fn new(url: &str, channel: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(|e| bad_url(url, e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(0);
        let publisher =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(map_err)?;
        Ok(RedisBus {
            client,
            publisher,
            channel: channel.to_owned(),
        })
    }
}

#[async_trait]
impl NearBus for RedisBus {
    async fn publish(&self, message: &[u8]) -> Result<(), BackendError> {
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(message)
            .query_async::<i64>(&mut self.publisher.clone())
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn listen(
        &self,
        deliver: &(dyn for<'m> Fn(&'m [u8]) + Send + Sync),
        lost: &(dyn Fn() + Send + Sync),
    ) {
        loop {
            let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match subscribed {
                Ok(Ok(pubsub)) => {
                    let mut messages = pubsub.into_on_message();
                    while let Some(m) = messages.next().await {
                        deliver(m.get_payload_bytes());
                    }
                    tracing::warn!(channel = %self.channel, "near tier: subscription lost");
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "near tier: subscribe failed"),
                Err(_) => tracing::debug!("near tier: subscribe timed out"),
            }
            lost();
            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
        }
    }
}
