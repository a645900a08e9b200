//! Risk control's decisions, which no destructive path can go around: what is protected from
//! deletion, which requests end so much that they need a confirmation, and how many deletions a
//! sliding window lets through before its breaker trips. The store counts what a deletion would
//! end and records the verdict; the coordination store keeps the windows' logs; both ask here.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::Release;
use crate::{IdcId, InstanceState, KeyId, TenantId};

/// The label that protects an instance, batch or group from deletion while its value is
/// [`PROTECTION_ALWAYS`].
pub const LABEL_DELETE_PROTECTION: &str = "eci.io/delete-protection";

/// The value of [`LABEL_DELETE_PROTECTION`] that protects.
pub const PROTECTION_ALWAYS: &str = "always";

/// Whether `labels` protect what they label from deletion.
pub fn is_protected(labels: &BTreeMap<String, String>) -> bool {
    labels.get(LABEL_DELETE_PROTECTION).is_some_and(|v| v == PROTECTION_ALWAYS)
}

crate::word_enum! {
    /// Who asked for a deletion.
    ActorKind, "actor", {
        /// A tenant's API key.
        Tenant => "tenant",
        /// An admin's API key (approving a held deletion, resetting a breaker).
        Admin => "admin",
        /// The pass that ends batches whose TTL ran out.
        Expiry => "expiry",
        /// An autoscaled group's scale-in.
        Scaler => "scaler",
        /// An IDC's reconciler, deleting objects no live instance owns.
        Reconciler => "reconciler",
        /// Someone or something deleting in a cluster behind the platform's back (`kubectl`, another
        /// controller), as the admission webhook hears of it.
        OutOfBand => "out_of_band",
    }
}

/// Who asked for a destructive operation, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// The API key it used, for a tenant or an admin.
    pub key: Option<KeyId>,
    /// Who it was in a cluster's words, for an out-of-band deletion (the API server's user name).
    pub subject: Option<String>,
}

impl Actor {
    /// A tenant's or an admin's key.
    pub fn key(kind: ActorKind, key: &KeyId) -> Actor {
        Actor { kind, key: Some(key.clone()), subject: None }
    }

    /// One of the platform's own loops.
    pub fn system(kind: ActorKind) -> Actor {
        Actor { kind, key: None, subject: None }
    }
}

crate::word_enum! {
    /// The rule that decided a destructive operation.
    Rule, "risk rule", {
        /// Nothing stood in the way.
        None => "none",
        /// An instance, batch or group labelled `eci.io/delete-protection=always`.
        DeleteProtection => "delete_protection",
        /// A request ending more than the bulk guard allows without a confirmation.
        BulkGuard => "bulk_guard",
        /// The deletions of one IDC in the window.
        IdcWindow => "idc_window",
        /// The deletions of one tenant in the window.
        TenantWindow => "tenant_window",
        /// Every deletion of the platform in the window.
        PlatformWindow => "platform_window",
        /// An admin approved the held operation.
        Approval => "approval",
        /// The admission webhook: a cluster object of a live instance, deleted behind the platform's back.
        LiveInstance => "live_instance",
    }
}

crate::word_enum! {
    /// What became of a destructive operation.
    Verdict, "risk verdict", {
        /// It went ahead.
        Allowed => "allowed",
        /// It was refused and is not held: the caller must change it (or ask again later).
        Denied => "denied",
        /// It was refused for now and waits: the platform tries it again when the breaker closes, or
        /// an admin approves it.
        Held => "held",
    }
}

crate::word_enum! {
    /// What a destructive operation is aimed at.
    TargetKind, "risk target", {
        /// One instance.
        Instance => "instance",
        /// A batch and every live instance in it.
        Batch => "batch",
        /// An autoscaled group and every live instance in it.
        Group => "group",
        /// Some of a group's instances, removed by its scale-in.
        ScaleIn => "scale_in",
        /// A cluster object no live instance owns.
        Orphan => "orphan",
        /// A Pod, as a cluster's admission webhook asks about it.
        Pod => "pod",
        /// A KubeVirt VirtualMachineInstance, as a cluster's admission webhook asks about it.
        VirtualMachineInstance => "virtual_machine_instance",
        /// A namespace, as a cluster's admission webhook asks about it.
        Namespace => "namespace",
    }
}

