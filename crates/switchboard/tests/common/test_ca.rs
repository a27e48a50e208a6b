//! A throw-away CA and a server certificate it signed, for `localhost` and
//! 127.0.0.1, written as PEM files into a fresh temporary folder.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::PathBuf;

pub struct TestCa {
    pub dir: PathBuf,
    /// The CA certificate, PEM: what a client trusts.
    pub ca: PathBuf,
    /// The server's chain (its certificate), PEM: `--tls-cert`.
    pub cert: PathBuf,
    /// The server's key, PEM: `--tls-key`.
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-test-ca-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchboard test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let t = TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&t.ca, ca.pem()).unwrap();
        std::fs::write(&t.cert, cert.pem()).unwrap();
        std::fs::write(&t.key, key.serialize_pem()).unwrap();
        t
    }

    pub fn cert_arg(&self) -> String {
        self.cert.display().to_string()
    }

    pub fn key_arg(&self) -> String {
        self.key.display().to_string()
    }

    pub fn ca_arg(&self) -> String {
        self.ca.display().to_string()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
