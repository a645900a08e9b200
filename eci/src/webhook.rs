//! The deletion guard's listener: the admission webhook ([`eci_api::admission`]) served over TLS,
//! as an API server calls it, on its own address. `eci up` makes a certificate authority of its own
//! at every start and installs the guard's `ValidatingWebhookConfiguration`, trusting it, into each
//! simulated IDC; `eci serve` takes the certificate and key an operator gives it, and
//! `eci webhook-manifest` prints the configuration a member cluster needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use eci_core::IdcId;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long a client gets to finish its TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes under way at once; more connections wait in the kernel's backlog.
const HANDSHAKES_AT_ONCE: usize = 64;

/// `eci webhook-manifest`: what a member cluster needs to ask the platform before deleting.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// The deletion guard's address as the cluster's API server reaches it (`https://host:port`),
    /// that is `eci serve --webhook-listen` behind whatever the cluster's network goes through.
    #[arg(long)]
    pub url: String,
    /// The IDC whose cluster the configuration is for.
    #[arg(long)]
    pub idc: String,
    /// The certificate authority (PEM) that signed the listener's certificate.
    #[arg(long)]
    pub ca_file: PathBuf,
}

/// The guard's URL for the cluster of `idc`, under the listener's `base` (`https://host:port`).
pub fn idc_url(base: &str, idc: &IdcId) -> String {
    format!("{}/admission/idcs/{}", base.trim_end_matches('/'), idc)
}

/// Prints the `ValidatingWebhookConfiguration` of `args` as YAML, for `kubectl apply -f -`.
pub fn print_manifest(args: &ManifestArgs) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("--url {} is no URL", args.url))?;
    if url.scheme() != "https" || url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!(
            "--url must be an https URL with no query or fragment (API servers call webhooks over TLS only)"
        );
    }
    if args.idc.is_empty() || !args.idc.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        anyhow::bail!("--idc {:?} is no IDC id (letters, digits, `-`, `_` and `.`)", args.idc);
    }
    let ca = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("cannot read --ca-file {}", args.ca_file.display()))?;
    let certificates = CertificateDer::pem_slice_iter(ca.as_bytes()).collect::<Result<Vec<_>, _>>();
    if !matches!(&certificates, Ok(c) if !c.is_empty()) {
        anyhow::bail!("--ca-file {} holds no PEM certificate", args.ca_file.display());
    }
    let configuration = eci_instance_manager::manifest::webhook_configuration(
        &idc_url(&args.url, &IdcId(args.idc.clone())),
        &ca,
    );
    print!("{}", serde_yaml::to_string(&configuration).context("cannot write the manifest")?);
    Ok(())
}

/// The guard's serving certificate, and the authority a cluster verifies it with.
pub struct GuardTls {
    /// The certificate authority, PEM, as a configuration's `caBundle` carries it.
    pub ca_pem: String,
    config: Arc<ServerConfig>,
}

impl GuardTls {
    /// A new authority of this process's own and a certificate it signed for the loopback
    /// addresses: the embedded default's clusters run in this process, and a new authority at
    /// every start means no private key is ever left on disk.
    pub fn ephemeral() -> anyhow::Result<GuardTls> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, "eci up deletion guard");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
            .signed_by(&key, &ca)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(GuardTls { ca_pem: ca.pem(), config: server_config(vec![server.der().clone()], key)? })
    }

    /// The certificate chain and key an operator gave (PEM files), the chain's last certificate
    /// taken as its authority.
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<GuardTls> {
        let text = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        let chain = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{} is no PEM certificate chain", cert.display()))?;
        let Some(last) = chain.last() else {
            anyhow::bail!("{} holds no certificate", cert.display());
        };
        let ca_pem = pem_of(last);
        let key_text = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_text)
            .with_context(|| format!("{} is no PEM private key", key.display()))?;
        Ok(GuardTls { ca_pem, config: server_config(chain, key)? })
    }
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> =
        text.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a TLS server")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS listener for `axum::serve`: connections are accepted and their handshakes done by a task
/// of its own, many at once, so that a client that stalls its handshake holds up nobody else.
pub struct GuardListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
}

impl GuardListener {
    /// Listens on `listen` with `tls`.
    pub async fn bind(listen: SocketAddr, tls: &GuardTls) -> anyhow::Result<GuardListener> {
        let tcp = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for the deletion guard"))?;
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(tls.config.clone());
        let (done, ready) = mpsc::channel(HANDSHAKES_AT_ONCE);
        tokio::spawn(accept_loop(tcp, acceptor, done));
        Ok(GuardListener { local, ready })
    }

    /// The `https://` base of the guard's URLs.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    done: mpsc::Sender<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, addr) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to be closed.
                    tracing::warn!(%error, "the deletion guard cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = done.closed() => return,
        };
        let acceptor = acceptor.clone();
        let done = done.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, addr)).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%addr, %error, "a TLS handshake with the deletion guard failed")
                }
                Err(_) => tracing::debug!(%addr, "a TLS handshake with the deletion guard timed out"),
            }
            drop(permit);
        });
    }
}

impl axum::serve::Listener for GuardListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ends only with the listener; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