crate::word_enum! {
    /// What happened to a breaker or a held operation.
    BreakerEventKind, "breaker event", {
        /// A window was full: its breaker opened.
        Tripped => "tripped",
        /// An admin closed a breaker.
        Reset => "reset",
        /// An admin let one held operation through without closing the breaker.
        Approved => "approved",
    }
}

crate::word_enum! {
    /// Where a held operation stands.
    HoldState, "hold state", {
        /// Waiting for its breaker to be reset, its label to go, or an admin's approval.
        Held => "held",
        /// Approved: its next attempt goes through once, whatever the windows say.
        Approved => "approved",
        /// It went through.
        Done => "done",
    }
}

/// At most `deletions` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// How many deletions the window holds.
    pub deletions: u64,
    /// How long the window is, in seconds.
    pub window_seconds: u64,
}

impl Budget {
    /// The window's length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }

    /// The window's length in milliseconds, as the coordination store's logs count time.
    pub fn window_ms(&self) -> u64 {
        window_ms(self.window())
    }
}

/// The rules a tenant's deletions are held to: the platform's defaults with the tenant's own
/// overrides laid over them ([`Rules::with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// A request that would end more than this share (percent) of the tenant's live instances needs a
    /// confirmation...
    pub bulk_share_percent: u64,
    /// ...once it ends at least this many: ending the one instance of a tenant that has one is no bulk.
    pub bulk_share_min: u64,
    /// A request that would end more than this many instances needs a confirmation, whatever the share.
    pub bulk_count: u64,
    /// The deletions of one IDC, whoever asks. Platform-wide: a tenant cannot override it.
    pub per_idc: Budget,
    /// The deletions of one tenant.
    pub per_tenant: Budget,
    /// Every deletion of the platform. Platform-wide: a tenant cannot override it.
    pub platform: Budget,
}

impl Default for Rules {
    fn default() -> Self {
        const FIVE_MINUTES: u64 = 300;
        Rules {
            bulk_share_percent: 50,
            bulk_share_min: 10,
            bulk_count: 2_000,
            per_idc: Budget { deletions: 100, window_seconds: FIVE_MINUTES },
            per_tenant: Budget { deletions: 1_000, window_seconds: FIVE_MINUTES },
            platform: Budget { deletions: 5_000, window_seconds: FIVE_MINUTES },
        }
    }
}

/// What one tenant's rules change of the platform's; every field absent keeps the platform's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRules {
    /// Overrides [`Rules::bulk_share_percent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_share_percent: Option<u64>,
    /// Overrides [`Rules::bulk_share_min`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_share_min: Option<u64>,
    /// Overrides [`Rules::bulk_count`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_count: Option<u64>,
    /// Overrides [`Rules::per_tenant`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_tenant: Option<Budget>,
}

/// Risk rules as an operator keeps them in a file (`--risk-rules`): the platform's, and tenants'
/// overrides by tenant name. YAML or JSON; unknown fields are refused, so a misspelt rule is an
/// error rather than a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// The platform's rules, every field given (as `GET /v1/risk/rules` shows them); the stored
    /// ones are kept when absent.
    #[serde(default)]
    pub platform: Option<Rules>,
    /// Each named tenant's overrides.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantRules>,
}

/// Why a rules file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    /// It is no YAML (or JSON) of the expected shape.
    #[error("{0}")]
    Parse(#[from] serde_yaml::Error),
    /// A rule in it cannot hold.
    #[error("{scope}: {error}")]
    Invalid {
        /// `platform`, or the tenant's name.
        scope: String,
        /// What is wrong.
        error: RulesError,
    },
}

