//! TLS on the client side: `wss://` signaling and `turns:` relays (TURN over
//! TLS over TCP), with rustls and its aws-lc-rs provider (the one str0m
//! already links), no OpenSSL.
//!
//! [`TlsClient`] owns the rustls client config: the roots it trusts (the
//! system's store, read through rustls-native-certs, plus any private CA
//! file) or, only when asked explicitly, no verification at all. It
//! connects a TCP stream and turns a handshake failure into a sentence
//! that names the problem ([`describe`]).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// A plain or TLS stream, boxed where either may be used.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// What to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM files of extra certificate authorities (a private CA), trusted
    /// besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// Accept any certificate. The connection is still encrypted, but
    /// anyone on the path can impersonate the server.
    pub insecure: bool,
}

/// Why a [`TlsClient`] could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A CA file could not be read or held no certificate: (file, why).
    #[error("CA file {0}: {1}")]
    CaFile(String, String),
    /// Neither the system store nor a CA file gave a single root.
    #[error(
        "no trusted root certificates: the system store is empty or unreadable ({0}); install the ca-certificates package or give a CA file"
    )]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A client TLS configuration; cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    insecure: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsClient {
    /// Trusts the system's roots and `opts.ca_files`, or nothing is
    /// checked with `opts.insecure`.
    pub fn new(opts: &TlsOptions) -> Result<TlsClient, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            for path in &opts.ca_files {
                let name = path.display().to_string();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| TlsError::CaFile(name.clone(), e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::CaFile(name.clone(), e.to_string()))?;
                if certs.is_empty() {
                    return Err(TlsError::CaFile(name, "no PEM certificate in it".into()));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| TlsError::CaFile(name.clone(), e.to_string()))?;
                }
            }
            if roots.is_empty() {
                let why = match native.errors.first() {
                    Some(e) => e.to_string(),
                    None => format!("{added} certificates found"),
                };
                return Err(TlsError::NoRoots(why));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(TlsClient {
            config: Arc::new(config),
            insecure: opts.insecure,
        })
    }

    /// The system's roots alone, loaded once per process.
    pub fn system() -> Result<TlsClient, TlsError> {
        static SYSTEM: OnceLock<Result<TlsClient, TlsError>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| TlsClient::new(&TlsOptions::default()))
            .clone()
    }

    /// Whether certificates go unchecked.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Runs the handshake on `tcp` for `host` (a name or an IP address,
    /// which the certificate must carry). The error says what went wrong
    /// ([`describe`]).
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| describe(&e, host))
    }
}

/// A handshake error as a sentence: an untrusted, expired or misnamed
/// certificate says so, with what to do about it.
pub fn describe(e: &std::io::Error, host: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("TLS handshake with {host} failed: {e}");
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                CertificateError::UnknownIssuer => {
                    "it is signed by an authority this machine does not trust (pass that CA with --ca-file)".to_string()
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    format!("it is not issued for {host:?} (connect by the name it carries)")
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "it has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "it is not valid yet (check the clocks)".to_string()
                }
                CertificateError::Revoked => "it is revoked".to_string(),
                other => format!("{other:?}"),
            };
            format!("the certificate of {host} is not trusted: {what}")
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}

/// `--insecure`: any certificate is taken, but the handshake's signatures
/// are still checked, so the session is at least bound to the key the
/// server showed.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("peer-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let opts = |p: &std::path::Path| TlsOptions {
            ca_files: vec![p.to_path_buf()],
            insecure: false,
        };
        let e = TlsClient::new(&opts(&empty)).unwrap_err();
        assert!(
            matches!(&e, TlsError::CaFile(f, _) if f.ends_with("empty.pem")),
            "{e}"
        );
        let e = TlsClient::new(&opts(&dir.join("missing.pem"))).unwrap_err();
        assert!(
            matches!(&e, TlsError::CaFile(f, _) if f.ends_with("missing.pem")),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        // Insecure needs no roots at all.
        let c = TlsClient::new(&TlsOptions {
            ca_files: vec![],
            insecure: true,
        })
        .unwrap();
        assert!(c.is_insecure());
    }

    #[test]
    fn untrusted_certificate_is_named() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let s = describe(&e, "turn.example");
        assert!(s.contains("not trusted") && s.contains("--ca-file"), "{s}");
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        );
        assert!(describe(&e, "turn.example").contains("\"turn.example\""));
    }
}
