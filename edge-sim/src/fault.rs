//! Fault injection: make a cluster behave like an edge IDC whose link is down, hanging, slow or
//! flapping. Set from code (`SimCluster::set_fault`) or over HTTP (`PUT /sim/fault` on the cluster's
//! control port, see [`crate::control`], which no fault affects, so a cut-off cluster can still be healed).
//!
//! A link that is down is down at the TCP level, as for a real IDC: the API server's socket is closed,
//! so connecting is refused, and connections opened before are cut ([`LinkListener`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link to the cluster does to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Requests are served normally.
    #[default]
    None,
    /// The IDC cannot be reached: connecting is refused and open connections are cut.
    Unreachable,
    /// Requests are accepted and never answered: only a client-side timeout ends them.
    BlackHole,
    /// Every answer is delayed this long.
    Slow(Duration),
    /// The link is up for `period`, then unreachable for `period`, and so on.
    Flapping(Duration),
}

/// The fault in force and when it was set (flapping counts its periods from then).
#[derive(Debug, Clone, Copy)]
struct Setting {
    fault: Fault,
    since: Instant,
}

/// The fault switch shared by the cluster handle and its server.
#[derive(Debug, Clone)]
pub struct FaultSwitch(Arc<RwLock<Setting>>, Arc<watch::Sender<Fault>>);

impl Default for FaultSwitch {
    fn default() -> Self {
        FaultSwitch(
            Arc::new(RwLock::new(Setting { fault: Fault::None, since: Instant::now() })),
            Arc::new(watch::Sender::new(Fault::None)),
        )
    }
}

impl FaultSwitch {
    /// Sets the fault every request meets from now on; a flapping link starts its first period up.
    pub fn set(&self, fault: Fault) {
        *self.0.write().expect("fault lock poisoned") = Setting { fault, since: Instant::now() };
        self.1.send_replace(fault);
    }

    /// Follows the fault setting, for streams that outlive a request (watches).
    pub fn subscribe(&self) -> watch::Receiver<Fault> {
        self.1.subscribe()
    }

    /// The fault as set: a flapping link reads as flapping, not as the half it is in.
    pub fn get(&self) -> Fault {
        self.0.read().expect("fault lock poisoned").fault
    }

    /// What a request arriving at `now` meets: a flapping link resolves to up or down.
    fn effective(&self, now: Instant) -> Fault {
        self.at(now).0
    }

    /// The fault in force at `now`, and when a flapping link next turns over.
    fn at(&self, now: Instant) -> (Fault, Option<Instant>) {
        let setting = *self.0.read().expect("fault lock poisoned");
        match setting.fault {
            Fault::Flapping(period) => {
                let period_ns = period.as_nanos().max(1);
                let periods = now.duration_since(setting.since).as_nanos() / period_ns;
                let turns = u64::try_from((periods + 1) * period_ns).unwrap_or(u64::MAX);
                let next = setting.since + Duration::from_nanos(turns);
                (if periods.is_multiple_of(2) { Fault::None } else { Fault::Unreachable }, Some(next))
            }
            other => (other, None),
        }
    }
}

/// The API server's listening socket, shaped by the fault switch: while the link is down the socket
/// is closed (connecting is refused) and every connection accepted before is cut; when the link comes
/// back the same address is bound again.
#[derive(Debug)]
pub struct LinkListener {
    addr: SocketAddr,
    socket: Option<TcpListener>,
    switch: FaultSwitch,
    faults: watch::Receiver<Fault>,
    /// Bumped at every cut; each connection ends when it moves past the value it was accepted under.
    cuts: watch::Sender<u64>,
}

impl LinkListener {
    /// Wraps the API server's bound socket, so that a cut link closes it and binds its address
    /// again when the link returns.
    pub fn new(socket: TcpListener, switch: FaultSwitch) -> io::Result<Self> {
        Ok(LinkListener {
            addr: socket.local_addr()?,
            socket: Some(socket),
            faults: switch.subscribe(),
            switch,
            cuts: watch::Sender::new(0),
        })
    }
}

