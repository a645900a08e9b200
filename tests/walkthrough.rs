//! End-to-end tests of the real `eci` binary: the README's walk-through against `eci up` (embedded
//! SQLite, built-in fleet), and `eci serve` on PostgreSQL and Redis with a fleet file.
//!
//! Servers and clients run as child processes of the program Cargo built for these tests. A server
//! gets a port found by binding 127.0.0.1:0, is waited for by polling `GET /v1/openapi.json` a bounded
//! number of times, writes its output to files in the test's own temp dir, and is killed by a guard
//! when the test ends early. Every child starts without the `ECI_*` (and `DATABASE_URL`,
//! `REDIS_URL`, `KUBECONFIG`) variables of the environment the tests run in, so nothing leaks in from
//! a developer's shell.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eci_store::testing::{self, TempDirGuard};
use serde_json::{Value, json};

/// The program under test: the `eci` library's program, built as this package's binary.
const ECI: &str = env!("CARGO_BIN_EXE_eci-under-test");
/// Pause between two polls of a starting or stopping server.
const POLL: Duration = Duration::from_millis(50);
/// Polls of the API before a server counts as not starting (at least 15 s in all).
const READY_TRIES: u32 = 300;
/// Polls of a server told to stop before it counts as hanging (at least 20 s in all).
const EXIT_TRIES: u32 = 400;
/// Times a server is started on another port when the one picked was taken in the meantime.
const PORT_ATTEMPTS: u32 = 5;

/// A port nothing listens on right now: bound, read, and released at once.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local address").port()
}

/// The soft open-files limit most Linux desktops give a shell: every child starts under it, as a new
/// user's `eci up` would (the program raises it to the hard limit itself).
const DESKTOP_OPEN_FILES: u32 = 1024;

