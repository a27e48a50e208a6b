//! TLS for switchboard's listeners: loading a PEM certificate chain and key,
//! a [`CertStore`] that hands the current certificate to every new handshake
//! and reloads it without a restart, and the rustls [`ServerConfig`] built on
//! it.
//!
//! The store knows nothing about sockets. Any listener (HTTPS, TURN over TLS)
//! builds its config with [`CertStore::server_config`] and its own ALPN list;
//! one [`CertStore::watch`] task per store reloads on SIGHUP and when the
//! files change. A reload that fails (a missing file, a key that does not
//! match, a half-written PEM) keeps the certificate already served and logs
//! why.
//!
//! Crypto is rustls with the aws-lc-rs provider; no OpenSSL.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// ALPN protocol ids for HTTPS: HTTP/2 first, then HTTP/1.1.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block, or a broken one.
    #[error("{}: no PEM certificate in it ({why})", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1), or a
    /// broken one.
    #[error("{}: no PEM private key in it ({why})", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("{}: unsupported private key: {why}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        why: String,
    },
    /// The key is not the one of the first (leaf) certificate.
    #[error("{} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every config here uses: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses a PEM full chain (leaf first) and a PEM private key into a key
/// rustls can serve. `cert_path` and `key_path` only name the sources in
/// errors.
pub fn parse_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::NoCertificate {
            path: cert_path.into(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(Error::NoCertificate {
            path: cert_path.into(),
            why: "no BEGIN CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::NoKey {
        path: key_path.into(),
        why: e.to_string(),
    })?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::BadKey {
            path: key_path.into(),
            why: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // The one error keys_match gives for a key it cannot check (no
        // public key to compare): let rustls serve it and the client judge.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(Error::Mismatch {
            cert: cert_path.into(),
            key: key_path.into(),
        }),
    }
}

/// Reads and parses a PEM full chain and key from files.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })
    };
    parse_pem(&read(cert)?, &read(key)?, cert, key)
}

/// What a file looked like when last read: a change in any of these means
/// it was rewritten or replaced (certbot swaps symlinks, which changes the
/// inode of their target).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// The certificate a listener serves, from a PEM chain and key on disk.
/// Every handshake asks it for the current one, so a reload reaches every
/// new connection at once and leaves open ones alone.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last read, loaded or not: a bad pair is reported once,
    /// not every poll.
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
    loads: AtomicU64,
}

impl CertStore {
    /// Loads the files, failing if they do not hold a matching chain and key.
    pub fn open(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Self>, Error> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let seen = (stamp(&cert_path), stamp(&key_path));
        let first = load_files(&cert_path, &key_path)?;
        Ok(Arc::new(CertStore {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(seen),
            loads: AtomicU64::new(1),
        }))
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times a certificate was loaded (1 after [`open`](Self::open)).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Reads the files again. On success new handshakes get the new
    /// certificate; on error the old one stays.
    pub fn reload(&self) -> Result<(), Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            (stamp(&self.cert_path), stamp(&self.key_path));
        let fresh = load_files(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reloads if either file changed since it was last read. `None` when
    /// nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), Error>> {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return None;
        }
        Some(self.reload())
    }

    /// A server config that takes its certificate from this store, offering
    /// `alpn` (most preferred first; empty for none).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, Error> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Reloads on SIGHUP and when the files change (checked every `poll`),
    /// logging each outcome, until `shutdown` is cancelled. Needs a tokio
    /// runtime; one task per store.
    pub fn watch(
        self: &Arc<Self>,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        error!(
                        "cannot listen for SIGHUP, certificates reload on file change only: {e}"
                    );
                        None
                    }
                };
            let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = hangup => Some(("SIGHUP", store.reload())),
                    _ = tick.tick() => store.reload_if_changed().map(|r| ("file change", r)),
                };
                match outcome {
                    None => {}
                    Some((why, Ok(()))) => {
                        info!(cert = %store.cert_path.display(), trigger = why, "TLS certificate reloaded")
                    }
                    Some((why, Err(e))) => error!(
                        trigger = why,
                        "TLS certificate reload failed, still serving the previous one: {e}"
                    ),
                }
            }
        })
    }
}

