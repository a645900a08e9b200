//! Test harness for the store and for the crates built on it (enabled by the `testing` feature).
//!
//! - [`sqlite_store`]: a fresh SQLite file in a temp dir that is deleted on drop.
//! - [`postgres_database`]: a fresh PostgreSQL database on the server named by
//!   `ECI_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! - [`redis_url`]: the Redis named by `ECI_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! - [`each_backend`]: runs one test body on SQLite, then on PostgreSQL, labelling failures.
//! - [`seed`], [`fleet`], [`batch_request`]: a small deterministic fleet and a tenant with a quota.
//! - [`assert_ledger_consistent`]: recomputes the ledger from instances and reservations.
//! - [`record_gone_at`], [`vacuum_analyze`]: seeding months of history fast, for benchmarks.
//!
//! When PostgreSQL or Redis is not reachable, the helpers print a loud `SKIPPED` line to stderr and
//! return `None`, unless the environment variable `CI` is `true` (or `1`): then they panic, so that a
//! CI job can never pass without having run them.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use eci_core::{
    Area, BatchRequest, Carrier, Fleet, Idc, IdcId, IdcLedger, IdcStatus, Instance, MiB, MilliCpu,
    PlacementSpec, Quota, ReservationState, Resources, Runtime, Tenant, TenantId, Workload,
};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::instances::InstanceFilter;
use crate::{Backend, Store, StoreConfig};

/// Where PostgreSQL tests go unless `ECI_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Where Redis tests go unless `ECI_TEST_REDIS_URL` says otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// How long to wait for a test server before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per test store unless asked otherwise: small, since many tests run at once against
/// one PostgreSQL server whose connection limit is shared.
pub const DEFAULT_TEST_CONNECTIONS: u32 = 4;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// True when running under CI, where a missing test server is a failure rather than a skip.
fn in_ci() -> bool {
    std::env::var("CI").map(|v| v.eq_ignore_ascii_case("true") || v == "1").unwrap_or(false)
}

fn unreachable_server(what: &'static str, url: &str, why: &str) {
    if in_ci() {
        panic!("{what} is not reachable at {} ({why}), and CI=true requires these tests to run", redact(url));
    }
    let url = redact(url);
    let line = format!("SKIPPED: {what} not reachable at {url} ({why}); these tests did not run");
    // Once per process straight to the real stderr, which the test harness does not capture, so
    // that a skip shows even when every test passes; and once per test in its captured output.
    static SHOUTED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut shouted = SHOUTED.lock().unwrap_or_else(|e| e.into_inner());
    if !shouted.contains(&what) {
        shouted.push(what);
        let bang = "!".repeat(line.len().min(100));
        let _ = writeln!(std::io::stderr(), "\n{bang}\n{line}\n{bang}\n");
    }
    eprintln!("{line}");
}

/// `url` with any password in it replaced by `***`, fit for printing.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let authority_end = url[scheme_end..].find(['/', '?']).map(|i| scheme_end + i).unwrap_or(url.len());
    let authority = &url[scheme_end..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end], &authority[..colon], &url[scheme_end + at..])
        }
        _ => url.to_string(),
    }
}

fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.write_u64(COUNTER.load(Ordering::Relaxed));
    h.finish() as u32
}

/// `<pid>_<n>_<random>`: unique per call, and tells which process made it.
fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}_{n}_{:08x}", std::process::id(), random_u32())
}

// ---- SQLite ------------------------------------------------------------------------------------

/// A temp directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempDirGuard {
    path: PathBuf,
}