/// A command running the binary under [`DESKTOP_OPEN_FILES`], without the environment's `ECI_*`,
/// `DATABASE_URL`, `REDIS_URL` (clap reads options from them) and `KUBECONFIG`, and without stdin.
/// Arguments added to it go to the binary.
fn eci_command() -> Command {
    let mut cmd = Command::new("sh");
    // `exec` keeps the process the test signals the binary itself, not a shell in front of it.
    cmd.arg("-c").arg(format!("ulimit -Sn {DESKTOP_OPEN_FILES} 2>/dev/null; exec \"$0\" \"$@\"")).arg(ECI);
    for (key, _) in std::env::vars_os() {
        let inherited = key.to_str().is_some_and(|k| {
            k.starts_with("ECI_") || ["DATABASE_URL", "REDIS_URL", "KUBECONFIG"].contains(&k)
        });
        if inherited {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Whether the ECI API answers at `addr`. It asks for the OpenAPI document rather than `/healthz`:
/// a simulated Kubernetes cluster (of this or another test's server) that took the port answers
/// `/healthz` too, but not that.
fn api_answers(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    if !answer.contains("\"openapi\"") {
        return None;
    }
    answer.lines().next().map(str::to_string)
}

/// A running `eci up` or `eci serve`, killed (if still running) when dropped.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    /// Starts `eci <args> --listen 127.0.0.1:<free port>` with its output in files under
    /// `log_dir`, and waits until the API answers.
    fn start(args: &[&str], log_dir: &Path) -> Server {
        Server::start_in(&std::env::current_dir().expect("current dir"), args, log_dir)
    }

    /// [`Server::start`] with `cwd` as the server's working directory.
    fn start_in(cwd: &Path, args: &[&str], log_dir: &Path) -> Server {
        Server::launch(cwd, args, &[], log_dir)
    }

    /// [`Server::start_in`] with environment variables set for the server.
    fn launch(cwd: &Path, args: &[&str], env: &[(&str, &str)], log_dir: &Path) -> Server {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        for _ in 0..PORT_ATTEMPTS {
            let n = STARTS.fetch_add(1, Ordering::Relaxed);
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let stdout = log_dir.join(format!("server-{n}.stdout"));
            let stderr = log_dir.join(format!("server-{n}.stderr"));
            let child = eci_command()
                .current_dir(cwd)
                .envs(env.iter().copied())
                .args(args)
                .args(["--listen", &addr.to_string()])
                .stdout(std::fs::File::create(&stdout).expect("create the server's stdout file"))
                .stderr(std::fs::File::create(&stderr).expect("create the server's stderr file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {ECI}: {e}"));
            let mut server = Server { child: Some(child), addr, stdout, stderr };
            match server.wait_ready() {
                Ok(()) => return server,
                // Another process took the port between our probe and the server's bind.
                Err(status) if server.output().contains("cannot listen on") => {
                    eprintln!("eci {args:?} could not listen on {addr} ({status}); trying another port");
                }
                Err(status) => {
                    panic!("eci {args:?} exited before it was ready ({status}){}", server.output())
                }
            }
        }
        panic!("eci {args:?} found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// Polls the API until it answers; `Err` with the exit status if the server exits first.
    fn wait_ready(&mut self) -> Result<(), ExitStatus> {
        for _ in 0..READY_TRIES {
            if let Some(status) = self.try_wait() {
                return Err(status);
            }
            if api_answers(self.addr).is_some_and(|line| line.starts_with("HTTP/1.1 200")) {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        panic!("the server on {} did not answer after {READY_TRIES} tries{}", self.addr, self.output());
    }

    /// The exit status if the server has exited (and is then no longer tracked).
    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("cannot poll the server process")?;
        self.child = None;
        Some(status)
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the server wrote so far, for failure messages.
    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "\n--- server stdout ---\n{}\n--- server stderr ---\n{}",
            read(&self.stdout),
            read(&self.stderr)
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, no goodbye, as a crash would, and reaps it.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }

    /// Sends SIGTERM and waits (a bounded number of polls) for the server to exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("the server is not running").id();
        let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("cannot run kill");
        assert!(kill.success(), "kill -TERM {pid} failed: {kill}");
        for _ in 0..EXIT_TRIES {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(POLL);
        }
        panic!("the server did not exit within {EXIT_TRIES} polls after SIGTERM{}", self.output());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("server on {}:{}", self.addr, self.output());
        }
    }
}

/// A client: the binary with `ECI_ENDPOINT` and (when given) `ECI_TOKEN` set.
struct Client {
    endpoint: String,
    token: Option<String>,
}

impl Client {
    fn new(endpoint: &str, token: Option<&str>) -> Client {
        Client { endpoint: endpoint.to_string(), token: token.map(str::to_string) }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = eci_command();
        cmd.args(args).env("ECI_ENDPOINT", &self.endpoint);
        if let Some(token) = &self.token {
            cmd.env("ECI_TOKEN", token);
        }
        cmd.output().unwrap_or_else(|e| panic!("cannot run eci {args:?}: {e}"))
    }

    /// Runs `eci <args>`, requires exit 0, and returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "eci {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
        stdout
    }

    /// Runs `eci <args> -o json`, requires exit 0, and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("eci {args:?} printed no JSON ({e}):\n{stdout}"))
    }

    /// Runs `eci <args>`, requires a non-zero exit and an empty stdout, and returns stderr's lines.
    fn fails(&self, args: &[&str]) -> Vec<String> {
        let out = self.run(args);
        let (stdout, stderr) = texts(&out);
        assert!(!out.status.success(), "eci {args:?} should have failed:\n{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "eci {args:?} failed but printed to stdout:\n{stdout}");
        stderr.lines().map(str::to_string).collect()
    }

    /// `total` of `eci capacity` for one size and filter.
    fn capacity(&self, args: &[&str]) -> u64 {
        let args: Vec<&str> = ["capacity"].iter().chain(args).copied().collect();
        let answer = self.json(&args);
        answer["total"].as_u64().unwrap_or_else(|| panic!("no total in {answer}"))
    }
}

fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `KEY=value` lines of a credentials file.
fn read_credentials(path: &Path) -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not KEY=value: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The sum of `count` over a batch's placement, after checking every entry with `each`.
fn placed(batch: &Value, each: impl Fn(&Value)) -> u64 {
    let placement = batch["placement"].as_array().unwrap_or_else(|| panic!("no placement in {batch}"));
    assert!(!placement.is_empty(), "empty placement in {batch}");
    placement
        .iter()
        .map(|p| {
            each(p);
            p["count"].as_u64().unwrap_or_else(|| panic!("no count in {p}"))
        })
        .sum()
}

fn timestamp(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

/// What the real `kubectl` prints for `args`, or `None` (after a loud SKIPPED line) where it is not
/// installed outside CI; under `CI=true` a missing kubectl fails the test.
fn kubectl(args: &[&str]) -> Option<String> {
    let out = kubectl_output(args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

/// What kubectl wrote to standard error for `args`, which must fail.
fn kubectl_refused(args: &[&str]) -> Option<String> {
    let out = kubectl_output(args)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kubectl {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    Some(stderr)
}

fn kubectl_output(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("kubectl").args(args).stdin(Stdio::null()).output() {
        Ok(out) => Some(out),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("kubectl is needed under CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: kubectl cannot run ({e}); the kubeconfig of eci up is not tried");
            None
        }
    }
}

/// The README's walk-through, step by step, then its error cases, a graceful stop and a restart.
/// Where even the hard limit is too low for the simulated fleet, `eci up` says so in one line with
/// the number it needs, and exits non-zero before it starts anything.
#[test]
fn eci_up_under_too_low_a_hard_open_files_limit_says_how_many_it_needs() {
    let dir = TempDirGuard::new("eci-open-files").expect("a temp dir");
    let data = dir.path().join(".eci");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 300 && exec \"$0\" \"$@\"")
        .arg(ECI)
        .args(["up", "--listen", &listen, "--data-dir", data.to_str().expect("a UTF-8 path")])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run eci up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "eci up started anyway:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(
        lines[0].starts_with("error: eci up needs about 3688 open files for its 132 simulated IDCs")
            && lines[0].contains("may open only 300"),
        "{stderr}"
    );
    assert!(!data.join("eci.db").exists(), "nothing was started");
}

#[tokio::test]
async fn the_readme_walk_through_works_on_the_embedded_default() {
    let tmp = TempDirGuard::new("eci-walkthrough").expect("temp dir");
    let data = tmp.path().join("data");
    let data_dir = data.to_str().expect("a UTF-8 temp path");
    let mut server = Server::start(&["up", "--data-dir", data_dir], tmp.path());

    // `eci up` keeps two keys in <data-dir>/credentials and says where they are, never printing
    // the keys themselves, with the next command to try.
    let credentials_file = data.join("credentials");
    let credentials = read_credentials(&credentials_file);
    let admin = credentials.get("ECI_ADMIN_TOKEN").expect("ECI_ADMIN_TOKEN in the credentials").clone();
    let token = credentials.get("ECI_TOKEN").expect("ECI_TOKEN in the credentials").clone();
    assert!(!admin.is_empty() && !token.is_empty() && admin != token, "{credentials:?}");
    assert_eq!(credentials.len(), 2, "{credentials:?}");
    let printed = server.stdout();
    assert!(!printed.contains(&admin) && !printed.contains(&token), "eci up printed a key:\n{printed}");
    let file = credentials_file.display();
    assert!(
        printed.contains(&format!("keys: {file} (ECI_ADMIN_TOKEN, ECI_TOKEN)")),
        "eci up does not say where the keys are:\n{printed}"
    );
    assert!(
        printed.contains(&format!("$(grep ^ECI_TOKEN= {file}); eci areas")),
        "eci up does not say what to try next:\n{printed}"
    );
    // It starts quietly: what it prints is the banner, and it logs nothing unless something is wrong.
    assert!(printed.lines().count() <= 8, "a short banner:\n{printed}");
    let logged = std::fs::read_to_string(&server.stderr).unwrap_or_default();
    assert!(logged.trim().is_empty(), "eci up logs nothing at start:\n{logged}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials_file).expect("credentials metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the credentials file is readable by others");
    }

    let eci = Client::new(&server.endpoint(), Some(&token));

    // eci areas
    let areas = eci.ok(&["areas"]);
    assert!(areas.contains("guangdong") && areas.contains("south-china"), "{areas}");

    // eci capacity --cpu 2 --memory 4Gi --area guangdong --carrier telecom
    let size = ["--cpu", "2", "--memory", "4Gi", "--area", "guangdong", "--carrier", "telecom"];
    let room = eci.capacity(&size);
    assert!(room >= 1000, "only {room} instances of 2 vCPU / 4 GiB fit in Guangdong on Telecom");

    // eci batch create --count 1000 ... --ttl 12h --label run=probe-1 --wait: the instance manager
    // starts them in the IDCs' (simulated) clusters, and with `-o json` the only output is the
    // batch once they all run.
    let create = [
        "batch",
        "create",
        "--count",
        "1000",
        "--cpu",
        "2",
        "--memory",
        "4Gi",
        "--image",
        "nginx:1.27",
        "--area",
        "guangdong",
        "--carrier",
        "telecom",
        "--ttl",
        "12h",
        "--label",
        "run=probe-1",
        "--wait",
        "-o",
        "json",
    ];
    let out = eci.run(&create);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "eci {create:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stderr.is_empty(), "-o json shows no progress:\n{stderr}");
    let batch: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}"));
    let id = batch["id"].as_str().unwrap_or_else(|| panic!("no id in {batch}")).to_string();
    assert_eq!(batch["count"], 1000, "{batch}");
    assert_eq!(batch["counts"]["running"], 1000, "--wait returned before every instance ran: {batch}");
    assert_eq!(batch["state"], "active", "{batch}");
    assert_eq!(batch["image"], "nginx:1.27", "{batch}");
    assert_eq!(batch["labels"], json!({"run": "probe-1"}), "{batch}");
    let ttl = timestamp(&batch["expires_at"]) - timestamp(&batch["created_at"]);
    assert_eq!(ttl.num_seconds(), 12 * 3600, "{batch}");
    let total = placed(&batch, |p| {
        assert_eq!((&p["province"], &p["carrier"]), (&json!("guangdong"), &json!("telecom")), "{p}");
    });
    assert_eq!(total, 1000, "{batch}");
    assert_eq!(eci.capacity(&size), room - 1000, "the batch's capacity is not taken from the ledger");

    // eci batch list / eci batch get <id>
    let list = eci.ok(&["batch", "list"]);
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} not listed:\n{list}"));
    assert!(row.contains("active") && row.contains("1000"), "{row}");
    let view = eci.ok(&["batch", "get", &id]);
    for part in [id.as_str(), "active", "guangdong", "telecom", "run=probe-1", "nginx:1.27"] {
        assert!(view.contains(part), "`{part}` missing from eci batch get:\n{view}");
    }

    // eci instance list --batch <id> --limit 5
    let page = eci.json(&["instance", "list", "--batch", &id, "--limit", "5"]);
    let items = page["items"].as_array().unwrap_or_else(|| panic!("no items in {page}"));
    assert_eq!(items.len(), 5, "{page}");
    for i in items {
        assert_eq!(
            (&i["batch_id"], &i["province"], &i["carrier"]),
            (&json!(id), &json!("guangdong"), &json!("telecom"))
        );
    }
    assert!(page["next_cursor"].as_str().is_some_and(|c| !c.is_empty()), "no next_cursor in {page}");

    // Each runs with an IP.
    let first = items[0]["id"].as_str().unwrap();
    let shown = eci.json(&["instance", "get", first]);
    assert_eq!(shown["state"], "running", "{shown}");
    assert!(shown["ip"].as_str().is_some_and(|ip| ip.split('.').count() == 4), "no IP in {shown}");
    assert!(shown["started_at"].is_string(), "{shown}");

    // The real kubectl looks inside the instance's IDC through the kubeconfig eci up wrote, as an
    // operator looks inside a real one.
    let idc = shown["idc"].as_str().expect("the instance's IDC");
    let kubeconfig = data.join("kubeconfig");
    assert!(printed.contains(&format!("--kubeconfig {}", kubeconfig.display())), "{printed}");
    let pods =
        kubectl(&["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", idc, "get", "pods", "-A"]);
    if let Some(pods) = pods {
        let line =
            pods.lines().find(|l| l.contains(first)).unwrap_or_else(|| panic!("no Pod {first}:\n{pods}"));
        assert!(line.contains("Running"), "{line}");
        // Someone's kubectl in the IDC cannot end a live instance behind the platform's back: the
        // deletion guard every simulated IDC calls refuses both its Pod and its namespace.
        let namespace = line.split_whitespace().next().expect("the Pod's namespace");
        let context = ["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", idc];
        let refused = kubectl_refused(&[&context[..], &["delete", "pod", first, "-n", namespace]].concat());
        let refused = refused.expect("kubectl ran before");
        assert!(
            refused.contains("denied the request")
                && refused.contains(&format!("eci instance delete {first}")),
            "{refused}"
        );
        let refused = kubectl_refused(&[&context[..], &["delete", "namespace", namespace]].concat());
        let refused = refused.expect("kubectl ran before");
        assert!(refused.contains("denied the request") && refused.contains("live instance"), "{refused}");
        let pods = kubectl(&[&context[..], &["get", "pods", "-n", namespace]].concat()).expect("kubectl ran");
        assert!(pods.lines().any(|l| l.contains(first) && l.contains("Running")), "{pods}");
        let audit = eci.json(&["audit", "--actor", "out_of_band", "--target", first]);
        let lines = audit["items"].as_array().expect("audit lines");
        assert_eq!(lines.len(), 1, "the refused Pod deletion is audited: {audit}");
        assert_eq!((&lines[0]["verdict"], &lines[0]["rule"]), (&json!("denied"), &json!("live_instance")));
        assert!(eci.ok(&["audit", "--actor", "out_of_band"]).contains(namespace), "the namespace's too");
    }

    // eci batch delete <id>: all of the tenant's instances, so it must be confirmed with their number;
    // then the batch is released at once; its instances stop, and once their Pods are gone they end
    // and the capacity comes back.
    let refused = eci.fails(&["batch", "delete", &id]);
    assert!(refused[0].contains("confirm=1000") && refused[0].ends_with("(HTTP 409)"), "{refused:?}");
    // Confirmed, it is held all the same: more than an IDC's 100 deletions in 5 minutes. The admin
    // sees the hold and lets it through once.
    let held = eci.fails(&["batch", "delete", &id, "--confirm", "1000"]);
    assert!(held[0].contains("deletion_rate_limited") && held[0].ends_with("(HTTP 429)"), "{held:?}");
    let as_admin = Client::new(&eci.endpoint, Some(&admin));
    let holds = as_admin.json(&["admin", "risk", "holds"]);
    let hold = holds["holds"].as_array().and_then(|h| h.iter().find(|h| h["target_id"] == id.as_str()));
    let hold = hold.unwrap_or_else(|| panic!("no hold of {id}: {holds}"));
    assert_eq!(hold["count"], 1000, "{hold}");
    assert!(!holds["breakers"].as_array().unwrap().is_empty(), "an open breaker: {holds}");
    let approved = as_admin.ok(&["admin", "risk", "approve", hold["id"].as_str().unwrap()]);
    assert!(approved.contains("approved"), "{approved}");
    let deleted = eci.ok(&["batch", "delete", &id, "--confirm", "1000"]);
    // The breaker stays open for other deletions in its IDC until the admin resets it.
    for breaker in holds["breakers"].as_array().unwrap() {
        let reset = as_admin.ok(&["admin", "risk", "reset", breaker["breaker"].as_str().unwrap()]);
        assert!(reset.contains("reset"), "{reset}");
    }
    assert!(as_admin.json(&["admin", "risk", "holds"])["breakers"].as_array().unwrap().is_empty());
    assert!(deleted.contains(&id) && deleted.contains("released"), "{deleted}");
    let mut released = eci.json(&["batch", "get", &id]);
    assert_eq!(released["state"], "released", "{released}");
    assert!(!released["released_at"].is_null(), "{released}");
    for _ in 0..600 {
        if released["counts"]["terminated"] == 1000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        released = eci.json(&["batch", "get", &id]);
    }
    assert_eq!(released["counts"]["terminated"], 1000, "{released}");
    assert_eq!(eci.capacity(&size), room, "the released capacity did not come back");

    waiting_shows_progress_and_groups_failures(&eci, &kubeconfig).await;

    // eci usage and eci invoice: the 1,000 instances that ran are billed, each at least the minimum.
    let usage = eci.json(&["usage", "--group-by", "batch"]);
    let ours = usage["groups"].as_array().and_then(|g| g.iter().find(|g| g["key"] == id.as_str())).cloned();
    let ours = ours.unwrap_or_else(|| panic!("no usage of batch {id}: {usage}"));
    assert_eq!(ours["instances"], 1000, "{usage}");
    assert!(ours["totals"]["billed_ms"].as_i64().is_some_and(|ms| ms >= 1000 * 60_000), "{usage}");
    assert!(ours["totals"]["total_micros"].as_u64().is_some_and(|m| m > 0), "{usage}");
    assert!(eci.ok(&["usage"]).contains("Cost:"));
    assert!(eci.ok(&["invoice", "list"]).contains("draft"));
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let csv = eci.ok(&["invoice", "get", &period, "--csv"]);
    assert!(csv.starts_with("kind,period,runtime,") && csv.contains("base-container"), "{csv}");
    let stderr = eci.fails(&["invoice", "get", "2026-13"]);
    assert!(stderr.iter().any(|l| l.starts_with("error: invalid_request")), "{stderr:?}");

    walk_through_a_group(
        &eci,
        &Client::new(&server.endpoint(), Some(&admin)),
        &server.endpoint(),
        &token,
        tmp.path(),
    )
    .await;

    // Asking for more than fits fails with one line.
    let stderr = eci.fails(&[
        "batch", "create", "--count", "10000", "--cpu", "32", "--memory", "128Gi", "--image", "x", "--area",
        "hainan",
    ]);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].starts_with("error: insufficient_capacity: "), "{stderr:?}");
    assert!(stderr[0].contains("of 10000") && stderr[0].ends_with("(HTTP 422)"), "{stderr:?}");

    // A wrong key, and none at all.
    let stderr = Client::new(&server.endpoint(), Some("eci_not-a-key")).fails(&["batch", "list"]);
    assert!(stderr.iter().any(|l| l.starts_with("error: unauthorized")), "{stderr:?}");
    let stderr = Client::new(&server.endpoint(), None).fails(&["batch", "list"]);
    assert!(stderr.iter().any(|l| l.starts_with("error: ") && l.contains("set ECI_TOKEN")), "{stderr:?}");

    // SIGTERM stops the server gracefully.
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "eci up did not exit cleanly on SIGTERM{}", server.output());
    drop(server);

    // Started again on the same data dir, it has kept its keys and its batches.
    let mut server = Server::start(&["up", "--data-dir", data_dir], tmp.path());
    assert_eq!(read_credentials(&credentials_file), credentials, "the credentials changed on restart");
    let eci = Client::new(&server.endpoint(), Some(&token));
    let batches = eci.json(&["batch", "list"]);
    let items = batches["items"].as_array().unwrap_or_else(|| panic!("no items in {batches}"));
    let kept = items.iter().find(|b| b["id"] == json!(id)).unwrap_or_else(|| panic!("{id} lost: {batches}"));
    assert_eq!(kept["state"], "released", "{kept}");
    assert_eq!(eci.capacity(&size), room, "the ledger changed on restart");
    let tenants = reqwest::Client::new()
        .get(format!("{}/v1/admin/tenants", server.endpoint()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET /v1/admin/tenants");
    assert_eq!(tenants.status(), 200, "the admin key no longer works");
    let tenants: Value = tenants.json().await.expect("a JSON tenant list");
    assert!(tenants.as_array().is_some_and(|t| t.iter().any(|t| t["name"] == "demo")), "{tenants}");
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "eci up did not exit cleanly on SIGTERM{}",
        server.output()
    );
}

