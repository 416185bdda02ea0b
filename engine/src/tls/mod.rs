//! TLS configuration for the server and for our own clients (tests, CLI, farm).
//!
//! ## What this module owns
//! - Building [`rustls::ServerConfig`] and [`rustls::ClientConfig`]: TLS 1.3 only, the *ring*
//!   provider named explicitly (never the process-default provider), ALPN [`ALPN_PROTOCOL`].
//! - Loading a PEM certificate chain and private key, with errors that name the file.
//! - The dev certificate: a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1`
//!   and `::1`, generated once into a directory and reused afterwards, so that tools and tests
//!   can trust it through [`dev_cert_path`].
//!
//! ## What it must not touch
//! Sockets, I/O loops, connection state and buffers. This module only produces immutable
//! configs, built once at startup and shared read-only (`Arc`) by every shard; driving a
//! `rustls` connection belongs to [`session`], and the socket to the shard's `net` module.
//!
//! ## Choices and why
//! - Stateless TLS 1.3 session tickets, [`TLS13_TICKETS_PER_HANDSHAKE`] per full or resumed
//!   handshake, from rustls' ticketer for the *ring* provider: tickets are sealed with a key
//!   that rotates every 6 hours, and a ticket is accepted for 12 hours (the current and the
//!   previous key). A phone keeps one long-lived connection, but when a network change or a
//!   crashed box makes many phones reconnect at once, a resumed handshake skips the
//!   certificate signature, the largest part of a full handshake's server CPU (numbers in
//!   `docs/decisions/tls-resumption.md`). The cost is one ticket record (210 bytes) on the
//!   wire per handshake, sent inside the handshake: it changes nothing an idle connection
//!   holds (152 heap bytes of TLS state with or without tickets, from `tls-session-bytes`). Still no server-side session cache (a shared, locked map): the ticket carries
//!   the session, so any shard, and a restarted box, can resume it (while its key lives).
//!   The ticketer is one shared object; each ticket sealed or opened takes its read lock,
//!   and its write lock only at a rotation.
//! - No 0-RTT (`max_early_data_size = 0`): early data can be replayed, and a frame sent
//!   twice is not something the protocol tolerates.
//! - `ignore_client_order = false`: the client's cipher-suite preference wins (rustls'
//!   default), so a phone without AES instructions can pick ChaCha20-Poly1305.
//! - No client certificates: users authenticate inside the protocol, after the handshake.
//! - `enable_secret_extraction = true`: after the handshake the session hands its traffic
//!   keys to [`records`] and the rustls session (~3.3 KB) is dropped; an idle connection
//!   keeps ~110 bytes of TLS state instead. The keys never leave the shard's memory.

pub mod records;
pub mod session;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};

/// The one application protocol the server speaks, offered and required through ALPN.
pub const ALPN_PROTOCOL: &[u8] = b"switchboard/1";

/// File name of the dev certificate (PEM) inside a [`CertSource::DevInDir`] directory.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";

/// File name of the dev private key (PKCS#8 PEM, mode 0600) inside a dev directory.
pub const DEV_KEY_FILE: &str = "dev-key.pem";

/// Subject alternative names of the generated dev certificate.
const DEV_CERT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Permissions of a private key file we write: owner read/write only.
const KEY_FILE_MODE: u32 = 0o600;

/// Where the server's certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A PEM certificate chain (end-entity first) and a PEM private key (PKCS#8, PKCS#1/RSA
    /// or SEC1/EC), for production.
    Files {
        /// Path of the PEM certificate chain.
        cert: PathBuf,
        /// Path of the PEM private key.
        key: PathBuf,
    },
    /// The dev certificate kept in this directory: loaded if both files exist, otherwise
    /// generated (self-signed) and written there first. Not for production.
    DevInDir(PathBuf),
}