impl axum::serve::Listener for LinkListener {
    type Io = LinkStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LinkStream, SocketAddr) {
        loop {
            let (fault, turns_at) = self.switch.at(Instant::now());
            let turnover = async move {
                match turns_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            if fault == Fault::Unreachable {
                if self.socket.take().is_some() {
                    self.cuts.send_modify(|cut| *cut += 1);
                    tracing::info!(addr = %self.addr, "link down: connections refused and cut");
                }
                tokio::select! {
                    _ = self.faults.changed() => {}
                    () = turnover => {}
                }
                continue;
            }
            let socket = match &self.socket {
                Some(socket) => socket,
                None => match TcpListener::bind(self.addr).await {
                    Ok(socket) => {
                        tracing::info!(addr = %self.addr, "link up: accepting connections");
                        self.socket.insert(socket)
                    }
                    Err(error) => {
                        // Someone took the port while the link was down; it is the only address
                        // clients know, so keep trying.
                        tracing::warn!(addr = %self.addr, %error, "binding the api server again failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok((stream, peer)) => return (LinkStream::new(stream, self.cuts.subscribe()), peer),
                    // Out of file descriptors and the like: wait rather than spin.
                    Err(error) => {
                        tracing::warn!(addr = %self.addr, %error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = self.faults.changed() => {}
                () = turnover => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A connection that fails every read and write once the link is cut, idle or not.
pub struct LinkStream {
    stream: TcpStream,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl LinkStream {
    fn new(stream: TcpStream, mut cuts: watch::Receiver<u64>) -> Self {
        let cut = Box::pin(async move {
            // The listener gone means the server is stopping, not a cut: let graceful shutdown finish.
            if cuts.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        LinkStream { stream, cut, is_cut: false }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        if self.is_cut { Err(io::Error::from(io::ErrorKind::ConnectionReset)) } else { Ok(()) }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Applies the fault in force to a request.
pub async fn inject(State(switch): State<FaultSwitch>, request: Request, next: Next) -> Response {
    match switch.effective(Instant::now()) {
        Fault::None | Fault::Flapping(_) => next.run(request).await,
        // The listener refuses and cuts connections while the link is down; a request that slipped in
        // on a connection being cut meets the same failure.
        Fault::Unreachable => {
            (StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::CONNECTION, "close")]).into_response()
        }
        Fault::BlackHole => std::future::pending().await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
    }
}

/// `PUT /sim/fault` body: `{"fault": "none|unreachable|black_hole|slow|flapping", "millis": 500}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultBody {
    fault: String,
    /// The delay of `slow`, the period of `flapping`.
    millis: Option<u64>,
}

impl FaultBody {
    pub(crate) fn to_fault(&self) -> Result<Fault, String> {
        let millis = || {
            self.millis
                .filter(|m| *m > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("`{}` needs `millis` > 0", self.fault))
        };
        match self.fault.as_str() {
            "none" => Ok(Fault::None),
            "unreachable" => Ok(Fault::Unreachable),
            "black_hole" => Ok(Fault::BlackHole),
            "slow" => Ok(Fault::Slow(millis()?)),
            "flapping" => Ok(Fault::Flapping(millis()?)),
            other => Err(format!("unknown fault `{other}`: none, unreachable, black_hole, slow or flapping")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_link_alternates_between_up_and_down_each_period() {
        let switch = FaultSwitch::default();
        switch.set(Fault::Flapping(Duration::from_secs(10)));
        let since = switch.0.read().unwrap().since;
        let at = |secs: u64| switch.effective(since + Duration::from_secs(secs));
        assert_eq!(at(0), Fault::None);
        assert_eq!(at(9), Fault::None);
        assert_eq!(at(10), Fault::Unreachable);
        assert_eq!(at(19), Fault::Unreachable);
        assert_eq!(at(20), Fault::None);
        assert_eq!(switch.get(), Fault::Flapping(Duration::from_secs(10)));
    }

    #[test]
    fn fault_bodies_are_read_or_refused_with_a_reason() {
        let body = |fault: &str, millis: Option<u64>| FaultBody { fault: fault.into(), millis };
        assert_eq!(body("black_hole", None).to_fault(), Ok(Fault::BlackHole));
        assert_eq!(body("slow", Some(250)).to_fault(), Ok(Fault::Slow(Duration::from_millis(250))));
        assert!(body("slow", None).to_fault().is_err());
        assert!(body("flapping", Some(0)).to_fault().is_err());
        assert!(body("cut", None).to_fault().unwrap_err().contains("unknown fault"));
    }
}
