//! `--wait` of `eci batch create` and `eci batch get`: polls the batch until none of its instances
//! can still turn running (each runs, failed or was released, or the batch ended), shows progress
//! meanwhile, and then says what failed, grouped by reason.
//!
//! Each poll reads only the batch, whose counts by state are all that progress needs; the failed
//! instances are listed once, at the end, for their reasons. Progress goes to stderr (a bar on a
//! terminal, a line per change otherwise, nothing with `-o json`), so stdout keeps the batch as it
//! ended up. That is printed whatever the verdict, so a script learns the id it has to clean up.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, anyhow};
use eci_core::{BatchState, InstanceState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::http::{Api, Query};
use super::render::{Page, decode};
use super::{OutputFormat, batch, note, parse};

/// The first pause between two polls: a small batch runs within a second or two.
const FIRST_POLL: Duration = Duration::from_millis(500);
/// The longest pause between two polls, reached after two doublings: a big batch takes minutes,
/// and one small read every 2 s per waiting client costs the API nothing.
const LAST_POLL: Duration = Duration::from_secs(2);
/// Instance ids shown for each failure reason; the others are only counted.
const EXAMPLES: usize = 3;
/// Failed instances per page when they are listed at the end: the API's largest page.
const FAILED_PAGE: u32 = 1000;
/// How often the bar's spinner turns, so that a wait with no change still looks alive.
const TICK: Duration = Duration::from_millis(120);

/// The flags of waiting, shared by `batch create` and `batch get`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Wait until every instance runs or has failed, showing progress; exit non-zero if any failed.
    #[arg(long)]
    pub wait: bool,
    /// Stop waiting after this long (the batch stays): seconds, or 90s, 10m, 1h.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse::seconds,
        default_value = "10m",
        requires = "wait"
    )]
    pub wait_timeout: u64,
}

/// With `--wait`, waits for `batch` (the API's answer about it) and returns it as it ended up with
/// the verdict: `Ok` when every instance that could run runs. Without, returns it as it is.
pub async fn if_asked(api: &Api, batch: Value, args: &WaitArgs, output: OutputFormat) -> (Value, Result<()>) {
    if !args.wait {
        return (batch, Ok(()));
    }
    let first = match Standing::deserialize(&batch) {
        Ok(first) => first,
        Err(e) => return (batch, Err(anyhow!("unexpected batch from the server: {e}"))),
    };
    let timeout = Duration::from_secs(args.wait_timeout);
    let mut progress = Progress::new(output, &first, timeout);
    let path = ["v1", "batches", first.id.as_str()];
    let no_query = Query::new();
    let (batch, last, stop) =
        poll(batch, first.clone(), timeout, || api.get(&path, &no_query), ctrl_c(), |s| progress.show(s))
            .await;
    progress.stop(matches!(stop, Stop::Settled));
    let verdict = verdict(api, &last, stop, timeout).await;
    (batch, verdict)
}

/// What waiting reads of a batch; lenient like the client's other views.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Standing {
    id: String,
    state: Option<String>,
    count: u64,
    counts: BTreeMap<String, u64>,
}

impl Standing {
    fn n(&self, state: InstanceState) -> u64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Instances that may still turn running: the states core lets a running report move from
    /// (pending, creating, and unknown while their IDC is unreachable).
    fn on_the_way(&self) -> u64 {
        InstanceState::RUNS_FROM.iter().map(|&s| self.n(s)).sum()
    }

    /// An ended batch changes no more, whatever its counts say.
    fn ended(&self) -> bool {
        self.state.as_deref().is_some_and(|s| s != BatchState::Active.as_str())
    }

    /// Nothing is left to wait for. A state this client does not know counts as settled, so that a
    /// newer server cannot make it wait forever.
    fn settled(&self) -> bool {
        self.ended() || self.on_the_way() == 0
    }

    /// `412/1000 running; pending 300, creating 288`: running first, then the other states that
    /// have instances, in lifecycle order.
    fn progress(&self) -> String {
        let running = format!("{}/{} running", self.n(InstanceState::Running), self.count);
        match self.others() {
            None => running,
            Some(others) => format!("{running}; {others}"),
        }
    }