/// Everything that can go wrong while building a TLS config. Each variant names the file or
/// the operation that failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read (missing, unreadable).
    #[error("reading certificate file {path}: {source}")]
    ReadCert {
        /// The certificate file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The private key file could not be read (missing, unreadable).
    #[error("reading private key file {path}: {source}")]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A PEM section in the file is malformed (bad base64, unterminated section).
    #[error("malformed PEM in {path}: {source}")]
    ParsePem {
        /// The file being parsed.
        path: PathBuf,
        /// The parser's error.
        source: io::Error,
    },
    /// The file holds no `CERTIFICATE` PEM section.
    #[error("no certificate found in {path}")]
    NoCertificate {
        /// The file that was expected to hold a certificate.
        path: PathBuf,
    },
    /// The file holds no private key PEM section (PKCS#8, RSA or EC).
    #[error("no private key found in {path}")]
    NoPrivateKey {
        /// The file that was expected to hold a private key.
        path: PathBuf,
    },
    /// The private key parsed but the crypto provider cannot sign with it (unsupported type).
    #[error("unusable private key in {path}: {source}")]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// Why the provider refused it.
        source: rustls::Error,
    },
    /// The end-entity certificate is not a valid X.509 certificate.
    #[error("invalid certificate in {path}: {source}")]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// Why it was refused.
        source: rustls::Error,
    },
    /// The private key is not the key of the end-entity certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate could not be used as a trust anchor for a client.
    #[error("cannot trust certificate in {path}: {source}")]
    BadTrustAnchor {
        /// The PEM file given as the root of trust.
        path: PathBuf,
        /// Why it was refused.
        source: rustls::Error,
    },
    /// rustls refused the config itself (for example the protocol versions for the provider).
    #[error("building rustls config: {0}")]
    Rustls(#[from] rustls::Error),
    /// rcgen could not generate the dev certificate.
    #[error("generating dev certificate: {0}")]
    Generate(String),
    /// The dev certificate directory could not be created.
    #[error("creating dev certificate directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A dev certificate or key file could not be written.
    #[error("writing dev certificate file {path}: {source}")]
    WriteDevCert {
        /// The file being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
}

/// Session tickets the server sends after each handshake: one, so that a client that
/// resumes with it gets the next (rustls' client uses a TLS 1.3 ticket once).
pub const TLS13_TICKETS_PER_HANDSHAKE: usize = 1;

/// Builds the server's TLS config: TLS 1.3 only, *ring* provider, no client auth, ALPN
/// [`ALPN_PROTOCOL`], stateless session tickets with rotating keys, no 0-RTT. Call once at
/// startup and share the `Arc`.
///
/// With [`CertSource::DevInDir`] the dev certificate is generated on first use; do that from
/// one process at a time (the server's `main`), since two first-time generators racing on the
/// same directory could leave a certificate from one and a key from the other (which then
/// fails loudly with [`TlsError::KeyMismatch`]).
pub fn server_config(source: &CertSource) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::DevInDir(dir) => ensure_dev_cert(dir)?,
    };
    let chain = load_cert_chain(&cert_path)?;
    let key = load_private_key(&key_path)?;
    build_server_config(chain, key, &cert_path, &key_path)
}

/// Where the dev certificate lives (or will be generated) for `dir`: clients trust this file.
pub fn dev_cert_path(dir: &Path) -> PathBuf {
    dir.join(DEV_CERT_FILE)
}

/// Builds a client config that trusts exactly the certificates in `cert_pem_path` (normally
/// [`dev_cert_path`]): TLS 1.3 only, *ring* provider, ALPN [`ALPN_PROTOCOL`], no client
/// certificate, no resumption: every connection made with it runs a full handshake (what
/// the benches that measure one need). For tests and the farm.
pub fn client_config_trusting(cert_pem_path: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_offering(cert_pem_path, &ring_provider().cipher_suites)
}