impl TempDirGuard {
    /// Creates a fresh, uniquely named directory under the system temp dir.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDirGuard { path })
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A store on a fresh SQLite file; the file goes away with the guard (keep the guard alive as long
/// as the store).
pub async fn sqlite_store() -> (Store, TempDirGuard) {
    sqlite_store_with(DEFAULT_TEST_CONNECTIONS).await
}

/// [`sqlite_store`] with a given pool size.
pub async fn sqlite_store_with(max_connections: u32) -> (Store, TempDirGuard) {
    let dir =
        TempDirGuard::new("eci-store-test").expect("cannot create a temp dir for the SQLite test database");
    let url = sqlite_url(&dir);
    let store = Store::connect(&StoreConfig::new(&url).max_connections(max_connections))
        .await
        .unwrap_or_else(|e| panic!("cannot open the SQLite test database {url}: {e:?}"));
    (store, dir)
}

/// The URL of the database file [`sqlite_store`] keeps in `dir`.
pub fn sqlite_url(dir: &TempDirGuard) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("eci.db").display())
}

// ---- PostgreSQL --------------------------------------------------------------------------------

/// The server PostgreSQL tests create their databases on.
pub fn database_url() -> String {
    std::env::var("ECI_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string())
}

/// `url` with its database name replaced by `db` (query string kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A fresh PostgreSQL database made for one test, and the store connected to it.
#[derive(Debug)]
pub struct TestDatabase {
    /// The store connected to this database.
    pub store: Store,
    /// The URL of this database, for anything that must connect on its own.
    pub url: String,
    /// The database's name on the server.
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Closes the store and drops the database. Best effort: a database left behind is dropped by a
    /// later run once the process that made it has exited.
    pub async fn cleanup(self) {
        // sqlx's `close` can miss a connection that is being handed back while it runs; FORCE ends
        // such a straggler instead of waiting on it and leaving the database behind.
        self.store.close().await;
        if let Ok(Ok(mut admin)) =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&self.admin_url)).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}

/// Creates `eci_test_<pid>_<n>_<random>` on the test server and connects a store to it.
pub async fn postgres_database(max_connections: u32) -> Option<TestDatabase> {
    let admin_url = database_url();
    let mut admin = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&admin_url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            unreachable_server("PostgreSQL", &admin_url, &e.to_string());
            return None;
        }
        Err(_) => {
            unreachable_server("PostgreSQL", &admin_url, "timed out");
            return None;
        }
    };
    drop_abandoned_databases(&mut admin).await;
    let name = format!("eci_test_{}", unique_suffix());
    // CREATE DATABASE can collide with another one copying the template at the same moment.
    let mut attempt = 0;
    loop {
        match sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("creating test database {name} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("cannot create test database {name} on {admin_url}: {e}"),
        }
    }
    let _ = admin.close().await;
    let url = with_database(&admin_url, &name);
    let store = Store::connect(&StoreConfig::new(&url).max_connections(max_connections))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database {name}: {e:?}"));
    Some(TestDatabase { store, url, name, admin_url })
}

/// Whether process `pid` is alive on this machine; `None` when that cannot be told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new(&format!("/proc/{pid}")).exists())
}

/// Drops, once per process, the test databases that earlier runs left behind: those whose maker
/// (the pid in their name) is no longer running and that nobody is connected to. A database still
/// in use cannot be dropped anyway (no `FORCE`), so a mistaken guess costs nothing.
async fn drop_abandoned_databases(admin: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<(String,)> = match sqlx::query_as(
        "SELECT d.datname::TEXT FROM pg_database d WHERE d.datname LIKE 'eci\\_test\\_%' \
         AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .fetch_all(&mut *admin)
    .await
    {
        Ok(names) => names,
        Err(e) => {
            eprintln!("listing old test databases failed: {e}");
            return;
        }
    };
    for (name,) in names {
        let Some(pid) =
            name.strip_prefix("eci_test_").and_then(|r| r.split('_').next()).and_then(|p| p.parse().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) != Some(false) {
            continue;
        }
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"")).execute(&mut *admin).await
        {
            eprintln!("dropping old test database {name} failed: {e}");
        }
    }
}

// ---- Redis -------------------------------------------------------------------------------------

/// The Redis URL for tests if the server answers a PING, otherwise `None` (after a loud SKIPPED
/// line; a panic under CI).
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("ECI_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_string());
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, ping).await {
        Ok(Ok(_)) => Some(url),
        Ok(Err(e)) => {
            unreachable_server("Redis", &url, &e.to_string());
            None
        }
        Err(_) => {
            unreachable_server("Redis", &url, "timed out");
            None
        }
    }
}