/// The README's autoscaled group, made from the README's own `group.yaml`: at its count once the
/// scaler has looked (a creation wakes it), growing when the pushed load steps up once its
/// instances have run long enough to be trusted, its events saying why, and deleted.
async fn walk_through_a_group(eci: &Client, admin: &Client, endpoint: &str, token: &str, dir: &Path) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let yaml = readme
        .split("cat > group.yaml <<'YAML'\n")
        .nth(1)
        .and_then(|rest| rest.split("\nYAML\n").next())
        .expect("the README's group.yaml");
    let file = dir.join("group.yaml");
    std::fs::write(&file, yaml).expect("writing group.yaml");
    let created = eci.json(&["group", "create", "-f", file.to_str().unwrap()]);
    let id = created["id"].as_str().unwrap_or_else(|| panic!("no id in {created}")).to_string();
    assert_eq!((created["min"].as_u64(), created["max"].as_u64()), (Some(2), Some(50)), "{created}");

    let at_count = |view: &Value| view["decided_at"].is_string() && view["current"] == view["desired"];
    let mut view = eci.json(&["group", "get", &id]);
    for _ in 0..300 {
        if at_count(&view) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        view = eci.json(&["group", "get", &id]);
    }
    assert!(at_count(&view), "the group never reached its count: {view}");
    let before = view["desired"].as_u64().unwrap();
    // At the minimum, or at whichever window is open now (6, or 20 in Beijing's evening).
    assert!([2, 6, 20].contains(&before), "{view}");
    let shown = eci.ok(&["group", "get", &id]);
    assert!(shown.contains(&id) && shown.contains("edge-web"), "{shown}");

    // The load steps up to 3x the target: pushed every second, as an exporter would, until the next
    // tick after the instances are trusted (30 s) grows the group. A window may open meanwhile (one
    // does every ten minutes) and grow it too: only growth past the window's count, with the load
    // read, is the load's doing.
    let grown_by_load = |view: &Value| {
        let floor = before.max(view["active_window"]["desired"].as_u64().unwrap_or(0));
        view["desired"].as_u64().unwrap() > floor && view["metric"]["value"] == 300.0
    };
    let http = reqwest::Client::new();
    let push = format!("{endpoint}/v1/groups/{id}/metrics");
    for _ in 0..120 {
        let pushed = http
            .post(&push)
            .bearer_auth(token)
            .json(&json!({ "samples": [{ "value": 300 }] }))
            .send()
            .await
            .expect("POST metrics");
        assert_eq!(pushed.status(), 204, "{:?}", pushed.text().await);
        view = eci.json(&["group", "get", &id]);
        if grown_by_load(&view) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(grown_by_load(&view), "the load step did not grow the group: {view}");

    let events = eci.json(&["group", "events", &id, "--all"]);
    let events = events["items"].as_array().unwrap_or_else(|| panic!("no events: {events}")).clone();
    assert!(
        events.iter().any(|e| e["kind"] == "decided" && e["message"].as_str().unwrap().contains("load:")),
        "no load decision among {events:#?}"
    );
    assert!(events.iter().any(|e| e["kind"] == "scaled_out"), "{events:#?}");
    let table = eci.ok(&["group", "events", &id]);
    assert!(table.contains("scaled_out"), "{table}");
    assert!(eci.json(&["group", "cost", &id])["total"]["billed_ms"].is_i64());

    // Its instances are all the tenant has left: the deletion asks for their number, as a user
    // would read it from the refusal; and the walk-through's big release used up the deletion
    // budget of some IDCs, whose breakers the admin resets when they trip.
    let mut confirm: Option<String> = None;
    let mut deleted = Value::Null;
    for _ in 0..8 {
        let mut args = vec!["group", "delete", id.as_str(), "-o", "json"];
        if let Some(n) = &confirm {
            args.extend(["--confirm", n.as_str()]);
        }
        let out = eci.run(&args);
        if out.status.success() {
            deleted = serde_json::from_slice(&out.stdout).expect("a deleted group");
            break;
        }
        let (_, stderr) = texts(&out);
        if let Some(rest) = stderr.split("confirm=").nth(1) {
            confirm = rest.split(|c: char| !c.is_ascii_digit()).next().map(str::to_string);
        } else if let Some(rest) = stderr.split("the `").nth(1) {
            let breaker = rest.split('`').next().unwrap();
            admin.ok(&["admin", "risk", "reset", breaker]);
        } else {
            panic!("group delete refused: {stderr}");
        }
    }
    assert_eq!(deleted["state"], "deleted", "{deleted}");
    let listed = eci.json(&["group", "list", "--state", "deleted"]);
    assert!(listed["items"].as_array().unwrap().iter().any(|g| g["id"] == json!(id)), "{listed}");
}

