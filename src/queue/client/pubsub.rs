//! Redis pub/sub: announcements no key keeps (wake-ups, changes that
//! invalidate caches). A message published while nobody listens is lost,
//! so listeners treat a (re)subscription as "anything may have changed".

use super::{Client, Result};

impl Client {
    /// Publishes `message` on `channel`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<()> {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async::<i64>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Subscribes to `channels` on a connection of its own, calls
    /// `subscribed` once subscribed, then `message` with each message's
    /// payload, until the connection fails (the caller subscribes again).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn listen(
        &self,
        channels: &[String],
        subscribed: impl FnOnce(),
        message: impl Fn(&str),
    ) -> Result<()> {
        use futures::StreamExt;
        let mut pubsub = self.redis.get_async_pubsub().await?;
        for c in channels {
            pubsub.subscribe(c).await?;
        }
        subscribed();
        let mut messages = pubsub.on_message();
        while let Some(m) = messages.next().await {
            message(&m.get_payload::<String>().unwrap_or_default());
        }
        Ok(())
    }
}