/// [`client_config_trusting`] that keeps the server's session tickets in memory (at most
/// [`CLIENT_SESSIONS_MAX`] servers) and resumes with them: the second connection made with
/// the same config skips the certificate exchange. Never sends early data.
pub fn client_config_resuming(cert_pem_path: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let config = client_config_trusting(cert_pem_path)?;
    let mut config = Arc::unwrap_or_clone(config);
    config.resumption = rustls::client::Resumption::in_memory_sessions(CLIENT_SESSIONS_MAX)
        .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// Servers a resuming client config keeps tickets for.
pub const CLIENT_SESSIONS_MAX: usize = 64;

/// [`client_config_trusting`] offering only `suites` (for example only ChaCha20-Poly1305,
/// as a phone without AES instructions would), to test and measure each suite.
pub fn client_config_offering(
    cert_pem_path: &Path,
    suites: &[rustls::SupportedCipherSuite],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_cert_chain(cert_pem_path)? {
        roots.add(cert).map_err(|source| TlsError::BadTrustAnchor {
            path: cert_pem_path.to_path_buf(),
            source,
        })?;
    }
    let provider = CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = ring_provider();
    let certified = certified_key(&provider, chain, key, cert_path, key_path)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.send_tls13_tickets = TLS13_TICKETS_PER_HANDSHAKE;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.max_early_data_size = 0;
    config.ignore_client_order = false;
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// Pairs the chain with its signing key, checking that the key belongs to the end-entity
/// certificate so that a mix-up fails at startup, not at the first handshake.
fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnusableKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        Err(source) => Err(TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::ReadCert {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParsePem {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::ParsePem {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

/// Returns the dev certificate and key paths in `dir`, generating both if either is missing.
fn ensure_dev_cert(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dev_cert_path(dir);
    let key_path = dir.join(DEV_KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let (cert_pem, key_pem) = generate_dev_cert()?;
    fs::create_dir_all(dir).map_err(|source| TlsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    // Key first: a cert file on disk then always has its key next to it.
    write_atomically(&key_path, key_pem.as_bytes(), KEY_FILE_MODE)?;
    write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(
        cert = %cert_path.display(),
        key = %key_path.display(),
        "generated self-signed dev TLS certificate for localhost, 127.0.0.1, ::1; \
         clients must trust the cert file"
    );
    Ok((cert_path, key_path))
}

/// A self-signed ECDSA P-256 certificate for [`DEV_CERT_SANS`], as (cert PEM, key PEM).
fn generate_dev_cert() -> Result<(String, String), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let sans: Vec<String> = DEV_CERT_SANS.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(sans).map_err(generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Switchboard dev certificate");
    let cert = params.self_signed(&key_pair).map_err(generate)?;
    Ok((cert.pem(), key_pair.serialize_pem()))
}

/// Writes `bytes` to a fresh temporary file with `mode`, then renames it over `path`, so a
/// reader never sees a half-written file and a key is never briefly world-readable.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_error = |source| TlsError::WriteDevCert {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp); // a leftover from a crashed run of this pid; absent is fine
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_error)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| {
            let _ = fs::remove_file(&tmp);
            write_error(source)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, Connection, ServerConnection};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            #[allow(clippy::disallowed_methods)] // a test's unique names, not a shard's path
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "switchboard-tls-{name}-{}-{unique}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Moves every pending TLS byte from `from` to `to` and lets `to` process it.
    fn transfer(from: &mut Connection, to: &mut Connection) -> usize {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rest = wire.as_slice();
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets().unwrap();
        }
        wire.len()
    }

    /// A client and server connection over the dev cert in `dir`, handshake completed.
    fn handshaken_pair(dir: &Path) -> (Connection, Connection) {
        let server_config = server_config(&CertSource::DevInDir(dir.to_path_buf())).unwrap();
        let client_config = client_config_trusting(&dev_cert_path(dir)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = Connection::Client(ClientConnection::new(client_config, name).unwrap());
        let mut server = Connection::Server(ServerConnection::new(server_config).unwrap());
        for _round in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            transfer(&mut client, &mut server);
            transfer(&mut server, &mut client);
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        (client, server)
    }

    fn send_ping(client: &mut Connection, server: &mut Connection) {
        client.writer().write_all(b"ping").unwrap();
        transfer(client, server);
        let mut got = [0u8; 4];
        server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        let mut more = [0u8; 16];
        let drained = server.reader().read(&mut more);
        assert_eq!(drained.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn dev_cert_generated_then_reused() {
        let dir = TempDir::new("reuse");
        server_config(&CertSource::DevInDir(dir.0.clone())).unwrap();
        let cert = fs::read(dev_cert_path(&dir.0)).unwrap();
        let key = fs::read(dir.0.join(DEV_KEY_FILE)).unwrap();
        let mode = fs::metadata(dir.0.join(DEV_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, KEY_FILE_MODE);

        server_config(&CertSource::DevInDir(dir.0.clone())).unwrap();
        assert_eq!(fs::read(dev_cert_path(&dir.0)).unwrap(), cert);
        assert_eq!(fs::read(dir.0.join(DEV_KEY_FILE)).unwrap(), key);
    }

    #[test]
    fn explicit_files_load() {
        let dir = TempDir::new("files");
        server_config(&CertSource::DevInDir(dir.0.clone())).unwrap();
        let source = CertSource::Files {
            cert: dev_cert_path(&dir.0),
            key: dir.0.join(DEV_KEY_FILE),
        };
        let config = server_config(&source).unwrap();
        assert_eq!(config.alpn_protocols, vec![ALPN_PROTOCOL.to_vec()]);
        assert_eq!(config.send_tls13_tickets, TLS13_TICKETS_PER_HANDSHAKE);
        assert!(config.ticketer.enabled());
        assert_eq!(config.max_early_data_size, 0);
        assert!(!config.ignore_client_order);
    }

    #[test]
    fn missing_cert_file_error_names_path() {
        let dir = TempDir::new("missing");
        let cert = dir.0.join("nope-cert.pem");
        let source = CertSource::Files {
            cert: cert.clone(),
            key: dir.0.join("nope-key.pem"),
        };
        let err = server_config(&source).unwrap_err();
        assert!(
            matches!(&err, TlsError::ReadCert { path, .. } if *path == cert),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&cert.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn garbage_pem_is_no_certificate() {
        let dir = TempDir::new("garbage");
        fs::create_dir_all(&dir.0).unwrap();
        let cert = dir.0.join("garbage.pem");
        fs::write(&cert, b"this is not a certificate\n").unwrap();
        let source = CertSource::Files {
            cert: cert.clone(),
            key: cert.clone(),
        };
        let err = server_config(&source).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoCertificate { path } if *path == cert),
            "{err:?}"
        );
    }

    #[test]
    fn cert_file_without_key_is_no_private_key() {
        let dir = TempDir::new("nokey");
        server_config(&CertSource::DevInDir(dir.0.clone())).unwrap();
        let cert = dev_cert_path(&dir.0);
        let source = CertSource::Files {
            cert: cert.clone(),
            key: cert.clone(),
        };
        let err = server_config(&source).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoPrivateKey { path } if *path == cert),
            "{err:?}"
        );
    }

    #[test]
    fn key_from_another_cert_is_mismatch() {
        let (one, two) = (TempDir::new("mismatch-a"), TempDir::new("mismatch-b"));
        server_config(&CertSource::DevInDir(one.0.clone())).unwrap();
        server_config(&CertSource::DevInDir(two.0.clone())).unwrap();
        let source = CertSource::Files {
            cert: dev_cert_path(&one.0),
            key: two.0.join(DEV_KEY_FILE),
        };
        let err = server_config(&source).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    }

    #[test]
    fn handshake_in_memory_negotiates_tls13_and_alpn() {
        let dir = TempDir::new("handshake");
        let (mut client, mut server) = handshaken_pair(&dir.0);
        send_ping(&mut client, &mut server);
        for conn in [&client, &server] {
            assert_eq!(
                conn.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            assert_eq!(conn.alpn_protocol(), Some(ALPN_PROTOCOL));
        }
    }

    #[test]
    fn server_connection_inline_size_under_4k() {
        let dir = TempDir::new("size");
        let (mut client, mut server) = handshaken_pair(&dir.0);
        send_ping(&mut client, &mut server);
        // Drained: nothing left to send either way (the ticket went out with the server's
        // last handshake flight), nothing left to read.
        assert!(!client.wants_write() && !server.wants_write());
        let size = std::mem::size_of::<ServerConnection>();
        println!("size_of::<rustls::ServerConnection>() = {size} bytes (inline, excludes heap)");
        assert!(size < 4096, "ServerConnection is {size} bytes");
    }
}