    /// The states other than running that have instances, or `None` when there are none.
    fn others(&self) -> Option<String> {
        let others: BTreeMap<String, u64> = self
            .counts
            .iter()
            .filter(|&(state, &n)| n > 0 && state != InstanceState::Running.as_str())
            .map(|(state, &n)| (state.clone(), n))
            .collect();
        (!others.is_empty()).then(|| batch::counts(&others))
    }
}

/// Why polling stopped.
#[derive(Debug)]
enum Stop {
    /// No instance can still turn running, or the batch ended.
    Settled,
    /// `--wait-timeout` passed first.
    TimedOut,
    /// Ctrl-C.
    Interrupted,
    /// A poll failed: the server went away, the key was revoked, the answer made no sense.
    PollFailed(anyhow::Error),
}

/// Polls with `fetch`, from `batch` (already read as `standing`) on, pausing twice as long each
/// time up to [`LAST_POLL`], until the batch settles, `timeout` passes or `interrupted` resolves;
/// `show` sees every answer. Returns the last answer, what it said, and why polling stopped.
async fn poll<F, Fut>(
    mut batch: Value,
    mut standing: Standing,
    timeout: Duration,
    mut fetch: F,
    interrupted: impl Future<Output = ()>,
    mut show: impl FnMut(&Standing),
) -> (Value, Standing, Stop)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL;
    tokio::pin!(interrupted);
    loop {
        show(&standing);
        if standing.settled() {
            return (batch, standing, Stop::Settled);
        }
        let next = async {
            tokio::time::sleep(pause).await;
            fetch().await
        };
        let answer = tokio::select! {
            answer = next => answer,
            () = tokio::time::sleep_until(deadline) => return (batch, standing, Stop::TimedOut),
            () = &mut interrupted => return (batch, standing, Stop::Interrupted),
        };
        let read = answer.and_then(|b| {
            let s =
                Standing::deserialize(&b).map_err(|e| anyhow!("unexpected batch from the server: {e}"))?;
            Ok((b, s))
        });
        match read {
            Ok((b, s)) => (batch, standing) = (b, s),
            Err(e) => return (batch, standing, Stop::PollFailed(e)),
        }
        pause = (pause * 2).min(LAST_POLL);
    }
}

/// Resolves on Ctrl-C. Where the handler cannot be installed it never resolves, and Ctrl-C then
/// ends the process as it would anyway.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The verdict on a wait that stopped for `stop` with the batch last seen as `s`: `Ok` only when
/// it settled with no instance failed and the batch still active.
async fn verdict(api: &Api, s: &Standing, stop: Stop, timeout: Duration) -> Result<()> {
    let id = &s.id;
    let again = format!("it keeps going, `eci batch get {id} --wait` waits again");
    match stop {
        Stop::TimedOut => Err(anyhow!(
            "gave up waiting for batch {id} after {} ({}): {again}",
            duration(timeout),
            s.progress()
        )),
        Stop::Interrupted => Err(anyhow!("stopped waiting for batch {id} ({}): {again}", s.progress())),
        Stop::PollFailed(e) => Err(anyhow!("stopped waiting for batch {id}: {e:#}")),
        Stop::Settled if s.n(InstanceState::Failed) > 0 => Err(anyhow!(failures(api, s).await)),
        Stop::Settled if s.ended() => Err(anyhow!(
            "batch {id} ended ({}) before all its instances were running: {}",
            s.state.as_deref().unwrap_or("-"),
            s.progress()
        )),
        Stop::Settled => Ok(()),
    }
}

/// What failed: `2 of 3 instances of batch b-1 failed:` and the reasons below it, most common
/// first, each with a few instance ids. The reasons come from one listing of the failed instances.
async fn failures(api: &Api, s: &Standing) -> String {
    let head = format!("{} of {} instances of batch {} failed", s.n(InstanceState::Failed), s.count, s.id);
    let query = vec![("state", InstanceState::Failed.to_string()), ("limit", FAILED_PAGE.to_string())];
    let listed = match api.list(&["v1", "batches", &s.id, "instances"], &query, true).await {
        Ok(page) => decode::<Page<FailedInstance>>(page, "list of instances"),
        Err(e) => Err(e),
    };
    match listed {
        Ok(page) => format!(
            "{head}:\n{}\n`eci instance list --batch {} --state failed` lists them",
            report(&group(&page.items)),
            s.id
        ),
        Err(e) => format!("{head} (their reasons could not be listed: {e:#})"),
    }
}