/// `--wait` in a log (no terminal): a line when the counts change, exit 0 once all run; and once
/// some instances have failed (two Pods marked evicted through their simulated cluster's API, as a
/// node would), a non-zero exit with the reasons counted and the batch printed all the same.
async fn waiting_shows_progress_and_groups_failures(eci: &Client, kubeconfig: &Path) {
    let create = [
        "batch",
        "create",
        "--count",
        "3",
        "--cpu",
        "1",
        "--memory",
        "1Gi",
        "--image",
        "nginx:1.27",
        "--area",
        "zhejiang",
        "--wait",
    ];
    let out = eci.run(&create);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "eci {create:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ID:"))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no ID in the batch printed:\n{stdout}"));
    assert!(stdout.contains("\nInstances: pending 0, creating 0, running 3,"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.first(), Some(&format!("waiting for batch {id} (3 instances, at most 10m)").as_str()));
    assert!(lines.last().is_some_and(|l| l.starts_with("3/3 running (")), "{stderr}");
    // What a line says, without the seconds since the start.
    let counts = |line: &str| line.rsplit_once(" (").map_or(line, |(counts, _)| counts).to_string();
    assert!(lines.windows(2).all(|w| counts(w[0]) != counts(w[1])), "a line per change:\n{stderr}");
    assert!(lines.len() <= 8, "no flood of lines:\n{stderr}");

    let listed = eci.json(&["instance", "list", "--batch", &id]);
    let instances = listed["items"].as_array().unwrap_or_else(|| panic!("no items in {listed}"));
    let evicted: Vec<&str> =
        instances[..2].iter().map(|i| i["id"].as_str().expect("an instance id")).collect();
    let http = reqwest::Client::new();
    for instance in &instances[..2] {
        let server = cluster_server(kubeconfig, instance["idc"].as_str().expect("the instance's IDC"));
        let name = instance["id"].as_str().expect("an instance id");
        let pods: Value = http
            .get(format!("{server}/api/v1/pods?labelSelector=eci.io%2Finstance%3D{name}"))
            .send()
            .await
            .expect("list the instance's Pod")
            .json()
            .await
            .expect("a JSON Pod list");
        let namespace =
            pods["items"][0]["metadata"]["namespace"].as_str().unwrap_or_else(|| panic!("{pods}"));
        let evict = http
            .patch(format!("{server}/api/v1/namespaces/{namespace}/pods/{name}/status"))
            .header("content-type", "application/merge-patch+json")
            .body(
                json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}})
                    .to_string(),
            )
            .send()
            .await
            .expect("mark the Pod evicted");
        assert!(evict.status().is_success(), "{:?}", evict.text().await);
    }
    let mut batch = Value::Null;
    for _ in 0..600 {
        batch = eci.json(&["batch", "get", &id]);
        if batch["counts"]["failed"] == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(batch["counts"]["failed"], 2, "the evicted instances did not fail: {batch}");

    let out = eci.run(&["batch", "get", &id, "--wait"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("ID:") && stdout.contains(&id), "the batch is printed:\n{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[lines.len() - 3..],
        [
            format!("error: 2 of 3 instances of batch {id} failed:"),
            format!("  2 × Evicted ({}, {})", evicted[0], evicted[1]),
            format!("`eci instance list --batch {id} --state failed` lists them"),
        ],
        "{stderr}"
    );
    let out = eci.run(&["batch", "get", &id, "--wait", "-o", "json"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let printed: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}"));
    assert_eq!((&printed["id"], &printed["counts"]["failed"]), (&json!(id), &json!(2)), "{printed}");
    assert!(stderr.starts_with(&format!("error: 2 of 3 instances of batch {id} failed:\n")), "{stderr}");
}

/// The API address of `idc`'s simulated cluster, from the kubeconfig `eci up` wrote: the list item
/// (a cluster, a context) that names it and has a `server`.
fn cluster_server(kubeconfig: &Path, idc: &str) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    let mut items: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("- ") {
            items.push(Vec::new());
        }
        if let Some(item) = items.last_mut() {
            item.push(line.trim_start_matches("- ").trim());
        }
    }
    let name = format!("name: {idc}");
    items
        .iter()
        .filter(|item| item.contains(&name.as_str()))
        .find_map(|item| item.iter().find_map(|l| l.strip_prefix("server: ")))
        .unwrap_or_else(|| panic!("no server for {idc} in the kubeconfig:\n{text}"))
        .to_string()
}