impl RulesFile {
    /// Reads a rules file, checking every rule it makes against its platform rules (or `stored`,
    /// the platform's rules now, when it names none).
    pub fn from_yaml(text: &str, stored: &Rules) -> Result<RulesFile, RulesFileError> {
        let file: RulesFile = serde_yaml::from_str(text)?;
        let platform = file.platform.unwrap_or(*stored);
        platform.validate().map_err(|error| RulesFileError::Invalid { scope: "platform".into(), error })?;
        for (name, tenant) in &file.tenants {
            platform
                .with(tenant)
                .validate()
                .map_err(|error| RulesFileError::Invalid { scope: format!("tenant {name}"), error })?;
        }
        Ok(file)
    }
}

/// A rule that cannot hold: a share above 100%, an empty window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RulesError {
    /// The field, as the API spells it.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: &'static str,
}

impl Rules {
    /// The platform's rules with a tenant's overrides.
    pub fn with(&self, tenant: &TenantRules) -> Rules {
        Rules {
            bulk_share_percent: tenant.bulk_share_percent.unwrap_or(self.bulk_share_percent),
            bulk_share_min: tenant.bulk_share_min.unwrap_or(self.bulk_share_min),
            bulk_count: tenant.bulk_count.unwrap_or(self.bulk_count),
            per_tenant: tenant.per_tenant.unwrap_or(self.per_tenant),
            ..*self
        }
    }

    /// Checks that every rule can hold.
    pub fn validate(&self) -> Result<(), RulesError> {
        if self.bulk_share_percent > 100 {
            return Err(RulesError { field: "bulk_share_percent", message: "is a percentage: 0 to 100" });
        }
        for (field, n) in [("bulk_share_min", self.bulk_share_min), ("bulk_count", self.bulk_count)] {
            if n > MAX_COUNT {
                return Err(RulesError { field, message: "at most 1000000000" });
            }
        }
        for (field, budget) in
            [("per_idc", self.per_idc), ("per_tenant", self.per_tenant), ("platform", self.platform)]
        {
            if budget.window_seconds == 0 || budget.window_seconds > MAX_WINDOW_SECONDS {
                return Err(RulesError { field, message: "window_seconds must be 1 to 86400" });
            }
            if budget.deletions > MAX_COUNT {
                return Err(RulesError { field, message: "deletions must be at most 1000000000" });
            }
        }
        Ok(())
    }

    /// How many instances a request must confirm before it may end `ending` of the tenant's `live`
    /// instances, or `None` when it needs no confirmation.
    pub fn bulk_confirmation(&self, ending: u64, live: u64) -> Option<u64> {
        let too_many = ending > self.bulk_count;
        let too_large_a_share = ending >= self.bulk_share_min.max(1)
            && u128::from(ending) * 100 > u128::from(live) * u128::from(self.bulk_share_percent);
        (too_many || too_large_a_share).then_some(ending)
    }

    /// Whether a request ending `ending` instances could need a confirmation at all, whatever the
    /// tenant's live instances: when not, nobody needs to count them.
    pub fn may_need_confirmation(&self, ending: u64) -> bool {
        self.bulk_confirmation(ending, 0).is_some()
    }

    /// The windows a deletion of `per_idc` instances (counted by IDC) of `tenant` is counted in, each
    /// with how many it adds.
    pub fn windows(&self, tenant: &TenantId, per_idc: &BTreeMap<IdcId, u64>) -> Vec<Take> {
        let total: u64 = per_idc.values().sum();
        let mut takes: Vec<Take> = per_idc
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(idc, n)| Take { window: Window::Idc(idc.clone()), budget: self.per_idc, count: *n })
            .collect();
        if total > 0 {
            takes.push(Take {
                window: Window::Tenant(tenant.clone()),
                budget: self.per_tenant,
                count: total,
            });
            takes.push(Take { window: Window::Platform, budget: self.platform, count: total });
        }
        takes
    }
}

/// The most a budget or a bulk rule may count.
pub const MAX_COUNT: u64 = 1_000_000_000;

/// The longest window a budget may have: a day.
pub const MAX_WINDOW_SECONDS: u64 = 86_400;

/// One sliding window of deletions, and its breaker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// One IDC's deletions.
    Idc(IdcId),
    /// One tenant's deletions.
    Tenant(TenantId),
    /// Every deletion of the platform.
    Platform,
}