// ---- Running a test on every backend -----------------------------------------------------------

/// Polls a future, turning a panic inside it into an `Err` with the panic's payload.
struct CatchUnwind<F: Future>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs the test body `f` on a fresh SQLite store, then on a fresh PostgreSQL database (skipped,
/// loudly, when the server is unreachable outside CI). Both run even if the first fails; a failure
/// panics naming the backend(s) it happened on.
pub async fn each_backend<F, Fut>(f: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    each_backend_with(DEFAULT_TEST_CONNECTIONS, f).await
}

/// [`each_backend`] with a given pool size per store.
pub async fn each_backend_with<F, Fut>(max_connections: u32, f: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut failures = Vec::new();

    eprintln!("---- running on SQLite ----");
    let (store, dir) = sqlite_store_with(max_connections).await;
    if let Err(payload) = CatchUnwind(Box::pin(f(store.clone()))).await {
        failures.push(format!("[SQLite] {}", panic_message(&*payload)));
    }
    store.close().await;
    drop(dir);

    eprintln!("---- running on PostgreSQL ----");
    if let Some(db) = postgres_database(max_connections).await {
        match CatchUnwind(Box::pin(f(db.store.clone()))).await {
            Ok(()) => db.cleanup().await,
            Err(payload) => {
                eprintln!("keeping test database {} for inspection", db.name);
                db.store.close().await;
                failures.push(format!("[PostgreSQL] {}", panic_message(&*payload)));
            }
        }
    }

    if !failures.is_empty() {
        panic!("test failed on {} backend(s):\n{}", failures.len(), failures.join("\n"));
    }
}

/// A label for messages: which backend a store talks to.
pub fn label(store: &Store) -> &'static str {
    match store.backend() {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

// ---- Seed data ---------------------------------------------------------------------------------

/// A fixed instant the tests call "now".
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("a valid date")
}

/// The instance size the seed fleet is measured in: 1 vCPU and 4 GiB.
pub fn small() -> Resources {
    Resources::new(MilliCpu(1000), MiB(4 * 1024), 0)
}

/// `vcpu` vCPU and `gib` GiB, no GPU.
pub fn resources(vcpu: u64, gib: u64) -> Resources {
    Resources::new(MilliCpu(vcpu * 1000), MiB(gib * 1024), 0)
}

/// One active IDC with plain containers.
pub fn idc(id: &str, area: (&str, &str, &str), carriers: &[Carrier], capacity: Resources) -> Idc {
    Idc {
        id: IdcId(id.to_string()),
        name: id.to_string(),
        area: Area::new(area.0, area.1, area.2),
        carriers: carriers.to_vec(),
        capacity,
        runtimes: vec![Runtime::Container],
        status: IdcStatus::Active,
        kube_context: None,
        rich_runtime_class: None,
        ssh_ingress_host: None,
        headroom_percent: 0,
    }
}

/// How many [`small`] instances fit in the active IDCs of [`fleet`].
pub const FLEET_ROOM: u64 = 96;

/// Six IDCs over two provinces; in [`small`] instances:
///
/// | IDC       | area                            | carriers        | room | status   |
/// |-----------|---------------------------------|-----------------|------|----------|
/// | gd-gz-1   | south-china/guangdong/guangzhou | telecom, unicom | 32   | active   |
/// | gd-sz-1   | south-china/guangdong/shenzhen  | telecom         | 16   | active   |
/// | gd-sz-2   | south-china/guangdong/shenzhen  | unicom          | 16   | active   |
/// | zj-hz-1   | east-china/zhejiang/hangzhou    | mobile          | 16   | active   |
/// | zj-hz-2   | east-china/zhejiang/hangzhou    | bgp             | 16   | active   |
/// | zj-nb-1   | east-china/zhejiang/ningbo      | telecom         | 16   | draining |
///
/// `gd-sz-1` also runs rich containers; `zj-hz-2` also VMs and has 4 GPUs.
pub fn fleet() -> Fleet {
    const GZ: (&str, &str, &str) = ("south-china", "guangdong", "guangzhou");
    const SZ: (&str, &str, &str) = ("south-china", "guangdong", "shenzhen");
    const HZ: (&str, &str, &str) = ("east-china", "zhejiang", "hangzhou");
    const NB: (&str, &str, &str) = ("east-china", "zhejiang", "ningbo");
    let mut idcs = vec![
        idc("gd-gz-1", GZ, &[Carrier::Telecom, Carrier::Unicom], resources(32, 128)),
        idc("gd-sz-1", SZ, &[Carrier::Telecom], resources(16, 64)),
        idc("gd-sz-2", SZ, &[Carrier::Unicom], resources(16, 64)),
        idc("zj-hz-1", HZ, &[Carrier::Mobile], resources(16, 64)),
        idc("zj-hz-2", HZ, &[Carrier::Bgp], resources(16, 64)),
        idc("zj-nb-1", NB, &[Carrier::Telecom], resources(16, 64)),
    ];
    idcs[1].runtimes.push(Runtime::Rich);
    idcs[4].runtimes.push(Runtime::Vm);
    idcs[4].capacity.gpu = 4;
    idcs[5].status = IdcStatus::Draining;
    Fleet { idcs }
}

/// Loads `fleet` into the store, each IDC's cluster read as exactly as big as the fleet says.
pub async fn seed_fleet(store: &Store, fleet: &Fleet) {
    store
        .sync_fleet(fleet, t0())
        .await
        .unwrap_or_else(|e| panic!("[{}] seeding the fleet: {e:?}", label(store)));
    for idc in &fleet.idcs {
        read_cluster_as_bound(store, idc).await;
    }
}

/// Records a reading of `idc`'s cluster as one node exactly as big as its fleet bound, nothing
/// foreign on it: what tests without a cluster stand on.
pub async fn read_cluster_as_bound(store: &Store, idc: &Idc) {
    let node = eci_core::capacity::NodeReading {
        allocatable: idc.capacity,
        schedulable: true,
        ready: true,
        foreign: Resources::ZERO,
    };
    let reading = eci_core::capacity::ClusterReading { nodes: vec![node], ..Default::default() };
    store
        .record_cluster_capacity(&idc.id, &reading.capacity(), t0())
        .await
        .unwrap_or_else(|e| panic!("[{}] reading {}'s cluster: {e:?}", label(store), idc.id));
}

/// Creates a tenant with a quota.
pub async fn seed_tenant(store: &Store, name: &str, quota: Quota) -> Tenant {
    store
        .create_tenant(name, quota, t0())
        .await
        .unwrap_or_else(|e| panic!("[{}] creating tenant {name}: {e:?}", label(store)))
}

/// The quota of the seed tenant: 50 instances, 50 vCPU, 100 requests per second.
pub fn seed_quota() -> Quota {
    Quota { max_cpu: Some(MilliCpu(50_000)), max_instances: Some(50), requests_per_second: Some(100) }
}

/// What [`seed`] made.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The fleet seeded ([`fleet`]).
    pub fleet: Fleet,
    /// `acme`, with [`seed_quota`].
    pub tenant: Tenant,
}

