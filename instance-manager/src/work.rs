//! The instance manager's work queue: one wake-up per IDC, and the new instances handed over with
//! it, so that a reconciler creates a new batch's objects at once and without reading them back.
//! The store reports into it through its [`WorkSink`] port; the binary wires the two together.
//! What is lost here (no reconciler listening, a full queue, a restart) is still `pending` in the
//! store, where the next pass finds it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use eci_core::{BatchRequest, IdcId, Instance};
use eci_store::instances::Desired;
use eci_store::work::WorkSink;
use tokio::sync::Notify;

/// New instances an IDC's reconciler has not taken yet beyond this many are left to the store.
const MAX_HANDED_OVER: usize = 10_000;

/// One IDC's wake-up and the new instances handed over with it.
#[derive(Debug, Default)]
pub struct IdcWork {
    signal: Notify,
    new: Mutex<Vec<Desired>>,
}

impl IdcWork {
    /// Completes once work arrives (at once if some arrived since the last wake-up).
    pub async fn notified(&self) {
        self.signal.notified().await;
    }

    /// Takes the new instances handed over since the last call.
    pub fn take_new(&self) -> Vec<Desired> {
        std::mem::take(&mut *self.new.lock().expect("hand-over lock"))
    }
}

/// One [`IdcWork`] per IDC whose reconciler listens. Cheap to clone: clones share the queue.
#[derive(Debug, Default, Clone)]
pub struct WorkQueue {
    by_idc: Arc<Mutex<HashMap<IdcId, Arc<IdcWork>>>>,
}

impl WorkQueue {
    /// The work of one IDC, for its reconciler; reports for an IDC reach it from the first call on.
    pub fn of(&self, idc: &IdcId) -> Arc<IdcWork> {
        self.by_idc.lock().expect("work queue lock").entry(idc.clone()).or_default().clone()
    }
}

impl WorkSink for WorkQueue {
    fn new_instances(&self, instances: Vec<Instance>, request: Arc<BatchRequest>) {
        let mut by_idc: HashMap<IdcId, Vec<Desired>> = HashMap::new();
        for instance in instances {
            by_idc
                .entry(instance.idc.clone())
                .or_default()
                .push(Desired { instance, request: Arc::clone(&request) });
        }
        let listening = self.by_idc.lock().expect("work queue lock");
        for (idc, desired) in by_idc {
            let Some(work) = listening.get(&idc) else { continue };
            {
                let mut new = work.new.lock().expect("hand-over lock");
                let room = MAX_HANDED_OVER.saturating_sub(new.len());
                new.extend(desired.into_iter().take(room));
            }
            work.signal.notify_one();
        }
    }

    fn stopping(&self, idcs: &BTreeSet<IdcId>) {
        let listening = self.by_idc.lock().expect("work queue lock");
        for idc in idcs {
            if let Some(work) = listening.get(idc) {
                work.signal.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn instance(id: &str, idc: &str) -> Instance {
        let now = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        Instance {
            id: eci_core::InstanceId(id.into()),
            batch_id: eci_core::BatchId("b-1".into()),
            tenant_id: eci_core::TenantId("t-1".into()),
            state: eci_core::InstanceState::Pending,
            spec: eci_core::Resources::ZERO,
            runtime: eci_core::Runtime::Container,
            idc: IdcId(idc.into()),
            area: eci_core::Area::new("south", "guangdong", "shenzhen"),
            carrier: eci_core::Carrier::Telecom,
            reservation_id: None,
            labels: Default::default(),
            ip: None,
            ssh: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            ended_at: None,
        }
    }

    fn request() -> Arc<BatchRequest> {
        Arc::new(BatchRequest {
            count: 3,
            spec: eci_core::Resources::ZERO,
            runtime: eci_core::Runtime::Container,
            workload: Default::default(),
            placement: Default::default(),
            reservation_id: None,
            ttl_seconds: None,
            create_timeout_seconds: None,
            labels: Default::default(),
        })
    }

    #[test]
    fn new_instances_wake_their_idcs_once_and_share_one_request() {
        let queue = WorkQueue::default();
        let (a, b, quiet) =
            (queue.of(&IdcId("a".into())), queue.of(&IdcId("b".into())), queue.of(&IdcId("c".into())));
        let request = request();
        queue.new_instances(
            vec![
                instance("i-1", "a"),
                instance("i-2", "b"),
                instance("i-3", "a"),
                instance("i-4", "unheard"),
            ],
            request.clone(),
        );
        assert!(a.notified().now_or_never().is_some());
        assert!(a.notified().now_or_never().is_none(), "a wake-up is taken once");
        assert!(b.notified().now_or_never().is_some());
        assert!(quiet.notified().now_or_never().is_none(), "an IDC without new work sleeps on");
        let taken = a.take_new();
        let ids: Vec<_> = taken.iter().map(|d| d.instance.id.0.as_str()).collect();
        assert_eq!(ids, ["i-1", "i-3"]);
        assert!(taken.iter().all(|d| Arc::ptr_eq(&d.request, &request)), "one copy per batch");
        assert!(a.take_new().is_empty(), "handed over once");
        assert_eq!(b.take_new().len(), 1);
    }

    #[test]
    fn stopping_wakes_only_the_idcs_named() {
        let queue = WorkQueue::default();
        let (a, b) = (queue.of(&IdcId("a".into())), queue.of(&IdcId("b".into())));
        queue.stopping(&BTreeSet::from([IdcId("b".into()), IdcId("unheard".into())]));
        assert!(a.notified().now_or_never().is_none());
        assert!(b.notified().now_or_never().is_some());
        assert!(b.take_new().is_empty(), "a stop hands nothing over");
    }

    #[test]
    fn a_reconciler_that_falls_behind_leaves_the_rest_to_the_store() {
        let queue = WorkQueue::default();
        let a = queue.of(&IdcId("a".into()));
        let many: Vec<_> = (0..MAX_HANDED_OVER + 5).map(|n| instance(&format!("i-{n}"), "a")).collect();
        queue.new_instances(many, request());
        assert_eq!(a.take_new().len(), MAX_HANDED_OVER);
    }
}