/// The data directory may be any directory name: the SQLite URL is built so that spaces, `#`, `%`,
/// `?` and a relative path with `..` all reach the file system as written.
#[tokio::test]
async fn eci_up_opens_a_data_dir_with_any_name() {
    let tmp = TempDirGuard::new("eci-data-dir").expect("temp dir");
    let odd = tmp.path().join("my data #1 50% a?b");
    std::fs::create_dir_all(tmp.path().join("sub")).expect("create sub");
    // Relative to the server's working directory, through `sub/..`.
    let relative = Path::new("sub/..").join(odd.file_name().expect("a file name"));
    let mut server =
        Server::start_in(tmp.path(), &["up", "--data-dir", relative.to_str().unwrap()], tmp.path());
    assert!(odd.join("eci.db").is_file(), "no eci.db in {}{}", odd.display(), server.output());
    let stray: Vec<_> = std::fs::read_dir(tmp.path().join("sub")).expect("read sub").collect();
    assert!(stray.is_empty(), "the database went elsewhere: {stray:?}");
    let credentials = read_credentials(&odd.join("credentials"));
    let eci = Client::new(&server.endpoint(), credentials.get("ECI_TOKEN").map(String::as_str));
    assert!(eci.ok(&["areas"]).contains("guangdong"));
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "eci up did not exit cleanly on SIGTERM{}",
        server.output()
    );
}

/// `eci up --risk-rules FILE` applies a tenant's overrides from the file, and refuses, naming what
/// is wrong, a file whose rule cannot hold or that names a tenant that does not exist.
#[tokio::test]
async fn eci_up_applies_a_risk_rules_file_and_refuses_a_wrong_one() {
    let tmp = TempDirGuard::new("eci-risk-rules").expect("temp dir");
    let data = tmp.path().join(".eci");
    let data = data.to_str().expect("a UTF-8 temp path");
    for (text, why) in [
        ("tenants:\n  demo: {bulk_share_percent: 101}\n", "tenant demo: bulk_share_percent"),
        ("tenants:\n  nobody: {bulk_count: 5}\n", "there is no tenant named nobody"),
        ("tenants:\n  demo: {bulk_cout: 5}\n", "unknown field `bulk_cout`"),
    ] {
        let file = tmp.path().join("wrong.yaml");
        std::fs::write(&file, text).expect("write the rules file");
        let listen = format!("127.0.0.1:{}", free_port());
        let out = eci_command()
            .args(["up", "--data-dir", data, "--listen", &listen, "--risk-rules", file.to_str().unwrap()])
            .output()
            .expect("eci up runs");
        let (_, stderr) = texts(&out);
        assert!(!out.status.success() && stderr.contains(why), "{text}: {stderr}");
    }
    let file = tmp.path().join("rules.yaml");
    std::fs::write(
        &file,
        "tenants:\n  demo: {bulk_count: 5, per_tenant: {deletions: 7, window_seconds: 60}}\n",
    )
    .expect("write the rules file");
    let mut server = Server::start_in(
        tmp.path(),
        &["up", "--data-dir", data, "--risk-rules", file.to_str().unwrap()],
        tmp.path(),
    );
    let credentials = read_credentials(&tmp.path().join(".eci").join("credentials"));
    let rules: Value = reqwest::Client::new()
        .get(format!("{}/v1/risk/rules", server.endpoint()))
        .bearer_auth(&credentials["ECI_TOKEN"])
        .send()
        .await
        .expect("GET /v1/risk/rules")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rules["rules"]["bulk_count"], 5, "{rules}");
    assert_eq!(rules["rules"]["per_tenant"], json!({"deletions": 7, "window_seconds": 60}), "{rules}");
    assert_eq!(rules["rules"]["per_idc"]["deletions"], 100, "the platform's own stay: {rules}");
    assert_eq!(server.terminate().code(), Some(0), "eci up did not exit cleanly{}", server.output());
}

/// Makes a tenant called `name` and an API key for it through the admin API; returns the key.
async fn new_tenant_key(http: &reqwest::Client, endpoint: &str, admin_key: &str, name: &str) -> String {
    let tenant = http
        .post(format!("{endpoint}/v1/admin/tenants"))
        .bearer_auth(admin_key)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("POST /v1/admin/tenants");
    assert_eq!(tenant.status(), 201);
    let tenant: Value = tenant.json().await.expect("a JSON tenant");
    let tenant_id = tenant["id"].as_str().unwrap_or_else(|| panic!("no id in {tenant}"));
    let key = http
        .post(format!("{endpoint}/v1/admin/tenants/{tenant_id}/keys"))
        .bearer_auth(admin_key)
        .json(&json!({"name": "cli"}))
        .send()
        .await
        .expect("POST /v1/admin/tenants/{id}/keys");
    assert_eq!(key.status(), 201);
    let key: Value = key.json().await.expect("a JSON key");
    key["secret"].as_str().unwrap_or_else(|| panic!("no secret in {key}")).to_string()
}

/// A small fleet over two regions, three cities and all four carriers.
const FLEET: &str = "\
idcs:
  - id: e2e-shenzhen-1
    region: south-china
    province: guangdong
    city: shenzhen
    carriers: [telecom, unicom]
    cpu: \"64\"
    memory: 256Gi
    runtimes: [container, rich]
    kube_context: e2e-shenzhen-1
  - id: e2e-hangzhou-1
    region: east-china
    province: zhejiang
    city: hangzhou
    carriers: [mobile]
    cpu: \"32\"
    memory: 128Gi
  - id: e2e-ningbo-1
    region: east-china
    province: zhejiang
    city: ningbo
    carriers: [bgp]
    cpu: \"16\"
    memory: 64Gi
";

/// [`FLEET`] written to `dir`, and a kubeconfig naming Shenzhen's cluster, simulated in a runtime
/// of its own (the client calls of the tests block theirs). The other IDCs name no reachable
/// cluster, so they sell nothing.
fn fleet_with_shenzhen(dir: &Path) -> (PathBuf, PathBuf) {
    let fleet = dir.join("fleet.yaml");
    std::fs::write(&fleet, FLEET).expect("write the fleet file");
    let shenzhen =
        eci_edge_sim::NodeSpec::new("e2e-shenzhen-1-node").cpu_millis(64_000).memory_mib(256 * 1024);
    let url = sim_on_its_own_thread(eci_edge_sim::SimConfig::default().name("e2e-shenzhen-1").node(shenzhen));
    let kubeconfig = dir.join("kubeconfig");
    let contexts = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sz\n  cluster:\n    server: {url}\n\
         contexts:\n- name: e2e-shenzhen-1\n  context:\n    cluster: sz\n    user: sz\n\
         users:\n- name: sz\n  user: {{}}\n"
    );
    std::fs::write(&kubeconfig, contexts).expect("write the kubeconfig");
    (fleet, kubeconfig)
}

