//! A catalog's settings: its role, its peers, its files, its lease, read from the
//! environment in one place.

use crate::config::{self, Common, ConfigError, Source};
use std::path::PathBuf;
use std::time::Duration;

/// Shortest lease accepted: renewals go every quarter of it.
pub const MIN_LEASE: Duration = Duration::from_millis(200);
/// Default length of a replica's read lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(2);
/// Default read lease with etcd: a new primary waits one lease before its first write, so
/// a shorter one shortens every failover (renewals go every quarter of it).
pub const DEFAULT_ETCD_LEASE: Duration = Duration::from_secs(1);
/// Default TTL of each catalog's etcd lease (its leader key): how long a dead primary
/// keeps the role. etcd counts whole seconds and refuses less than about 2.
pub const DEFAULT_ETCD_TTL: Duration = Duration::from_secs(2);

/// How the catalogs find their primary when etcd decides (`BAZAR_ETCD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// This catalog's base URL as the other catalogs and services reach it.
    pub advertise: String,
    /// The prefix of the store's keys in etcd.
    pub prefix: String,
    /// TTL of this catalog's etcd lease, which its leader key is bound to (whole seconds).
    pub ttl: Duration,
}
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
    /// Fewest log rows between two checkpoints (`BAZAR_CHECKPOINT_ROWS`, default
    /// [`COMPACT_AFTER`](super::store::COMPACT_AFTER)): fewer make starts replay less and
    /// checkpoints come more often; a large catalog checkpoints after as many rows as it has
    /// books in any case.
    pub checkpoint_rows: usize,
    /// With etcd: the primary is elected and fails over (`role` is then where it starts,
    /// a replica, and `primary`, `replicas` are unset). None: static roles.
    pub etcd: Option<EtcdSettings>,
}

impl CatalogConfig {
    /// Reads the settings.
    pub fn from_source(src: &dyn Source) -> std::result::Result<CatalogConfig, ConfigError> {
        let common = Common::from_source(src, Self::DEFAULT_LISTEN)?;
        if config::opt(src, "BAZAR_ETCD").is_some() {
            return Self::with_etcd(src, common);
        }
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
        let lease = read_lease(src, DEFAULT_LEASE)?;
        Ok(CatalogConfig {
            common,
            data_dir: config::data_dir(src, "./data-catalog"),
            role,
            primary,
            replicas,
            memcached: config::memcached(src)?,
            lease,
            checkpoint_rows: read_checkpoint_rows(src)?,
            etcd: None,
        })
    }

    /// The settings with `BAZAR_ETCD`: no fixed role, no fixed peers.
    fn with_etcd(src: &dyn Source, common: Common) -> std::result::Result<CatalogConfig, ConfigError> {
        for var in ["BAZAR_ROLE", "BAZAR_PRIMARY", "BAZAR_REPLICAS"] {
            if config::opt(src, var).is_some() {
                let problem = format!("is set, and so is {var}: with etcd the catalogs elect their primary");
                return Err(ConfigError { var: "BAZAR_ETCD", problem });
            }
        }
        let endpoints = config::urls(src, "BAZAR_ETCD", true)?;
        let advertise = match config::opt(src, "BAZAR_ADVERTISE") {
            Some(url) => config::base_url("BAZAR_ADVERTISE", &url)?,
            None => format!("http://{}", common.listen),
        };
        if advertise.starts_with("http://0.0.0.0:") || advertise.starts_with("http://[::]:") {
            let problem = format!("{advertise:?} is no address another host can reach; set BAZAR_ADVERTISE");
            return Err(ConfigError { var: "BAZAR_ADVERTISE", problem });
        }
        let prefix = config::opt(src, "BAZAR_ETCD_PREFIX").unwrap_or_else(|| "/bazar".into());
        if !prefix.starts_with('/') || prefix.len() > 200 {
            let problem = format!("{prefix:?} must start with / (and be short)");
            return Err(ConfigError { var: "BAZAR_ETCD_PREFIX", problem });
        }
        let ttl =
            config::number(src, "BAZAR_ETCD_TTL", 2..=60, "seconds")?.map_or(DEFAULT_ETCD_TTL, Duration::from_secs);
        let lease = read_lease(src, DEFAULT_ETCD_LEASE)?;
        if lease.is_zero() {
            // Without leases a replica cut off from a new primary would go on serving reads.
            let problem = "is 0 (read leases off), which BAZAR_ETCD forbids: a replica cut off from a new primary would serve stale reads".into();
            return Err(ConfigError { var: "BAZAR_LEASE_MS", problem });
        }
        Ok(CatalogConfig {
            common,
            data_dir: config::data_dir(src, "./data-catalog"),
            role: Role::Replica,
            primary: None,
            replicas: Vec::new(),
            memcached: config::memcached(src)?,
            lease,
            checkpoint_rows: read_checkpoint_rows(src)?,
            etcd: Some(EtcdSettings { endpoints, advertise, prefix, ttl }),
        })
    }

    /// Where it listens unless `BAZAR_LISTEN` says otherwise.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:9000";

