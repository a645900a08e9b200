//! The client of one IDC's cluster. Only this crate and edge-sim build Kubernetes clients: the rest
//! of the platform names a cluster by its address or its kubeconfig context and gets a
//! [`ClusterClient`] to hand to the reconciler.

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, KubeconfigError};
use tower::limit::ConcurrencyLimitLayer;

/// Requests in flight at once to one cluster; more wait for one to finish. A watch holds its slot
/// only until its stream starts, so a cluster client opens at most this many connections beside its
/// watches and its probe's: a 10,000-instance burst reuses a few connections per IDC instead of
/// opening one per request, which over a fleet of a hundred clusters is thousands of descriptors.
pub const REQUESTS_IN_FLIGHT: usize = 8;

/// A client for an IDC's cluster as the reconciler wants it: without kube's built-in retries, which
/// would wait out a partition for minutes inside one request; the reconciler paces, times out and
/// retries requests itself, and treats a cluster that keeps failing as disconnected. Its requests
/// share a bounded number of connections ([`REQUESTS_IN_FLIGHT`]); the reachability probe has its
/// own, so a busy IDC is never taken for an unreachable one because the probe waited its turn.
#[derive(Clone)]
pub struct ClusterClient {
    work: kube::Client,
    probe: kube::Client,
}

/// Why no client could be made for a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address given is not a URL.
    #[error("`{url}` is not a cluster's address")]
    ParseUrlFailed {
        /// The address as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The kubeconfig cannot be read, or does not name the context (or its cluster) usably.
    #[error(transparent)]
    LoadKubeconfigFailed(KubeconfigError),
    /// The configuration was read but no client can be built from it (its TLS settings, say).
    #[error(transparent)]
    BuildFailed(kube::Error),
}

impl ClusterClient {
    /// A client for the cluster whose API server listens at `url`, with no credentials: how the
    /// embedded default and the tests reach their simulated IDCs.
    pub fn for_url(url: &str) -> Result<ClusterClient, ClientError> {
        let cluster_url =
            url.parse().map_err(|source| ClientError::ParseUrlFailed { url: url.to_string(), source })?;
        ClusterClient::from_config(kube::Config::new(cluster_url))
    }

    /// A client for the cluster a kubeconfig context names (from `KUBECONFIG` or the default
    /// kubeconfig), with its credentials: how production reaches its IDCs.
    pub async fn from_kubeconfig_context(context: &str) -> Result<ClusterClient, ClientError> {
        let options = KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
        let config =
            kube::Config::from_kubeconfig(&options).await.map_err(ClientError::LoadKubeconfigFailed)?;
        ClusterClient::from_config(config)
    }

    fn from_config(mut config: kube::Config) -> Result<ClusterClient, ClientError> {
        config.default_retry = false;
        let builder = |config| ClientBuilder::try_from(config).map_err(ClientError::BuildFailed);
        let work =
            builder(config.clone())?.with_layer(&ConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT)).build();
        Ok(ClusterClient { work, probe: builder(config)?.build() })
    }

    /// The kube client underneath, for the reconciler's requests and reflectors.
    pub(crate) fn kube(&self) -> &kube::Client {
        &self.work
    }

    /// The kube client the reachability probe goes through.
    pub(crate) fn probe(&self) -> &kube::Client {
        &self.probe
    }
}