/// `eci serve` on a fresh PostgreSQL database and Redis, with the fleet from a file and an admin
/// key given on the command line: tenants and keys through the admin API, then the client.
#[tokio::test]
async fn eci_serve_runs_on_postgresql_with_a_fleet_file() {
    let Some(db) = testing::postgres_database(2).await else { return };
    let Some(redis) = testing::redis_url().await else {
        db.cleanup().await;
        return;
    };
    let tmp = TempDirGuard::new("eci-serve").expect("temp dir");
    let (fleet, kubeconfig) = fleet_with_shenzhen(tmp.path());
    let admin_key = "e2e-admin-key-0f3c9a1d7b";
    let (cert, key, ca) = guard_certificate(tmp.path());
    let guard_listen = format!("127.0.0.1:{}", free_port());
    let (receiver, alerts) = alert_receiver_on_its_own_thread();
    let args = [
        "serve",
        "--database-url",
        &db.url,
        "--redis-url",
        &redis,
        "--fleet",
        fleet.to_str().expect("a UTF-8 temp path"),
        "--admin-key",
        admin_key,
        "--webhook-listen",
        &guard_listen,
        "--webhook-tls-cert",
        cert.to_str().expect("a UTF-8 temp path"),
        "--webhook-tls-key",
        key.to_str().expect("a UTF-8 temp path"),
        "--alert-webhook",
        &receiver,
    ];
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("a UTF-8 temp path"))];
    let cwd = std::env::current_dir().expect("current dir");
    let mut server = Server::launch(&cwd, &args, &env, tmp.path());
    let endpoint = server.endpoint();
    let http = reqwest::Client::new();

    // The admin API takes the key given on the command line, and only that.
    let refused = http
        .post(format!("{endpoint}/v1/admin/tenants"))
        .bearer_auth("not-the-admin-key")
        .json(&json!({"name": "e2e"}))
        .send()
        .await
        .expect("POST /v1/admin/tenants");
    assert_eq!(refused.status(), 401);
    let secret = new_tenant_key(&http, &endpoint, admin_key, "e2e").await;
    let eci = Client::new(&endpoint, Some(&secret));

    // The areas are the fleet file's, no more, no fewer.
    let areas = eci.json(&["areas"]);
    let mut cities = BTreeMap::new();
    for region in areas["regions"].as_array().unwrap_or_else(|| panic!("no regions in {areas}")) {
        for province in region["provinces"].as_array().expect("provinces") {
            for city in province["cities"].as_array().expect("cities") {
                let path = [&region["code"], &province["code"], &city["code"]].map(|c| c.as_str().unwrap());
                cities.insert(path.join("/"), city["carriers"].clone());
            }
        }
    }
    let expected = BTreeMap::from([
        ("east-china/zhejiang/hangzhou".to_string(), json!(["mobile"])),
        ("east-china/zhejiang/ningbo".to_string(), json!(["bgp"])),
        ("south-china/guangdong/shenzhen".to_string(), json!(["telecom", "unicom"])),
    ]);
    assert_eq!(cities, expected, "{areas}");
    let regions: BTreeSet<&str> =
        areas["regions"].as_array().unwrap().iter().filter_map(|r| r["code"].as_str()).collect();
    assert_eq!(regions, BTreeSet::from(["east-china", "south-china"]));

    // 64 vCPU / 256 GiB in Shenzhen hold 32 instances of 2 vCPU / 4 GiB.
    let size = ["--cpu", "2", "--memory", "4Gi", "--area", "shenzhen", "--carrier", "telecom"];
    assert_eq!(eci.capacity(&size), 32);
    let batch = eci.json(&[
        "batch",
        "create",
        "--count",
        "20",
        "--cpu",
        "2",
        "--memory",
        "4Gi",
        "--image",
        "nginx:1.27",
        "--area",
        "shenzhen",
        "--carrier",
        "telecom",
    ]);
    let id = batch["id"].as_str().unwrap_or_else(|| panic!("no id in {batch}")).to_string();
    assert_eq!(batch["count"], 20, "{batch}");
    let check = |p: &Value| {
        let at = [&p["region"], &p["province"], &p["city"], &p["carrier"]];
        assert_eq!(
            at,
            [&json!("south-china"), &json!("guangdong"), &json!("shenzhen"), &json!("telecom")],
            "{p}"
        );
    };
    assert_eq!(placed(&batch, check), 20, "{batch}");
    let stored = eci.json(&["batch", "get", &id]);
    assert_eq!(placed(&stored, check), 20, "{stored}");
    let counts = stored["counts"].as_object().unwrap_or_else(|| panic!("no counts in {stored}"));
    assert_eq!(counts.values().filter_map(Value::as_u64).sum::<u64>(), 20, "{stored}");
    assert_eq!(stored["counts"]["terminated"], 0, "{stored}");
    assert_eq!(eci.capacity(&size), 12);
    let stderr = eci.fails(&[
        "batch",
        "create",
        "--count",
        "13",
        "--cpu",
        "2",
        "--memory",
        "4Gi",
        "--image",
        "x",
        "--area",
        "shenzhen",
        "--carrier",
        "telecom",
    ]);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].starts_with("error: insufficient_capacity: ") && stderr[0].contains("of 13"),
        "{stderr:?}"
    );

    // The member cluster gets the deletion guard as an operator installs it: the manifest
    // `eci webhook-manifest` prints, applied with kubectl; then a live instance's Pod is kept.
    let manifest = eci.ok(&[
        "webhook-manifest",
        "--url",
        &format!("https://{guard_listen}"),
        "--idc",
        "e2e-shenzhen-1",
        "--ca-file",
        ca.to_str().expect("a UTF-8 temp path"),
    ]);
    let manifest_file = tmp.path().join("guard.yaml");
    std::fs::write(&manifest_file, &manifest).expect("write the manifest");
    let context = ["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", "e2e-shenzhen-1"];
    if kubectl(&[&context[..], &["apply", "-f", manifest_file.to_str().unwrap()]].concat()).is_some() {
        eci.ok(&["batch", "get", &id, "--wait"]);
        let pods = kubectl(&[&context[..], &["get", "pods", "-A"]].concat()).expect("kubectl ran");
        let line =
            pods.lines().find(|l| l.contains("Running")).unwrap_or_else(|| panic!("no Pod runs:\n{pods}"));
        let [namespace, pod] = [0, 1].map(|i| line.split_whitespace().nth(i).expect("a column"));
        let refused = kubectl_refused(&[&context[..], &["delete", "pod", pod, "-n", namespace]].concat());
        let refused = refused.expect("kubectl ran");
        assert!(refused.contains(&format!("eci instance delete {pod}")), "{refused}");
        // The refusal is an alert, and it reaches the receiver.
        let denied = |m: &Value| m["alerts"][0]["labels"]["alertname"] == "EciOutOfBandDeletionDenied";
        for _ in 0..1200 {
            if alerts.lock().expect("messages").iter().any(denied) {
                break;
            }
            std::thread::sleep(POLL);
        }
        let messages = alerts.lock().expect("messages").clone();
        let message =
            messages.iter().find(|m| denied(m)).unwrap_or_else(|| panic!("no alert in {messages:?}"));
        assert_eq!(message["alerts"][0]["labels"]["target"], pod, "{message}");
    }

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "eci serve did not exit cleanly on SIGTERM{}", server.output());
    drop(server);
    db.cleanup().await;
}

/// Two `eci serve` processes on one database and one Redis count deletions in one window: a
/// tenant's budget of 3 is spent across both, the breaker it trips refuses on both, and an admin's
/// reset through one closes it for both.
#[tokio::test]
async fn two_control_planes_sharing_redis_share_one_deletion_window() {
    let Some(db) = testing::postgres_database(2).await else { return };
    let Some(redis) = testing::redis_url().await else {
        db.cleanup().await;
        return;
    };
    let tmp = TempDirGuard::new("eci-serve-two").expect("temp dir");
    let (fleet, kubeconfig) = fleet_with_shenzhen(tmp.path());
    let admin_key = "e2e-admin-key-7c1d0e9a2b";
    let base = ["serve", "--database-url", &db.url, "--redis-url", &redis, "--admin-key", admin_key];
    let fleet_arg = ["--fleet", fleet.to_str().expect("a UTF-8 temp path")];
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("a UTF-8 temp path"))];
    let cwd = std::env::current_dir().expect("current dir");
    let mut first = Server::launch(&cwd, &[&base[..], &fleet_arg[..]].concat(), &env, tmp.path());
    let mut second =
        Server::launch(&cwd, &[&base[..], &["--no-instance-manager"]].concat(), &env, tmp.path());
    let http = reqwest::Client::new();
    let (a, b) = (first.endpoint(), second.endpoint());
    let secret = new_tenant_key(&http, &a, admin_key, "shared").await;
    let send = async |method: reqwest::Method, endpoint: &str, path: &str, key: &str, body: Option<Value>| {
        let mut request = http.request(method, format!("{endpoint}{path}")).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("a request");
        let status = answer.status().as_u16();
        (status, answer.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (_, mut rules) = send(reqwest::Method::GET, &a, "/v1/risk/rules", admin_key, None).await;
    rules["rules"]["per_tenant"] = json!({"deletions": 3, "window_seconds": 300});
    let (status, _) =
        send(reqwest::Method::PUT, &a, "/v1/admin/risk/rules", admin_key, Some(rules["rules"].clone())).await;
    assert_eq!(status, 200);
    let body = json!({"count": 6, "spec": {"cpu": "1", "memory": "1Gi"}, "image": "nginx:1.27"});
    let (status, batch) = send(reqwest::Method::POST, &a, "/v1/batches", &secret, Some(body)).await;
    assert_eq!(status, 202, "{batch}");
    let (_, page) = send(
        reqwest::Method::GET,
        &a,
        &format!("/v1/batches/{}/instances", batch["id"].as_str().unwrap()),
        &secret,
        None,
    )
    .await;
    let ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let delete = async |endpoint: &str, id: &str| {
        send(reqwest::Method::DELETE, endpoint, &format!("/v1/instances/{id}"), &secret, None).await
    };
    // The second replica's rules cache may be cold; the rules are read from the shared database.
    for (endpoint, id) in [(&a, &ids[0]), (&b, &ids[1]), (&a, &ids[2])] {
        let (status, answer) = delete(endpoint, id).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, refused) = delete(&b, &ids[3]).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (429, Some("deletion_rate_limited")),
        "{refused}"
    );
    let breaker = refused["error"]["details"]["breaker"].as_str().expect("the breaker").to_string();
    let (status, _) = delete(&a, &ids[4]).await;
    assert_eq!(status, 429, "the breaker B tripped is open for A too");
    let (status, _) = send(
        reqwest::Method::POST,
        &b,
        &format!("/v1/admin/risk/breakers/{breaker}/reset"),
        admin_key,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, answer) = delete(&a, &ids[4]).await;
    assert_eq!(status, 200, "reset through B, closed for A: {answer}");

    for server in [&mut first, &mut second] {
        let status = server.terminate();
        assert_eq!(status.code(), Some(0), "eci serve did not exit cleanly{}", server.output());
    }
    drop((first, second));
    db.cleanup().await;
}