    /// `--help` text.
    pub const HELP: &'static str = "\
bazar-catalog: the catalog server (books, prices, stock), primary or replica.

Environment:
  BAZAR_ROLE      primary or replica (required without BAZAR_ETCD)
  BAZAR_PRIMARY   replica: base URL of the primary, e.g. http://127.0.0.1:9000
  BAZAR_REPLICAS  primary: comma-separated base URLs of the replicas
  BAZAR_DATA_DIR  directory of books.csv (default ./data-catalog; seeded on first start)
  BAZAR_MEMCACHED primary: memcached host:port list whose entries writes invalidate
  BAZAR_LEASE_MS  length of a replica's read lease (default 2000, 1000 with etcd; 0: off,
                  without etcd only)
  BAZAR_CHECKPOINT_ROWS  fewest catalog.log rows between checkpoints (default 20000, at
                  least 100; a catalog of more books waits as many rows as it has books)

With etcd (automatic failover; BAZAR_ROLE, BAZAR_PRIMARY, BAZAR_REPLICAS then unset):
  BAZAR_ETCD         comma-separated etcd client URLs, e.g. http://127.0.0.1:2379
  BAZAR_ADVERTISE    this catalog's base URL for its peers (default http:// + BAZAR_LISTEN)
  BAZAR_ETCD_PREFIX  key prefix in etcd (default /bazar)
  BAZAR_ETCD_TTL     seconds a silent primary keeps the role (default 2, 2 to 60)

Commands:
  bazar-catalog import FILE   replace the catalog in BAZAR_DATA_DIR (catalog stopped)
                              with the books of FILE (header id,title,topic,price,quantity)
  bazar-catalog start-over    replace it with the built-in catalog: start the store over
                              (its replicas copy it, whatever they held)
";
}

/// `BAZAR_CHECKPOINT_ROWS` (default [`COMPACT_AFTER`](super::store::COMPACT_AFTER)).
fn read_checkpoint_rows(src: &dyn Source) -> Result<usize, ConfigError> {
    let rows = config::number(src, "BAZAR_CHECKPOINT_ROWS", 100..=100_000_000, "rows")?;
    Ok(rows.map_or(super::store::COMPACT_AFTER, |n| n as usize))
}

/// `BAZAR_LEASE_MS` (`default` when unset): 0 turns leases off, else at least
/// [`MIN_LEASE`].
fn read_lease(src: &dyn Source, default: Duration) -> Result<Duration, ConfigError> {
    let lease = config::millis(src, "BAZAR_LEASE_MS", default, 0..=60_000)?;
    if !lease.is_zero() && lease < MIN_LEASE {
        let problem = format!("must be 0 (off) or at least {} ms", MIN_LEASE.as_millis());
        return Err(ConfigError { var: "BAZAR_LEASE_MS", problem });
    }
    Ok(lease)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Vars;

    #[test]
    fn etcd_settings_exclude_fixed_roles() {
        let etcd = ("BAZAR_ETCD", "http://127.0.0.1:2379");
        let listen = ("BAZAR_LISTEN", "127.0.0.1:9000");
        let ok = CatalogConfig::from_source(&Vars(&[etcd, listen])).unwrap();
        let settings = ok.etcd.unwrap();
        assert_eq!((settings.advertise.as_str(), settings.prefix.as_str()), ("http://127.0.0.1:9000", "/bazar"));
        assert_eq!((ok.role, ok.lease, settings.ttl), (Role::Replica, DEFAULT_ETCD_LEASE, DEFAULT_ETCD_TTL));
        let bad: [(&[(&str, &str)], &str); 8] = [
            (&[etcd, listen, ("BAZAR_LEASE_MS", "0")], "BAZAR_LEASE_MS"),
            (&[etcd, listen, ("BAZAR_ROLE", "primary")], "BAZAR_ETCD"),
            (&[etcd, listen, ("BAZAR_PRIMARY", "http://a:1")], "BAZAR_ETCD"),
            (&[etcd, listen, ("BAZAR_REPLICAS", "http://a:1")], "BAZAR_ETCD"),
            (&[etcd, ("BAZAR_LISTEN", "0.0.0.0:9000")], "BAZAR_ADVERTISE"),
            (&[etcd, listen, ("BAZAR_ADVERTISE", "http://[::]:9000")], "BAZAR_ADVERTISE"),
            (&[etcd, listen, ("BAZAR_ETCD_TTL", "1")], "BAZAR_ETCD_TTL"),
            (&[("BAZAR_ETCD", "etcd:2379"), listen], "BAZAR_ETCD"),
        ];
        for (vars, var) in bad {
            assert_eq!(CatalogConfig::from_source(&Vars(vars)).unwrap_err().var, var, "{vars:?}");
        }
        let public = [etcd, ("BAZAR_LISTEN", "0.0.0.0:9000"), ("BAZAR_ADVERTISE", "http://catalog-1:9000")];
        assert_eq!(
            CatalogConfig::from_source(&Vars(&public)).unwrap().etcd.unwrap().advertise,
            "http://catalog-1:9000"
        );
        assert!(CatalogConfig::from_source(&Vars(&[listen])).unwrap_err().var == "BAZAR_ROLE", "static needs a role");
    }
}