impl Window {
    /// The rule a full window is named by.
    pub fn rule(&self) -> Rule {
        match self {
            Window::Idc(_) => Rule::IdcWindow,
            Window::Tenant(_) => Rule::TenantWindow,
            Window::Platform => Rule::PlatformWindow,
        }
    }

    /// The window's key in the coordination store, and as the API names a breaker:
    /// `idc:<id>`, `tenant:<id>`, `platform`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Reads a key written by [`Window::key`].
    pub fn parse(key: &str) -> Option<Window> {
        match key.split_once(':') {
            Some(("idc", id)) if !id.is_empty() => Some(Window::Idc(IdcId(id.to_string()))),
            Some(("tenant", id)) if !id.is_empty() => Some(Window::Tenant(TenantId(id.to_string()))),
            None if key == "platform" => Some(Window::Platform),
            _ => None,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Idc(id) => write!(f, "idc:{id}"),
            Window::Tenant(id) => write!(f, "tenant:{id}"),
            Window::Platform => f.write_str("platform"),
        }
    }
}

/// What a deletion adds to one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The window.
    pub window: Window,
    /// The window's budget.
    pub budget: Budget,
    /// How many deletions it adds.
    pub count: u64,
}

/// A sliding log of one window's deletions: each entry is a moment (UTC ms) and how many were
/// deleted then. Entries older than the window fall out as time goes by, so the count is always
/// that of the last `window`, never of a fixed bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLog {
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

impl SlidingLog {
    /// Forgets what happened `window` or longer before `now_ms`.
    pub fn prune(&mut self, now_ms: u64, window: Duration) {
        let horizon = now_ms.saturating_sub(window_ms(window));
        while let Some(&(at, n)) = self.entries.front() {
            if at > horizon {
                break;
            }
            self.entries.pop_front();
            self.total -= n;
        }
    }

    /// How many deletions the log holds (after [`SlidingLog::prune`], those of the window).
    pub fn used(&self) -> u64 {
        self.total
    }

    /// Records `count` deletions at `now_ms`.
    pub fn record(&mut self, now_ms: u64, count: u64) {
        match self.entries.back_mut() {
            Some((at, n)) if *at == now_ms => *n += count,
            _ => self.entries.push_back((now_ms, count)),
        }
        self.total += count;
    }

    /// How long from `now_ms` until `count` more fit within `limit`, as entries fall out of the
    /// window; the whole window when they never fit.
    pub fn room_after(&self, now_ms: u64, window: Duration, limit: u64, count: u64) -> Duration {
        if count > limit {
            return window;
        }
        let mut used = self.total;
        for &(at, n) in &self.entries {
            if used + count <= limit {
                break;
            }
            used -= n;
            if used + count <= limit {
                return Duration::from_millis((at + window_ms(window)).saturating_sub(now_ms));
            }
        }
        Duration::ZERO
    }
}

fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

/// What an IDC's API server asks the platform's admission webhook about: the deletion of one of its
/// objects, with what the platform knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterObject<'a> {
    /// A Pod or VirtualMachineInstance labelled as `instance`'s, and the state the platform keeps
    /// that instance of this IDC in (`None`: it keeps no such instance).
    Workload {
        /// The instance id its `eci.io/instance` label names.
        instance: &'a str,
        /// The state the platform keeps it in, if it keeps it in this IDC at all.
        state: Option<InstanceState>,
    },
    /// A namespace, and how many of the platform's live instances it holds (`first` one of them).
    Namespace {
        /// The namespace's name.
        name: &'a str,
        /// How many live instances of this IDC it holds.
        live: u64,
        /// One of them, to name in the answer.
        first: Option<&'a str>,
    },
}

/// What the admission webhook answers, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterVerdict {
    /// Allowed or denied.
    pub verdict: Verdict,
    /// The rule that denied it (`Rule::None` when allowed).
    pub rule: Rule,
    /// For the person behind the request: what was refused and how to do it through the platform.
    pub message: String,
}