impl Seeded {
    /// The seeded tenant's id.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant.id
    }
}

/// The [`fleet`] and one tenant, `acme`, with [`seed_quota`].
pub async fn seed(store: &Store) -> Seeded {
    let fleet = fleet();
    seed_fleet(store, &fleet).await;
    let tenant = seed_tenant(store, "acme", seed_quota()).await;
    Seeded { fleet, tenant }
}

/// A request for `count` [`small`] containers anywhere, spread, all or nothing.
pub fn batch_request(count: u64) -> BatchRequest {
    BatchRequest {
        count,
        spec: small(),
        runtime: Runtime::Container,
        workload: Workload { image: "nginx:1.27".into(), ..Default::default() },
        placement: PlacementSpec { all_or_nothing: true, ..Default::default() },
        reservation_id: None,
        ttl_seconds: None,
        create_timeout_seconds: None,
        labels: BTreeMap::new(),
    }
}

// ---- Checking the ledger -----------------------------------------------------------------------

/// Every ledger line as it stands, by IDC.
pub async fn ledger(store: &Store) -> BTreeMap<IdcId, IdcLedger> {
    store
        .list_idcs()
        .await
        .unwrap_or_else(|e| panic!("[{}] listing IDCs: {e:?}", label(store)))
        .into_iter()
        .map(|(idc, line)| (idc.id, line))
        .collect()
}