/// What the failure report reads of an instance.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FailedInstance {
    id: String,
    failure_reason: Option<String>,
}

/// The instances that failed for one reason.
#[derive(Debug, PartialEq, Eq)]
struct FailureGroup {
    reason: String,
    count: u64,
    /// The first [`EXAMPLES`] of them, in the order listed (oldest first).
    examples: Vec<String>,
}

/// Groups failed instances by reason, most common first (then by reason, so the order is stable).
/// A reason is compared on one line, since clusters' messages may wrap.
fn group(failed: &[FailedInstance]) -> Vec<FailureGroup> {
    let mut by_reason: BTreeMap<String, FailureGroup> = BTreeMap::new();
    for instance in failed {
        let words: Vec<&str> =
            instance.failure_reason.as_deref().unwrap_or_default().split_whitespace().collect();
        let reason = if words.is_empty() { "no reason given".to_string() } else { words.join(" ") };
        let group = by_reason.entry(reason.clone()).or_insert_with(|| FailureGroup {
            reason,
            count: 0,
            examples: Vec::new(),
        });
        group.count += 1;
        if group.examples.len() < EXAMPLES {
            group.examples.push(instance.id.clone());
        }
    }
    let mut groups: Vec<FailureGroup> = by_reason.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    groups
}

/// One line per group: `  2 × ErrImagePull (i-1, i-2)`, `… and 47 more` past the examples.
fn report(groups: &[FailureGroup]) -> String {
    let lines: Vec<String> = groups
        .iter()
        .map(|g| {
            let mut ids = g.examples.join(", ");
            let more = g.count.saturating_sub(g.examples.len() as u64);
            if more > 0 {
                ids.push_str(&format!(" and {more} more"));
            }
            format!("  {} × {} ({ids})", g.count, g.reason)
        })
        .collect();
    lines.join("\n")
}

/// A timeout as it was most likely written: `10m`, `1h`, `90s`.
fn duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Where progress goes: a bar on a terminal, a line per change otherwise (logs, CI), nowhere with
/// `-o json`, whose only output is the batch at the end.
enum Progress {
    Bar(ProgressBar),
    Lines {
        /// The last line printed, so that a line is printed only when the counts change.
        last: String,
        started: Instant,
    },
    Quiet,
}

impl Progress {
    fn new(output: OutputFormat, first: &Standing, timeout: Duration) -> Progress {
        if output == OutputFormat::Json {
            return Progress::Quiet;
        }
        note(&format!(
            "waiting for batch {} ({} instances, at most {})",
            first.id,
            first.count,
            duration(timeout)
        ));
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(first.count), ProgressDrawTarget::stderr());
            bar.set_style(bar_style());
            bar.enable_steady_tick(TICK);
            return Progress::Bar(bar);
        }
        Progress::Lines { last: String::new(), started: Instant::now() }
    }

    fn show(&mut self, s: &Standing) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(s.count);
                bar.set_position(s.n(InstanceState::Running));
                bar.set_message(s.others().map(|o| format!("; {o}")).unwrap_or_default());
            }
            Progress::Lines { last, started } => {
                let line = s.progress();
                if line != *last {
                    note(&format!("{line} ({}s)", started.elapsed().as_secs()));
                    *last = line;
                }
            }
            Progress::Quiet => {}
        }
    }

    /// Leaves the bar as it last was, without its spinner when the batch settled.
    fn stop(&self, settled: bool) {
        if let Progress::Bar(bar) = self {
            if settled { bar.finish() } else { bar.abandon() }
        }
    }
}