/// A certificate authority and the certificate it signed for the deletion guard on 127.0.0.1, as
/// an operator would make them: the chain (certificate, then authority), the key, the authority.
fn guard_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "e2e guard authority");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let [cert_file, key_file, ca_file] = ["guard.crt", "guard.key", "ca.crt"].map(|f| dir.join(f));
    std::fs::write(&cert_file, format!("{}{}", server.pem(), ca.pem())).expect("write the chain");
    std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
    std::fs::write(&ca_file, ca.pem()).expect("write the authority");
    (cert_file, key_file, ca_file)
}

/// Starts a simulated cluster on a thread and runtime of its own, for tests that block theirs on
/// the program under test; it lives until the test process ends. Returns its address.
fn sim_on_its_own_thread(config: eci_edge_sim::SimConfig) -> String {
    let (sent, url) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the cluster");
        runtime.block_on(async move {
            let sim = eci_edge_sim::SimCluster::start(config).await.expect("start a simulated IDC");
            sent.send(sim.url()).expect("the test waits for the address");
            std::future::pending::<()>().await
        })
    });
    url.recv().expect("the cluster's address")
}

/// An alert receiver on a thread and runtime of its own, as Alertmanager's webhook receiver is
/// called: it keeps every message posted to it. Returns its URL and the messages.
fn alert_receiver_on_its_own_thread() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = messages.clone();
    let (sent, url) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime for the receiver");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bound");
            sent.send(format!("http://{}/alerts", listener.local_addr().expect("an address"))).expect("sent");
            let app = axum::Router::new().route(
                "/alerts",
                axum::routing::post(move |axum::Json(message): axum::Json<Value>| async move {
                    kept.lock().expect("messages").push(message);
                }),
            );
            axum::serve(listener, app).await.expect("the receiver serves")
        })
    });
    (url.recv().expect("the receiver's address"), messages)
}