/// The sum of `allocated` over every IDC.
pub async fn total_allocated(store: &Store) -> Resources {
    ledger(store).await.values().fold(Resources::ZERO, |sum, line| sum + line.allocated)
}

/// Every instance of `tenant` matching `filter`, following the pages to the end.
pub async fn all_instances(store: &Store, tenant: &TenantId, filter: &InstanceFilter) -> Vec<Instance> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_instances(tenant, filter, cursor.as_deref(), 200)
            .await
            .unwrap_or_else(|e| panic!("[{}] listing instances: {e:?}", label(store)));
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Checks the stored ledger against what it must equal, recomputed from the records: per IDC,
/// `allocated` is the sum of the live instances' specs, `reserved` the unused part of the active
/// reservations, both within `total`; each tenant's usage is the sum of its live instances.
pub async fn assert_ledger_consistent(store: &Store) {
    assert_ledger_matches_records(store).await;
    for (idc, line) in ledger(store).await {
        assert!(
            line.total.covers(&(line.allocated + line.reserved)),
            "[{}] IDC {idc} is over-committed: {line:?}",
            label(store)
        );
    }
}

/// [`assert_ledger_consistent`] but for `total`: where a cluster shrank under what its IDC had
/// promised, the promise may exceed what it sells now, and must still equal the records.
pub async fn assert_ledger_matches_records(store: &Store) {
    let backend = label(store);
    let mut allocated: BTreeMap<IdcId, Resources> = BTreeMap::new();
    let mut reserved: BTreeMap<IdcId, Resources> = BTreeMap::new();
    let tenants = store.list_tenants().await.unwrap_or_else(|e| panic!("[{backend}] listing tenants: {e:?}"));
    for tenant in &tenants {
        let (mut instances, mut cpu) = (0u64, 0u64);
        for i in all_instances(store, &tenant.id, &InstanceFilter::default()).await {
            if !i.state.is_ended() {
                let sum = allocated.entry(i.idc.clone()).or_insert(Resources::ZERO);
                *sum = *sum + i.spec;
                instances += 1;
                cpu += i.spec.cpu.0;
            }
        }
        assert_eq!(
            (tenant.used_instances, tenant.used_cpu.0),
            (instances, cpu),
            "[{backend}] tenant {} usage (instances, milli-CPU) differs from its live instances",
            tenant.name
        );
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .list_reservations(&tenant.id, cursor.as_deref(), 500)
                .await
                .unwrap_or_else(|e| panic!("[{backend}] listing reservations: {e:?}"));
            for r in page.items.iter().filter(|r| r.state == ReservationState::Active) {
                for slot in &r.slots {
                    let sum = reserved.entry(slot.idc.clone()).or_insert(Resources::ZERO);
                    *sum = *sum + r.request.spec * (slot.count - slot.used);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    for (idc, line) in ledger(store).await {
        let want_allocated = allocated.remove(&idc).unwrap_or(Resources::ZERO);
        let want_reserved = reserved.remove(&idc).unwrap_or(Resources::ZERO);
        assert_eq!(
            line.allocated, want_allocated,
            "[{backend}] IDC {idc}: allocated differs from live instances"
        );
        assert_eq!(
            line.reserved, want_reserved,
            "[{backend}] IDC {idc}: reserved differs from active reservations"
        );
    }
    assert!(allocated.is_empty(), "[{backend}] instances in IDCs the ledger does not know: {allocated:?}");
    assert!(reserved.is_empty(), "[{backend}] reservations in IDCs the ledger does not know: {reserved:?}");
}

/// Gives a batch's idempotency key the fingerprint stores wrote before fingerprints had a version
/// (the SHA-256 of the request's JSON), as a database from then holds it.
pub async fn write_unversioned_fingerprint(store: &Store, batch: &eci_core::BatchId) {
    use sha2::Digest;
    let request: String = sqlx::query_scalar("SELECT request FROM batches WHERE id = $1")
        .bind(&batch.0)
        .fetch_one(&store.pool)
        .await
        .expect("the batch's request");
    sqlx::query("UPDATE batches SET request_hash = $1 WHERE id = $2")
        .bind(hex::encode(sha2::Sha256::digest(request.as_bytes())))
        .bind(&batch.0)
        .execute(&store.pool)
        .await
        .expect("an unversioned fingerprint");
}

/// What [`Store::connect`] does to the fingerprints of an older database; returns how many changed.
pub async fn upgrade_fingerprints(store: &Store) -> u64 {
    store.upgrade_request_hashes().await.expect("fingerprints upgraded")
}

/// Records that these `stopping` instances' objects are gone, each at its own moment, as
/// [`Store::record_observation`] with `Observed::Gone` does one at a time, but in one transaction
/// with one ledger update for them all: seeding months of history this way takes seconds, not the
/// minutes of a transaction (and a wait for the disk) per instance.
pub async fn record_gone_at(store: &Store, gone: &[(eci_core::InstanceId, DateTime<Utc>)]) {
    use crate::instances::{Ending, Scope, mark_ended};
    let mut tx = store.pool.begin().await.expect("a transaction");
    let mut ended = Vec::with_capacity(gone.len());
    let mut last_ms = 0;
    for (id, at) in gone {
        let at_ms = at.timestamp_millis();
        let stopping = [eci_core::InstanceState::Stopping];
        let (_, mut these) = mark_ended(&mut tx, Scope::Instance(id), &stopping, Ending::Terminated, at_ms)
            .await
            .expect("instance ended");
        ended.append(&mut these);
        last_ms = last_ms.max(at_ms);
    }
    crate::ledger::release_ended(&mut tx, &ended, last_ms).await.expect("capacity given back");
    crate::instances::end_emptied_batches(&mut tx, &ended, last_ms).await.expect("emptied batches ended");
    tx.commit().await.expect("committed");
}

/// Leaves a PostgreSQL database's tables as autovacuum would within minutes of a big load
/// (vacuumed, statistics fresh), so that it does not do so in the middle of a measurement.
pub async fn vacuum_analyze(store: &Store) {
    if store.backend() == Backend::Postgres {
        sqlx::query("VACUUM ANALYZE").execute(&store.pool).await.expect("VACUUM ANALYZE");
    }
}

/// An admin's deletion: held to the deletion windows, never to a tenant's bulk guard.
pub fn operator() -> crate::risk::Deletion {
    use eci_core::risk::{Actor, ActorKind};
    crate::risk::Deletion {
        actor: Actor::key(ActorKind::Admin, &eci_core::KeyId("k-operator".into())),
        confirm: None,
    }
}

/// Raises every deletion budget to a billion per window, for seeding that ends instances by the
/// hundred thousand (a month of usage); the tests of risk control keep the defaults.
pub async fn lift_deletion_budgets(store: &Store) {
    use eci_core::risk::{Budget, Rules};
    let lifted = Budget { deletions: eci_core::risk::MAX_COUNT, window_seconds: 1 };
    let rules = Rules { per_idc: lifted, per_tenant: lifted, platform: lifted, ..Rules::default() };
    store.set_platform_rules(&rules, t0()).await.expect("lifting the deletion budgets");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_gets_another_database_name() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(redact("postgres://u:secret@h:5432/test"), "postgres://u:***@h:5432/test");
        assert_eq!(redact("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("postgres://u@h/test"), "postgres://u@h/test");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
