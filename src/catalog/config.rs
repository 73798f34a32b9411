//! A catalog's settings: its role, its peers, its files, its lease, read from the
//! environment in one place.

use crate::config::{self, Common, ConfigError, Source};
use std::path::PathBuf;
use std::time::Duration;

/// Shortest lease accepted: renewals go every quarter of it.
pub const MIN_LEASE: Duration = Duration::from_millis(200);
/// Default length of a replica's read lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(2);
/// A catalog's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Decides every write.
    Primary,
    /// Serves reads, forwards writes to the primary.
    Replica,
}

/// Settings of a catalog process.
#[derive(Clone, Debug)]
pub struct CatalogConfig {
    /// Listen address, workers, token.
    pub common: Common,
    /// Where `books.csv` lives.
    pub data_dir: PathBuf,
    /// Primary or replica.
    pub role: Role,
    /// The primary's base URL (replicas only).
    pub primary: Option<String>,
    /// The replicas' base URLs (primary only).
    pub replicas: Vec<String>,
    /// memcached servers whose entries the primary invalidates.
    pub memcached: Vec<String>,
    /// Length of a replica's read lease; zero turns read leases off.
    pub lease: Duration,
}

impl CatalogConfig {
    /// Reads the settings.
    pub fn from_source(src: &dyn Source) -> std::result::Result<CatalogConfig, ConfigError> {
        let common = Common::from_source(src, Self::DEFAULT_LISTEN)?;
        let role = match config::opt(src, "BAZAR_ROLE").as_deref() {
            Some("primary") => Role::Primary,
            Some("replica") => Role::Replica,
            other => {
                return Err(ConfigError { var: "BAZAR_ROLE", problem: format!("{other:?} must be primary or replica") })
            }
        };
        let primary = match role {
            Role::Replica => Some(config::urls(src, "BAZAR_PRIMARY", true)?.swap_remove(0)),
            Role::Primary => None,
        };
        let replicas = if role == Role::Primary { config::urls(src, "BAZAR_REPLICAS", false)? } else { Vec::new() };
        let lease = config::millis(src, "BAZAR_LEASE_MS", DEFAULT_LEASE, 0..=60_000)?;
        if !lease.is_zero() && lease < MIN_LEASE {
            let problem = format!("must be 0 (off) or at least {} ms", MIN_LEASE.as_millis());
            return Err(ConfigError { var: "BAZAR_LEASE_MS", problem });
        }
        Ok(CatalogConfig {
            common,
            data_dir: config::data_dir(src, "./data-catalog"),
            role,
            primary,
            replicas,
            memcached: config::memcached(src)?,
            lease,
        })
    }

    /// Where it listens unless `BAZAR_LISTEN` says otherwise.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:9000";

    /// `--help` text.
    pub const HELP: &'static str = "\
bazar-catalog: the catalog server (books, prices, stock), primary or replica.

Environment:
  BAZAR_ROLE      primary or replica (required)
  BAZAR_PRIMARY   replica: base URL of the primary, e.g. http://127.0.0.1:9000
  BAZAR_REPLICAS  primary: comma-separated base URLs of the replicas
  BAZAR_DATA_DIR  directory of books.csv (default ./data-catalog; seeded on first start)
  BAZAR_MEMCACHED primary: memcached host:port list whose entries writes invalidate
  BAZAR_LEASE_MS  length of a replica's read lease (default 2000; 0 turns leases off)

Commands:
  bazar-catalog import FILE   replace the catalog in BAZAR_DATA_DIR (catalog stopped)
                              with the books of FILE (header id,title,topic,price,quantity)
";
}