/// Hands the store's current certificate to every handshake, whatever name
/// the client asked for.
#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("sb-tls-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for `name` and its key, as PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(store: &CertStore) -> Vec<u8> {
        store.current().cert[0].to_vec()
    }

    #[test]
    fn loads_a_chain_and_key() {
        let (cert, key) = self_signed("localhost");
        let ck = parse_pem(cert.as_bytes(), key.as_bytes(), "c".as_ref(), "k".as_ref()).unwrap();
        assert_eq!(ck.cert.len(), 1);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(ck.cert[0], der);
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        let (cert, key) = self_signed("localhost");
        let (_, other_key) = self_signed("localhost");
        let p = |s: &str| PathBuf::from(s);
        let err = parse_pem(b"junk", key.as_bytes(), &p("c.pem"), &p("k.pem")).unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
        assert!(
            err.to_string().starts_with("c.pem: no PEM certificate"),
            "{err}"
        );
        let err = parse_pem(cert.as_bytes(), b"", &p("c.pem"), &p("k.pem")).unwrap_err();
        assert!(matches!(err, Error::NoKey { .. }), "{err}");
        // A certificate where the key belongs.
        let err = parse_pem(cert.as_bytes(), cert.as_bytes(), &p("c"), &p("k")).unwrap_err();
        assert!(matches!(err, Error::NoKey { .. }), "{err}");
        let err = parse_pem(cert.as_bytes(), other_key.as_bytes(), &p("c"), &p("k")).unwrap_err();
        assert_eq!(err.to_string(), "k does not match the certificate in c");
        let err = load_files(&p("/nonexistent/c.pem"), &p("/nonexistent/k.pem")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn reload_swaps_and_keeps_the_old_on_error() {
        let dir = Dir::new("reload");
        let (c, k) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        let (cert1, key1) = self_signed("one.test");
        std::fs::write(&c, &cert1).unwrap();
        std::fs::write(&k, &key1).unwrap();
        let store = CertStore::open(&c, &k).unwrap();
        let first = leaf(&store);
        assert!(store.reload_if_changed().is_none(), "nothing changed yet");

        // A half-finished swap: new certificate, old key. Refused, old kept.
        let (cert2, key2) = self_signed("two.test");
        std::fs::write(&c, &cert2).unwrap();
        let err = store
            .reload_if_changed()
            .expect("cert changed")
            .unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        assert_eq!(leaf(&store), first);
        assert_eq!(store.loads(), 1);
        // Reported once, not at every poll.
        assert!(store.reload_if_changed().is_none());

        std::fs::write(&k, &key2).unwrap();
        store.reload_if_changed().expect("key changed").unwrap();
        assert_ne!(leaf(&store), first);
        assert_eq!(
            leaf(&store),
            CertificateDer::from_pem_slice(cert2.as_bytes())
                .unwrap()
                .to_vec()
        );
        assert_eq!(store.loads(), 2);

        // Files gone: the served certificate stays.
        std::fs::remove_file(&c).unwrap();
        let err = store.reload().unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");
        assert_eq!(store.loads(), 2);
    }

    #[tokio::test]
    async fn watch_reloads_on_change() {
        let dir = Dir::new("watch");
        let (c, k) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        let (cert1, key1) = self_signed("one.test");
        std::fs::write(&c, &cert1).unwrap();
        std::fs::write(&k, &key1).unwrap();
        let store = CertStore::open(&c, &k).unwrap();
        let stop = CancellationToken::new();
        let task = store.watch(Duration::from_millis(20), stop.clone());
        // Written elsewhere and renamed in, as deploy tools do.
        let (cert2, key2) = self_signed("two.test");
        std::fs::write(dir.0.join("k.new"), &key2).unwrap();
        std::fs::write(dir.0.join("c.new"), &cert2).unwrap();
        std::fs::rename(dir.0.join("k.new"), &k).unwrap();
        std::fs::rename(dir.0.join("c.new"), &c).unwrap();
        let want = CertificateDer::from_pem_slice(cert2.as_bytes())
            .unwrap()
            .to_vec();
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while leaf(&store) != want {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "the watcher never loaded the new certificate");
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn server_config_offers_alpn() {
        let dir = Dir::new("config");
        let (c, k) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        let (cert, key) = self_signed("localhost");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let store = CertStore::open(&c, &k).unwrap();
        let config = store.server_config(ALPN_HTTP).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
