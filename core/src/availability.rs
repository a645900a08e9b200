//! How many instances of a size can be had right now, by city and carrier.

use std::collections::BTreeMap;

use crate::fleet::{Area, Carrier, Fleet};
use crate::ledger::Ledger;
use crate::placement::PlacementRequest;

/// Free room for `request.spec` in every matching IDC, summed by (area, carrier) and sorted by area.
/// `request.count` is ignored; `max_per_idc` caps each IDC as it would in a batch. An IDC reached
/// through several of the requested carriers has its room shared evenly among them (the first in
/// carrier order take what does not divide), as the planner shares it, so no room counts twice.
pub fn availability(fleet: &Fleet, ledger: &Ledger, request: &PlacementRequest) -> Vec<(Area, Carrier, u64)> {
    let mut sums: BTreeMap<(&Area, Carrier), u64> = BTreeMap::new();
    for idc in fleet.idcs.iter().filter(|i| request.matches(i)) {
        let carriers = request.carriers_in(idc);
        let mut n = ledger.room_for(&idc.id, &request.spec);
        if let Some(max) = request.max_per_idc {
            n = n.min(max);
        }
        let k = carriers.len() as u64;
        for (j, carrier) in carriers.iter().enumerate() {
            *sums.entry((&idc.area, carrier)).or_default() += n / k + u64::from((j as u64) < n % k);
        }
    }
    sums.into_iter().map(|((area, carrier), n)| (area.clone(), carrier, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::builtin_fleet;
    use crate::placement::plan;
    use crate::units::{MiB, MilliCpu, Resources};

    #[test]
    fn what_availability_promises_a_batch_can_have() {
        let fleet = builtin_fleet();
        let ledger = Ledger::for_fleet(&fleet);
        let mut request = PlacementRequest::new(0, Resources::new(MilliCpu(2000), MiB(4096), 0));
        request.areas = vec!["guangdong".into()];
        request.carriers = vec![Carrier::Telecom];
        let total: u64 = availability(&fleet, &ledger, &request).iter().map(|(_, _, n)| n).sum();
        assert!(total > 0);
        request.count = total;
        assert_eq!(plan(&fleet, &ledger, &request).unwrap().placed(), total);
        request.count = total + 1;
        assert!(plan(&fleet, &ledger, &request).is_err());
    }
}
