//! API keys: minted here (`flowpilot apikey create`, the demo), stored as
//! SHA-256 hashes, looked up by the API's `Auth` extractor, listed and
//! revoked through [`Keys`] (the CLI and the admin API). The only writer of
//! the `api_keys` table besides migrations. Keys are looked up on every
//! request, never cached: a revoked key is refused at once.

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{self, api_key::ApiKey};

/// How a minted key starts; what follows is 64 hex digits (256 random bits).
const KEY_PREFIX: &str = "fp_";
/// Characters of a key kept in clear to tell keys apart (`fp_` + 8).
const SHOWN: usize = 11;

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system gave no randomness.
    #[error("no randomness: {0}")]
    Random(getrandom::Error),
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The `api_keys` room: what the admin API and the CLI may do to keys.
#[derive(Clone)]
pub struct Keys {
    pool: PgPool,
}

impl Keys {
    /// Keys in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Keys { pool }
    }

    /// Keys of `account` (every account's when `None`), newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self, account: Option<Uuid>) -> Result<Vec<ApiKey>, Error> {
        Ok(store::api_key::list(&self.pool, account).await?)
    }

    /// Revokes the key `id`: refused from the next request on. `None` when
    /// there is no such key.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke(&self, id: Uuid) -> Result<Option<ApiKey>, Error> {
        Ok(store::api_key::revoke(&self.pool, id).await?)
    }
}

/// SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Creates a key for `account`; returns the key (shown once, never
/// stored) and its id.
///
/// # Errors
/// No randomness, database errors.
pub async fn mint(
    pool: &PgPool,
    account: Uuid,
    name: &str,
    admin: bool,
) -> Result<(String, Uuid), Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(Error::Random)?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let id = register(pool, account, name, &key, admin).await?;
    Ok((key, id))
}

/// Registers a key chosen elsewhere (the demo's) for `account`, unless
/// its hash is known already; returns its id when it registered it.
///
/// # Errors
/// Database errors.
pub async fn register_once(
    pool: &PgPool,
    account: Uuid,
    name: &str,
    key: &str,
) -> Result<Option<Uuid>, Error> {
    if store::api_key::find(pool, &hash_key(key)).await?.is_some() {
        return Ok(None);
    }
    Ok(Some(register(pool, account, name, key, false).await?))
}

async fn register(
    pool: &PgPool,
    account: Uuid,
    name: &str,
    key: &str,
    admin: bool,
) -> Result<Uuid, Error> {
    let shown = &key[..key.floor_char_boundary(SHOWN)];
    Ok(store::api_key::insert(pool, account, name, shown, &hash_key(key), admin).await?)
}
