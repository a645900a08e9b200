//! Wake-ups for the instance manager. A write that gives an IDC's cluster work (new pending
//! instances, instances to stop) signals that IDC, so its reconciler acts at once instead of at its
//! next resync. New instances are handed over with the signal, so the reconciler can create them
//! without reading them back; the hand-over is a shortcut, never the record: what is lost here (no
//! reconciler listening, a full queue, a restart) is still `pending` in the store and found there.
//!
//! Signals are in-process: a replica serving the API without running the instance manager signals
//! nobody, and the reconcilers elsewhere find the work at their resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eci_core::{BatchRequest, IdcId, Instance};
use tokio::sync::Notify;

use crate::instances::Desired;

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

/// One [`IdcWork`] per IDC, made when its reconciler starts listening.
#[derive(Debug, Default)]
pub struct IdcSignals {
    by_idc: Mutex<HashMap<IdcId, Arc<IdcWork>>>,
}

impl IdcSignals {
    /// The work of one IDC, for its reconciler.
    pub fn of(&self, idc: &IdcId) -> Arc<IdcWork> {
        self.by_idc.lock().expect("signals lock").entry(idc.clone()).or_default().clone()
    }

    /// Signals each IDC given.
    pub(crate) fn raise<'a>(&self, idcs: impl IntoIterator<Item = &'a IdcId>) {
        let by_idc = self.by_idc.lock().expect("signals lock");
        for idc in idcs {
            if let Some(work) = by_idc.get(idc) {
                work.signal.notify_one();
            }
        }
    }

    /// Hands a new batch's instances to their IDCs' reconcilers and signals them.
    pub(crate) fn hand_over(&self, instances: Vec<Instance>, request: &BatchRequest) {
        let mut by_idc: HashMap<IdcId, Vec<Desired>> = HashMap::new();
        for instance in instances {
            by_idc
                .entry(instance.idc.clone())
                .or_default()
                .push(Desired { instance, request: request.clone() });
        }
        let listening = self.by_idc.lock().expect("signals lock");
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
}