/// `⠋ 3s [=========>          ] 412/1000 running; pending 300, creating 288`, the states cut
/// short rather than wrapped in a narrow terminal (a wrapped bar is redrawn as a new line).
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:30}] {pos}/{len} running{wide_msg}")
        .expect("the bar's template is valid")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;
    use std::cell::RefCell;

    fn batch(state: &str, counts: Value) -> Value {
        json!({"id": "b-1", "state": state, "count": 3, "counts": counts})
    }

    fn standing(b: &Value) -> Standing {
        Standing::deserialize(b).unwrap()
    }

    #[test]
    fn a_batch_settles_once_nothing_can_still_turn_running() {
        let settled = |state, counts| standing(&batch(state, counts)).settled();
        assert!(!settled("active", json!({"pending": 1, "running": 2})));
        assert!(!settled("active", json!({"creating": 1, "running": 2})));
        assert!(!settled("active", json!({"unknown": 1, "running": 2})), "its IDC may come back");
        assert!(settled("active", json!({"running": 2, "failed": 1, "pending": 0})));
        assert!(settled("active", json!({"running": 1, "terminated": 1, "stopping": 1})));
        assert!(settled("released", json!({"pending": 3})), "an ended batch changes no more");
        assert!(settled("active", json!({"hibernating": 3})), "a state this client does not know");
    }

    #[test]
    fn progress_shows_running_first_then_the_other_states_that_have_instances() {
        let s = standing(&batch("active", json!({"pending": 1, "creating": 0, "running": 1, "failed": 1})));
        assert_eq!(s.progress(), "1/3 running; pending 1, failed 1");
        let s = standing(&batch("active", json!({"pending": 0, "running": 3})));
        assert_eq!(s.progress(), "3/3 running");
    }

    fn failed(id: &str, reason: Option<&str>) -> FailedInstance {
        FailedInstance { id: id.to_string(), failure_reason: reason.map(str::to_string) }
    }

    #[test]
    fn failures_are_grouped_by_reason_most_common_first() {
        let listed = [
            failed("i-1", Some("Evicted")),
            failed("i-2", Some("ErrImagePull: pull access\n  denied")),
            failed("i-3", Some("Evicted")),
            failed("i-4", None),
            failed("i-5", Some("ErrImagePull: pull access denied")),
            failed("i-6", Some("Evicted")),
            failed("i-7", Some("Evicted")),
            failed("i-8", Some("  ")),
        ];
        let groups = group(&listed);
        let summary: Vec<(&str, u64, Vec<&str>)> = groups
            .iter()
            .map(|g| (g.reason.as_str(), g.count, g.examples.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Evicted", 4, vec!["i-1", "i-3", "i-6"]),
                ("ErrImagePull: pull access denied", 2, vec!["i-2", "i-5"]),
                ("no reason given", 2, vec!["i-4", "i-8"]),
            ]
        );
        assert_eq!(
            report(&groups),
            "  4 × Evicted (i-1, i-3, i-6 and 1 more)\n  \
             2 × ErrImagePull: pull access denied (i-2, i-5)\n  \
             2 × no reason given (i-4, i-8)"
        );
    }

    #[test]
    fn timeouts_are_shown_as_they_were_written() {
        assert_eq!(duration(Duration::from_secs(600)), "10m");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn the_bar_template_is_valid() {
        let bar = ProgressBar::with_draw_target(Some(3), ProgressDrawTarget::hidden());
        bar.set_style(bar_style());
        bar.set_position(1);
        assert_eq!(bar.position(), 1);
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        wait: WaitArgs,
    }

    #[test]
    fn the_timeout_defaults_to_ten_minutes_and_needs_wait() {
        let args = Cli::try_parse_from(["eci", "--wait"]).unwrap().wait;
        assert!(args.wait);
        assert_eq!(args.wait_timeout, 600);
        let args = Cli::try_parse_from(["eci", "--wait", "--wait-timeout", "90s"]).unwrap().wait;
        assert_eq!(args.wait_timeout, 90);
        assert!(!Cli::try_parse_from(["eci"]).unwrap().wait.wait);
        let err = Cli::try_parse_from(["eci", "--wait-timeout", "1m"]).unwrap_err().to_string();
        assert!(err.contains("--wait"), "{err}");
    }

    /// Polls a script of answers (the last repeats), recording when each poll came and what was
    /// shown, on tokio's paused clock.
    async fn run_poll(
        answers: Vec<Value>,
        timeout: Duration,
        interrupted: impl Future<Output = ()>,
    ) -> (Standing, Stop, Vec<Duration>, Vec<String>) {
        let start = Instant::now();
        let polls = RefCell::new(Vec::new());
        let shown = RefCell::new(Vec::new());
        let first = answers[0].clone();
        let fetch = || {
            let n = polls.borrow().len() + 1;
            polls.borrow_mut().push(start.elapsed());
            let answer = answers[n.min(answers.len() - 1)].clone();
            async move { Ok(answer) }
        };
        let (_, last, stop) = poll(first.clone(), standing(&first), timeout, fetch, interrupted, |s| {
            shown.borrow_mut().push(s.progress())
        })
        .await;
        (last, stop, polls.into_inner(), shown.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn polls_come_half_a_second_apart_at_first_then_two_seconds() {
        let pending = batch("active", json!({"pending": 3}));
        let mut answers = vec![pending; 8];
        answers.push(batch("active", json!({"running": 3})));
        let (last, stop, polls, shown) =
            run_poll(answers, Duration::from_secs(60), std::future::pending()).await;
        assert!(matches!(stop, Stop::Settled), "{stop:?}");
        assert_eq!(last.progress(), "3/3 running");
        let gaps: Vec<u128> = polls
            .iter()
            .scan(Duration::ZERO, |at, &t| {
                let gap = t - *at;
                *at = t;
                Some(gap.as_millis())
            })
            .collect();
        assert_eq!(gaps, [500, 1000, 2000, 2000, 2000, 2000, 2000, 2000]);
        assert_eq!(shown.len(), 9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_never_settles_times_out() {
        let answers = vec![batch("active", json!({"pending": 1, "running": 2}))];
        let (last, stop, polls, _) = run_poll(answers, Duration::from_secs(10), std::future::pending()).await;
        assert!(matches!(stop, Stop::TimedOut), "{stop:?}");
        assert_eq!(last.progress(), "2/3 running; pending 1");
        assert!(polls.len() >= 5 && polls.iter().all(|t| *t <= Duration::from_secs(10)), "{polls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_stops_waiting_at_once() {
        let answers = vec![batch("active", json!({"pending": 3}))];
        let interrupted = tokio::time::sleep(Duration::from_millis(1600));
        let (_, stop, polls, _) = run_poll(answers, Duration::from_secs(600), interrupted).await;
        assert!(matches!(stop, Stop::Interrupted), "{stop:?}");
        assert_eq!(polls.len(), 2, "{polls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_poll_stops_waiting_and_keeps_the_last_answer() {
        let first = batch("active", json!({"pending": 3}));
        let fetch =
            || async { Err(anyhow!("cannot connect to the ECI API at http://x: connection refused")) };
        let (kept, last, stop) = poll(
            first.clone(),
            standing(&first),
            Duration::from_secs(60),
            fetch,
            std::future::pending(),
            |_| {},
        )
        .await;
        assert_eq!(kept, first);
        assert_eq!(last.progress(), "0/3 running; pending 3");
        let Stop::PollFailed(e) = stop else { panic!("{stop:?}") };
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[tokio::test]
    async fn only_a_settled_active_batch_without_failures_is_a_success() {
        let api = Api::new("http://127.0.0.1:9", Some("t")).unwrap();
        let ten = Duration::from_secs(600);
        let running = standing(&batch("active", json!({"running": 3})));
        assert!(verdict(&api, &running, Stop::Settled, ten).await.is_ok());
        let released = standing(&batch("released", json!({"terminated": 3})));
        let err = verdict(&api, &released, Stop::Settled, ten).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "batch b-1 ended (released) before all its instances were running: 0/3 running; terminated 3"
        );
        let pending = standing(&batch("active", json!({"pending": 1, "running": 2})));
        let err = verdict(&api, &pending, Stop::TimedOut, ten).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "gave up waiting for batch b-1 after 10m (2/3 running; pending 1): \
             it keeps going, `eci batch get b-1 --wait` waits again"
        );
        let err = verdict(&api, &pending, Stop::Interrupted, ten).await.unwrap_err().to_string();
        assert!(
            err.starts_with("stopped waiting for batch b-1 (2/3 running; pending 1): it keeps going"),
            "{err}"
        );
    }
}
