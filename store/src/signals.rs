//! Wake-ups for the instance manager. A write that gives an IDC's cluster work (new pending
//! instances, instances to stop) signals that IDC, so its reconciler starts a pass at once instead
//! of at its next resync. Signals are in-process: a replica serving the API without running the
//! instance manager signals nobody, and the reconcilers elsewhere find the work at their resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eci_core::IdcId;
use tokio::sync::Notify;

/// One [`Notify`] per IDC, made on first use by either side.
#[derive(Debug, Default)]
pub struct IdcSignals {
    by_idc: Mutex<HashMap<IdcId, Arc<Notify>>>,
}

impl IdcSignals {
    /// The signal of one IDC; `notified()` on it completes once work arrives (at once if some
    /// arrived since the last wake-up).
    pub fn of(&self, idc: &IdcId) -> Arc<Notify> {
        self.by_idc.lock().expect("signals lock").entry(idc.clone()).or_default().clone()
    }

    /// Signals each IDC given.
    pub(crate) fn raise<'a>(&self, idcs: impl IntoIterator<Item = &'a IdcId>) {
        let by_idc = self.by_idc.lock().expect("signals lock");
        for idc in idcs {
            if let Some(signal) = by_idc.get(idc) {
                signal.notify_one();
            }
        }
    }
}
