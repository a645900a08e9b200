//! Where the store reports the work its writes give IDC clusters (new pending instances, instances
//! to stop), so that whoever runs an IDC's reconciler can act at once instead of at its next
//! resync. The store knows only this port; the instance manager's queue is plugged in by the
//! binary ([`Store::reporting_work_to`]). A report is a shortcut, never the record: what is lost
//! (nobody listening, a full queue, a restart) is still in the store and found there.
//!
//! Alerts leave the same way: a write that trips a breaker, refuses an out-of-band deletion, fails
//! an instance whose Pod vanished or disconnects an IDC raises an [`Alert`] to the sink plugged in
//! ([`Store::raising_alerts_to`]) once it has committed.

use std::collections::BTreeSet;
use std::sync::Arc;

use eci_core::alerts::{Alert, AlertSink};
use eci_core::{BatchRequest, IdcId, Instance};

use crate::Store;

/// Hears of the work the store's writes give IDC clusters.
pub trait WorkSink: Send + Sync + std::fmt::Debug {
    /// A batch was stored with these new `pending` instances, all made from `request`.
    fn new_instances(&self, instances: Vec<Instance>, request: Arc<BatchRequest>);
    /// Instances in these IDCs turned `stopping`: their objects are to be deleted.
    fn stopping(&self, idcs: &BTreeSet<IdcId>);
}

impl Store {
    /// This store, reporting the work its writes give IDC clusters to `sink`.
    pub fn reporting_work_to(mut self, sink: Arc<dyn WorkSink>) -> Store {
        self.work = Some(sink);
        self
    }

    /// This store, raising the alerts of its writes to `sink`.
    pub fn raising_alerts_to(mut self, sink: Arc<dyn AlertSink>) -> Store {
        self.alerts = Some(sink);
        self
    }

    pub(crate) fn raise(&self, alert: Alert) {
        if let Some(sink) = &self.alerts {
            sink.raise(alert);
        }
    }

    pub(crate) fn report_new_instances(&self, instances: Vec<Instance>, request: &BatchRequest) {
        if let Some(sink) = &self.work {
            sink.new_instances(instances, Arc::new(request.clone()));
        }
    }

    pub(crate) fn report_stopping(&self, idcs: &BTreeSet<IdcId>) {
        if let Some(sink) = &self.work
            && !idcs.is_empty()
        {
            sink.stopping(idcs);
        }
    }
}