/// Whether an instance in `state` is still the platform's to end: pending, creating, running or
/// presumed running. Once it is released (`stopping`) or ended, its objects may go, which is how
/// the platform's own reconcilers remove them.
pub fn is_live_for_clusters(state: InstanceState) -> bool {
    state.on_release() != Release::Nothing
}

/// Decides a cluster's deletion the platform did not ask for: the objects of live instances are
/// the platform's, and only a release through its API ends them (with its guard, breakers and
/// billing); everything else goes.
pub fn review_cluster_deletion(object: &ClusterObject<'_>) -> ClusterVerdict {
    let allowed = |message: String| ClusterVerdict { verdict: Verdict::Allowed, rule: Rule::None, message };
    let denied =
        |message: String| ClusterVerdict { verdict: Verdict::Denied, rule: Rule::LiveInstance, message };
    match *object {
        ClusterObject::Workload { instance, state: Some(state) } if is_live_for_clusters(state) => {
            denied(format!(
                "instance {instance} is {state} and belongs to the edge container platform: deleting its object \
             would end it behind the platform's back; release it through the platform instead \
             (`eci instance delete {instance}`, or DELETE /v1/instances/{instance})"
            ))
        }
        ClusterObject::Workload { instance, state: Some(state) } => {
            allowed(format!("instance {instance} is {state}: its objects may go"))
        }
        ClusterObject::Workload { instance, state: None } => {
            allowed(format!("the platform keeps no instance {instance} in this IDC"))
        }
        ClusterObject::Namespace { name, live: 1, first: Some(first) } => denied(format!(
            "namespace {name} holds live instance {first} of the edge container platform: deleting it would \
             end the instance behind the platform's back; release it through the platform first \
             (`eci instance delete {first}`, or DELETE /v1/instances/{first})"
        )),
        ClusterObject::Namespace { name, live, first: Some(first) } if live > 1 => denied(format!(
            "namespace {name} holds {live} live instances of the edge container platform (among them \
             {first}): deleting it would end them behind the platform's back; release them through the \
             platform first (`eci batch delete <batch>`, or DELETE /v1/batches/<batch>)"
        )),
        ClusterObject::Namespace { name, .. } => allowed(format!("namespace {name} holds no live instance")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_label_set_to_always_protects() {
        let labels = |v: &str| BTreeMap::from([(LABEL_DELETE_PROTECTION.to_string(), v.to_string())]);
        assert!(is_protected(&labels("always")));
        assert!(!is_protected(&labels("never")));
        assert!(!is_protected(&labels("Always")));
        assert!(!is_protected(&BTreeMap::new()));
    }

    #[test]
    fn the_bulk_guard_asks_for_a_confirmation_of_more_than_half_or_more_than_two_thousand() {
        let rules = Rules::default();
        assert_eq!(rules.bulk_confirmation(1, 1), None, "one instance of one is no bulk");
        assert_eq!(rules.bulk_confirmation(9, 9), None);
        assert_eq!(rules.bulk_confirmation(10, 20), None, "exactly half");
        assert_eq!(rules.bulk_confirmation(11, 20), Some(11));
        assert_eq!(rules.bulk_confirmation(2_000, 100_000), None);
        assert_eq!(rules.bulk_confirmation(2_001, 100_000), Some(2_001));
    }

    #[test]
    fn a_rules_file_is_read_whole_or_refused_with_what_is_wrong() {
        let stored = Rules::default();
        let file = RulesFile::from_yaml(
            "tenants:\n  acme: {bulk_count: 10, per_tenant: {deletions: 5, window_seconds: 60}}\n",
            &stored,
        )
        .unwrap();
        assert_eq!(file.platform, None);
        assert_eq!(file.tenants["acme"].bulk_count, Some(10));
        let bad_share = RulesFile::from_yaml("tenants:\n  acme: {bulk_share_percent: 101}\n", &stored);
        assert!(bad_share.unwrap_err().to_string().starts_with("tenant acme: bulk_share_percent"));
        for misspelt in ["tenant:\n  acme: {bulk_count: 10}\n", "tenants:\n  acme: {bulk_cout: 10}\n"] {
            assert!(
                matches!(RulesFile::from_yaml(misspelt, &stored), Err(RulesFileError::Parse(_))),
                "{misspelt}"
            );
        }
        let partial = RulesFile::from_yaml("platform: {bulk_count: 10}\n", &stored);
        assert!(matches!(partial, Err(RulesFileError::Parse(_))), "platform rules are given whole");
        let empty_window = "platform: {bulk_share_percent: 50, bulk_share_min: 10, bulk_count: 2000, \
            per_idc: {deletions: 100, window_seconds: 0}, per_tenant: {deletions: 1000, window_seconds: 300}, \
            platform: {deletions: 5000, window_seconds: 300}}\n";
        assert!(
            RulesFile::from_yaml(empty_window, &stored)
                .unwrap_err()
                .to_string()
                .starts_with("platform: per_idc")
        );
    }

    #[test]
    fn a_tenant_overrides_its_own_rules_and_never_the_shared_windows() {
        let platform = Rules::default();
        let tenant = TenantRules {
            bulk_count: Some(10),
            per_tenant: Some(Budget { deletions: 5, window_seconds: 60 }),
            ..TenantRules::default()
        };
        let rules = platform.with(&tenant);
        assert_eq!(rules.bulk_count, 10);
        assert_eq!(rules.per_tenant.deletions, 5);
        assert_eq!((rules.per_idc, rules.platform), (platform.per_idc, platform.platform));
        assert_eq!(rules.bulk_share_percent, 50);
    }

    #[test]
    fn rules_that_cannot_hold_are_refused() {
        let bad_share = Rules { bulk_share_percent: 101, ..Rules::default() };
        assert_eq!(bad_share.validate().unwrap_err().field, "bulk_share_percent");
        let empty_window = Rules { per_idc: Budget { deletions: 1, window_seconds: 0 }, ..Rules::default() };
        assert_eq!(empty_window.validate().unwrap_err().field, "per_idc");
        assert!(Rules::default().validate().is_ok());
    }

    #[test]
    fn a_deletion_counts_in_each_of_its_idcs_its_tenant_and_the_platform() {
        let per_idc =
            BTreeMap::from([(IdcId("a".into()), 3), (IdcId("b".into()), 2), (IdcId("c".into()), 0)]);
        let takes = Rules::default().windows(&TenantId("t-1".into()), &per_idc);
        let keys: Vec<(String, u64)> = takes.iter().map(|t| (t.window.key(), t.count)).collect();
        assert_eq!(
            keys,
            [("idc:a".into(), 3), ("idc:b".into(), 2), ("tenant:t-1".into(), 5), ("platform".into(), 5)]
        );
        assert!(Rules::default().windows(&TenantId("t-1".into()), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn window_keys_read_back() {
        for window in [
            Window::Idc(IdcId("gd-gz-ct-1".into())),
            Window::Tenant(TenantId("t-1".into())),
            Window::Platform,
        ] {
            assert_eq!(Window::parse(&window.key()), Some(window));
        }
        for bad in ["", "idc:", "tenant", "platform:x", "zone:a"] {
            assert_eq!(Window::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_log_forgets_what_left_the_window_and_says_when_room_comes_back() {
        let window = Duration::from_secs(300);
        let mut log = SlidingLog::default();
        log.record(1_000, 60);
        log.record(61_000, 40);
        log.prune(100_000, window);
        assert_eq!(log.used(), 100);
        assert_eq!(log.room_after(100_000, window, 100, 1), Duration::from_millis(201_000));
        assert_eq!(log.room_after(100_000, window, 100, 61), Duration::from_millis(261_000));
        assert_eq!(log.room_after(100_000, window, 100, 101), window);
        log.prune(301_000, window);
        assert_eq!(log.used(), 40, "the first 60 left the window at 301 s");
        assert_eq!(log.room_after(301_000, window, 100, 60), Duration::ZERO);
    }

    #[test]
    fn a_namespace_with_live_instances_is_kept_and_an_empty_one_goes() {
        let kept = review_cluster_deletion(&ClusterObject::Namespace {
            name: "eci-t-1",
            live: 3,
            first: Some("i-7"),
        });
        assert_eq!((kept.verdict, kept.rule), (Verdict::Denied, Rule::LiveInstance));
        assert!(
            kept.message.contains("3 live instances") && kept.message.contains("i-7"),
            "{}",
            kept.message
        );
        let one = review_cluster_deletion(&ClusterObject::Namespace {
            name: "eci-t-1",
            live: 1,
            first: Some("i-7"),
        });
        assert_eq!(one.verdict, Verdict::Denied);
        assert!(one.message.contains("eci instance delete i-7"), "{}", one.message);
        let gone =
            review_cluster_deletion(&ClusterObject::Namespace { name: "eci-t-1", live: 0, first: None });
        assert_eq!((gone.verdict, gone.rule), (Verdict::Allowed, Rule::None));
    }

    proptest! {
        /// However deletions arrive, the log counts exactly those of the last window: a true sliding
        /// window, never a fixed bucket.
        #[test]
        fn the_log_counts_exactly_the_last_window(
            steps in proptest::collection::vec((0u64..20_000, 1u64..50), 1..200),
            window_s in 1u64..30,
        ) {
            let window = Duration::from_secs(window_s);
            let mut log = SlidingLog::default();
            let mut all = Vec::new();
            let mut now = 0;
            for (gap, n) in steps {
                now += gap;
                log.prune(now, window);
                log.record(now, n);
                all.push((now, n));
                let expected: u64 =
                    all.iter().filter(|(at, _)| *at + window_s * 1_000 > now).map(|(_, n)| n).sum();
                prop_assert_eq!(log.used(), expected);
            }
        }

        /// Waiting as long as `room_after` says always makes room, and not a millisecond less would.
        #[test]
        fn room_comes_back_exactly_when_promised(
            steps in proptest::collection::vec((0u64..5_000, 1u64..20), 1..50),
            limit in 1u64..200,
            count in 1u64..50,
        ) {
            let window = Duration::from_secs(10);
            let mut log = SlidingLog::default();
            let mut now = 0;
            for (gap, n) in steps {
                now += gap;
                log.prune(now, window);
                log.record(now, n);
            }
            prop_assume!(count <= limit);
            let wait = log.room_after(now, window, limit, count).as_millis() as u64;
            let mut later = log.clone();
            later.prune(now + wait, window);
            prop_assert!(later.used() + count <= limit);
            if wait > 0 {
                let mut sooner = log.clone();
                sooner.prune(now + wait - 1, window);
                prop_assert!(sooner.used() + count > limit);
            }
        }

        /// A cluster deletion behind the platform's back is refused exactly while the instance is
        /// the platform's to end, and the refusal names it and the way through the platform.
        #[test]
        fn a_cluster_may_delete_an_instances_object_only_once_it_is_released(
            state in proptest::option::of(proptest::sample::select(&InstanceState::ALL[..])),
            n in 0u32..10_000,
        ) {
            let instance = format!("i-{n:04}");
            let verdict = review_cluster_deletion(&ClusterObject::Workload { instance: &instance, state });
            let live = state.is_some_and(is_live_for_clusters);
            prop_assert_eq!(verdict.verdict == Verdict::Denied, live);
            prop_assert_eq!(verdict.rule, if live { Rule::LiveInstance } else { Rule::None });
            prop_assert!(verdict.message.contains(&instance), "{}", verdict.message);
            if live {
                let way = format!("DELETE /v1/instances/{instance}");
                prop_assert!(verdict.message.contains(&way), "{}", verdict.message);
            }
        }

        /// A tenant's namespace is found again from its name, and nothing else passes for one.
        #[test]
        fn a_tenants_namespace_names_the_tenant(tenant in "t-[a-z0-9]{1,20}", other in "[a-z]{1,4}-[a-z0-9]{0,8}") {
            let tenant = TenantId(tenant);
            prop_assert_eq!(TenantId::from_namespace(&tenant.namespace()), Some(tenant));
            prop_assume!(!other.starts_with("eci-"));
            prop_assert_eq!(TenantId::from_namespace(&other), None);
        }
    }
}