/// Kill the control plane (SIGKILL, no goodbye) while it is creating a batch's Pods, start it again
/// on the same database: every instance ends up running in exactly one Pod, and the Pods made before
/// the kill are kept, not made again. The IDCs' clusters outlive the control plane, as real ones do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_batch_creates_every_instance_exactly_once() {
    use eci_edge_sim::{EngineConfig, Fault, NodeSpec, Resource, SimCluster, SimConfig};

    const COUNT: usize = 600;
    let tmp = TempDirGuard::new("eci-kill").expect("temp dir");
    let mut sims = Vec::new();
    let mut fleet = String::from("idcs:\n");
    let mut kubeconfig = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    let (mut contexts, mut users) = (String::new(), String::new());
    for (n, city) in ["shenzhen", "guangzhou"].iter().enumerate() {
        let name = format!("kill-{city}-1");
        let sim = SimCluster::start(
            SimConfig::default()
                .name(name.clone())
                .engine(EngineConfig::default().boot_delay(Duration::ZERO))
                .node(
                    NodeSpec::new(format!("{name}-node"))
                        .cpu_millis(640_000)
                        .memory_mib(2_560 * 1024)
                        .pods(1000),
                ),
        )
        .await
        .expect("start a simulated IDC");
        // Slow enough that the kill lands mid-batch; far within the probe's patience.
        sim.set_fault(Fault::Slow(Duration::from_millis(100)));
        fleet.push_str(&format!(
            "  - id: {name}\n    region: south-china\n    province: guangdong\n    city: {city}\n    \
             carriers: [telecom]\n    cpu: \"640\"\n    memory: 2560Gi\n    kube_context: {name}\n"
        ));
        kubeconfig.push_str(&format!("- name: {name}\n  cluster:\n    server: {}\n", sim.url()));
        contexts.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"));
        users.push_str(&format!("- name: {name}\n  user: {{}}\n"));
        assert_eq!(sims.len(), n);
        sims.push(sim);
    }
    kubeconfig.push_str(&format!("contexts:\n{contexts}users:\n{users}"));
    let (fleet_path, kubeconfig_path) = (tmp.path().join("fleet.yaml"), tmp.path().join("kubeconfig"));
    std::fs::write(&fleet_path, fleet).expect("write the fleet file");
    std::fs::write(&kubeconfig_path, kubeconfig).expect("write the kubeconfig");
    let database = format!("sqlite://{}?mode=rwc", tmp.path().join("eci.db").display());
    let admin_key = "kill-admin-key-5e8d0c2b";
    let args = [
        "serve",
        "--database-url",
        &database,
        "--fleet",
        fleet_path.to_str().expect("a UTF-8 temp path"),
        "--admin-key",
        admin_key,
    ];
    let env = [("KUBECONFIG", kubeconfig_path.to_str().expect("a UTF-8 temp path"))];
    let start = || tokio::task::block_in_place(|| Server::launch(tmp.path(), &args, &env, tmp.path()));
    let pods = |sims: &[SimCluster]| -> BTreeMap<String, String> {
        sims.iter()
            .flat_map(|sim| {
                sim.store().list(Resource::Pods, None, &Default::default()).expect("list pods").items
            })
            .map(|p| {
                let text = |pointer: &str| {
                    p.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
                };
                (text("/metadata/name"), text("/metadata/uid"))
            })
            .collect()
    };

    let mut server = start();
    let http = reqwest::Client::new();
    let endpoint = server.endpoint();
    let secret = new_tenant_key(&http, &endpoint, admin_key, "kill").await;
    let batch = http
        .post(format!("{endpoint}/v1/batches"))
        .bearer_auth(&secret)
        .json(&json!({
            "count": COUNT, "spec": {"cpu": "1", "memory": "1Gi"}, "image": "nginx:1.27",
            "placement": {"areas": ["guangdong"], "strategy": "spread"}
        }))
        .send()
        .await
        .expect("POST /v1/batches");
    assert_eq!(batch.status(), 202, "{:?}", batch.text().await);
    let batch: Value = batch.json().await.expect("a JSON batch");
    let batch_id = batch["id"].as_str().expect("a batch id").to_string();

    // Kill it once some, but not all, Pods exist.
    for _ in 0..2000 {
        if pods(&sims).len() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let at_kill = pods(&sims);
    assert!(
        (50..COUNT).contains(&at_kill.len()),
        "the kill should land mid-batch: {} of {COUNT} Pods existed",
        at_kill.len()
    );
    eprintln!("killed with {} of {COUNT} Pods made", at_kill.len());

    for sim in &sims {
        sim.set_fault(Fault::None);
    }
    let server = start();
    let instances_url = format!("{}/v1/batches/{batch_id}", server.endpoint());
    let mut counts = Value::Null;
    for _ in 0..600 {
        let batch: Value = http
            .get(&instances_url)
            .bearer_auth(&secret)
            .send()
            .await
            .expect("GET batch")
            .json()
            .await
            .expect("JSON");
        counts = batch["counts"].clone();
        if counts["running"] == COUNT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live: u64 = counts.as_object().expect("counts").values().filter_map(Value::as_u64).sum();
    assert_eq!((counts["running"].as_u64(), live), (Some(COUNT as u64), COUNT as u64), "{counts}");
    let after = pods(&sims);
    assert_eq!(after.len(), COUNT, "exactly one Pod per instance");
    for (name, uid) in &at_kill {
        assert_eq!(
            after.get(name),
            Some(uid),
            "the Pod {name} made before the kill was kept, not made again"
        );
    }
    drop(server);
    for sim in sims {
        sim.shutdown().await.expect("stop a simulated IDC");
    }
}

/// The Pods of `eci up`'s simulated clusters, by name, as (uid, IP), read from the file they are kept
/// in: what survives the process, whatever it is doing when it dies.
fn kept_pods(data: &Path) -> BTreeMap<String, (String, String)> {
    let file = rusqlite::Connection::open(data.join("clusters.db")).expect("open clusters.db");
    let mut rows = file.prepare("SELECT name, object FROM objects WHERE resource = 'pods'").expect("query");
    rows.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
        .expect("pods")
        .map(|row| {
            let (name, object) = row.expect("a row");
            let pod: Value = serde_json::from_str(&object).expect("a JSON pod");
            let text =
                |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
            (name, (text("/metadata/uid"), text("/status/podIP")))
        })
        .collect()
}

/// `eci up` killed with SIGKILL while a batch runs, then started again on its data dir: every
/// instance is still `running`, in the same Pod (uid and IP) it had, none made twice, and its
/// billing unbroken (the same `started_at`, no end); the simulated IDCs outlive the control plane
/// as real ones do. Then a release the kill interrupts (Pods still there) completes after the next
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eci_up_killed_and_started_again_keeps_every_instance_running() {
    const COUNT: u64 = 2000;
    let tmp = TempDirGuard::new("eci-up-restart").expect("temp dir");
    let data = tmp.path().join(".eci");
    // Two IDCs with room for the batch: the cluster's pace (a burst of 400 requests, then 200 a
    // second) makes releasing 1,000 Pods in each take seconds, long enough to kill it midway.
    let fleet = tmp.path().join("fleet.yaml");
    let mut text = String::from("idcs:\n");
    for city in ["shenzhen", "guangzhou"] {
        text.push_str(&format!(
            "  - id: idc-{city}-9\n    region: south-china\n    province: guangdong\n    city: {city}\n    \
             carriers: [telecom]\n    cpu: \"1280\"\n    memory: 5120Gi\n"
        ));
    }
    std::fs::write(&fleet, text).expect("write the fleet file");
    let args =
        ["up", "--data-dir", data.to_str().expect("a UTF-8 path"), "--fleet", fleet.to_str().expect("UTF-8")];
    let start = || tokio::task::block_in_place(|| Server::start_in(tmp.path(), &args, tmp.path()));
    let mut server = start();
    let credentials = read_credentials(&data.join("credentials"));
    let (token, admin) = (credentials["ECI_TOKEN"].clone(), credentials["ECI_ADMIN_TOKEN"].clone());
    let http = reqwest::Client::new();
    let get = async |server: &Server, path: &str| -> Value {
        let answer = http.get(format!("{}{path}", server.endpoint())).bearer_auth(&token).send().await;
        answer.expect("GET").json().await.expect("JSON")
    };
    let instances = async |server: &Server, batch: &str| -> BTreeMap<String, Value> {
        let mut all = BTreeMap::new();
        let mut cursor = String::new();
        loop {
            let page = get(server, &format!("/v1/instances?batch_id={batch}&limit=1000{cursor}")).await;
            for i in page["items"].as_array().expect("items") {
                all.insert(i["id"].as_str().expect("an id").to_string(), i.clone());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return all,
            }
        }
    };
    let until = async |server: &Server, batch: &str, done: &dyn Fn(&Value) -> bool| -> Value {
        for _ in 0..1200 {
            let view = get(server, &format!("/v1/batches/{batch}")).await;
            if done(&view) {
                return view;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "batch {batch} never got there: {}{}",
            get(server, &format!("/v1/batches/{batch}")).await,
            server.output()
        );
    };
    let create = async |server: &Server, count: u64| -> String {
        let answer = http
            .post(format!("{}/v1/batches", server.endpoint()))
            .bearer_auth(&token)
            .json(&json!({"count": count, "spec": {"cpu": "1", "memory": "1Gi"}, "image": "nginx:1.27"}))
            .send()
            .await
            .expect("POST /v1/batches");
        assert_eq!(answer.status(), 202);
        answer.json::<Value>().await.expect("JSON")["id"].as_str().expect("an id").to_string()
    };
    let all_running = |view: &Value| view["counts"]["running"] == json!(view["count"]);

    let batch = create(&server, COUNT).await;
    until(&server, &batch, &all_running).await;
    let before = instances(&server, &batch).await;
    let pods_before = kept_pods(&data);
    assert_eq!(pods_before.len() as u64, COUNT);
    server.kill();

    let mut server = start();
    // A second batch running proves the reconcilers of both IDCs have looked at their clusters.
    let second = create(&server, 10).await;
    until(&server, &second, &all_running).await;
    let after = instances(&server, &batch).await;
    assert_eq!(after.len(), before.len());
    for (id, was) in &before {
        let now = &after[id];
        assert_eq!(now["state"], "running", "{id} after the restart: {now}");
        for field in ["ip", "idc", "started_at"] {
            assert_eq!(now[field], was[field], "{id}'s {field} changed across the restart");
        }
        assert!(now["ended_at"].is_null(), "{id} ended: {now}");
    }
    let pods_after = kept_pods(&data);
    assert_eq!(pods_after.len() as u64, COUNT + 10, "no Pod made twice");
    for (name, identity) in &pods_before {
        assert_eq!(pods_after.get(name), Some(identity), "{name} is the same Pod, with the same IP");
    }
    // The deletion guard came back too, trusted through the new start's certificate authority.
    let (id, one) = before.iter().next().expect("an instance");
    let kubeconfig = data.join("kubeconfig");
    let context = ["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", one["idc"].as_str().unwrap()];
    tokio::task::block_in_place(|| {
        let Some(pods) = kubectl(&[&context[..], &["get", "pods", "-A"]].concat()) else { return };
        let line =
            pods.lines().find(|l| l.contains(id.as_str())).unwrap_or_else(|| panic!("no Pod {id}:\n{pods}"));
        let namespace = line.split_whitespace().next().expect("a namespace");
        let refused = kubectl_refused(&[&context[..], &["delete", "pod", id, "-n", namespace]].concat());
        assert!(
            refused.is_some_and(|r| r.contains(&format!("eci instance delete {id}"))),
            "refused after a restart"
        );
    });
    // What the batch costs goes on from where it was: each instance is metered from the moment it
    // first ran to now, rounded up to the second once (at least the minute's minimum charge), so the
    // bill neither restarts at the restart, nor leaves a gap, nor counts a second twice.
    let cost = get(&server, &format!("/v1/batches/{batch}/cost?instances=true")).await;
    let as_of = timestamp(&cost["as_of"]);
    for line in cost["instances"].as_array().expect("instances") {
        let id = line["instance_id"].as_str().expect("an id");
        assert_eq!(timestamp(&line["started_at"]), timestamp(&before[id]["started_at"]), "{line}");
        assert!(line["ended_at"].is_null(), "{line}");
        let ran_ms = (as_of - timestamp(&line["started_at"])).num_milliseconds();
        let billed_ms = (ran_ms + 999) / 1000 * 1000;
        assert_eq!(line["totals"]["billed_ms"], json!(billed_ms.max(60_000)), "{id}: {line}");
    }

    // A release interrupted by a kill while its Pods are still being deleted completes after the
    // next start: the instances end, the Pods go, the batch is released.
    let release = async || {
        http.delete(format!("{}/v1/batches/{batch}?confirm={COUNT}", server.endpoint()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("DELETE")
    };
    // Far more than an IDC's deletion budget: held until the admin approves it once.
    assert_eq!(release().await.status(), 429);
    let holds: Value = http
        .get(format!("{}/v1/risk/holds", server.endpoint()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET /v1/risk/holds")
        .json()
        .await
        .expect("holds");
    let hold = holds["items"][0]["id"].as_str().unwrap_or_else(|| panic!("no hold: {holds}")).to_string();
    let approved = http
        .post(format!("{}/v1/admin/risk/holds/{hold}/approve", server.endpoint()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("approve");
    assert_eq!(approved.status(), 200);
    assert_eq!(release().await.status(), 200);
    server.kill();
    let left = kept_pods(&data).len() as u64;
    assert!(left > 10, "the kill should land before the release is done: {left} Pods left");
    let server = start();
    until(&server, &batch, &|view| view["counts"]["terminated"] == json!(COUNT)).await;
    assert_eq!(get(&server, &format!("/v1/batches/{batch}")).await["state"], "released");
    let pods_left = kept_pods(&data);
    assert_eq!(pods_left.len(), 10, "only the second batch's Pods are left: {}", pods_left.len());
}
