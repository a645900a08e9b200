//! The link to an IDC's cluster as the reconciler believes it, advanced by one pure step per probe.
//!
//! Edge autonomy rests on this: a few missed probes in a row turn the IDC `disconnected` (its
//! instances `unknown`, never failed), one lost packet does not, and the first answer afterwards
//! turns it back. The reconciler writes each [`LinkChange`] to the store before it takes the new
//! state, so a change the store did not take is made again at the next probe.

/// What one reachability probe of the cluster found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// The API server answered within the probe's timeout.
    Answered,
    /// It refused the connection, failed or did not answer in time.
    Missed,
}

/// The link to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The cluster has not answered since the reconciler started, after this many misses: the IDC's
    /// stored status may be a disconnection recorded before a restart, which its first answer clears.
    Unproven {
        /// Probes missed in a row so far, fewer than make a disconnection.
        misses: u32,
    },
    /// The last probe was answered.
    Up,
    /// The cluster answered before, and has missed this many probes in a row since, fewer than make
    /// a disconnection.
    Missing(u32),
    /// Enough probes were missed in a row: the IDC is disconnected until the cluster answers.
    Down,
}

/// What the store must hear after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// The cluster answers after being down (or unproven): the IDC turns active again.
    Reconnected {
        /// Whether the link was down (worth saying loudly), not merely unproven since a start.
        was_down: bool,
    },
    /// The IDC turns disconnected and its created instances unknown. Said again at every miss while
    /// down, so an instance recorded `creating` by a creation that raced the partition turns
    /// unknown too.
    Disconnected {
        /// Whether the link was believed up until now, which is worth saying loudly.
        was_up: bool,
    },
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState::Unproven { misses: 0 }
    }
}

impl LinkState {
    /// The state after one more probe, and what the store must hear of it; the IDC turns
    /// disconnected after `failures_before_disconnect` misses in a row (at least one).
    pub fn step(
        self,
        probe: ProbeResult,
        failures_before_disconnect: u32,
    ) -> (LinkState, Option<LinkChange>) {
        let disconnect_at = failures_before_disconnect.max(1);
        match (self, probe) {
            (LinkState::Unproven { .. }, ProbeResult::Answered) => {
                (LinkState::Up, Some(LinkChange::Reconnected { was_down: false }))
            }
            (LinkState::Down, ProbeResult::Answered) => {
                (LinkState::Up, Some(LinkChange::Reconnected { was_down: true }))
            }
            (LinkState::Up | LinkState::Missing(_), ProbeResult::Answered) => (LinkState::Up, None),
            (LinkState::Unproven { misses }, ProbeResult::Missed) if misses + 1 < disconnect_at => {
                (LinkState::Unproven { misses: misses + 1 }, None)
            }
            (LinkState::Up, ProbeResult::Missed) if 1 < disconnect_at => (LinkState::Missing(1), None),
            (LinkState::Missing(misses), ProbeResult::Missed) if misses + 1 < disconnect_at => {
                (LinkState::Missing(misses + 1), None)
            }
            (LinkState::Up | LinkState::Missing(_), ProbeResult::Missed) => {
                (LinkState::Down, Some(LinkChange::Disconnected { was_up: true }))
            }
            (LinkState::Unproven { .. } | LinkState::Down, ProbeResult::Missed) => {
                (LinkState::Down, Some(LinkChange::Disconnected { was_up: false }))
            }
        }
    }

    /// Whether the cluster answered the last probe, so requests to it are worth sending.
    pub fn is_up(self) -> bool {
        self == LinkState::Up
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn probes() -> impl Strategy<Value = Vec<ProbeResult>> {
        prop::collection::vec(prop_oneof![Just(ProbeResult::Answered), Just(ProbeResult::Missed)], 0..40)
    }

    /// The book-keeping the link had before it was a state machine: misses in a row, and whether the
    /// IDC was (or may have been) marked disconnected.
    struct Counters {
        failures: u32,
        disconnected: bool,
        /// Whether a disconnection was said since the last answer.
        down: bool,
    }

    impl Counters {
        fn probe(&mut self, probe: ProbeResult, threshold: u32) -> Option<LinkChange> {
            match probe {
                ProbeResult::Answered => {
                    self.failures = 0;
                    let was_down = std::mem::replace(&mut self.down, false);
                    std::mem::replace(&mut self.disconnected, false)
                        .then_some(LinkChange::Reconnected { was_down })
                }
                ProbeResult::Missed => {
                    self.failures += 1;
                    let change = (self.failures >= threshold.max(1)).then(|| LinkChange::Disconnected {
                        was_up: !std::mem::replace(&mut self.disconnected, true),
                    });
                    self.down |= change.is_some();
                    change
                }
            }
        }
    }

    #[test]
    fn a_cluster_that_never_answered_is_disconnected_after_the_threshold_and_reconnects_at_once() {
        let mut link = LinkState::default();
        let mut changes = Vec::new();
        for probe in [ProbeResult::Missed, ProbeResult::Missed, ProbeResult::Missed, ProbeResult::Answered] {
            let (next, change) = link.step(probe, 3);
            link = next;
            changes.push(change);
        }
        assert_eq!(
            changes,
            [
                None,
                None,
                Some(LinkChange::Disconnected { was_up: false }),
                Some(LinkChange::Reconnected { was_down: true })
            ]
        );
        assert!(link.is_up());
    }

    #[test]
    fn one_lost_probe_is_not_a_partition() {
        let (missing, change) = LinkState::Up.step(ProbeResult::Missed, 3);
        assert_eq!((missing, change), (LinkState::Missing(1), None));
        assert!(!missing.is_up());
        assert_eq!(missing.step(ProbeResult::Answered, 3), (LinkState::Up, None));
    }

    #[test]
    fn a_threshold_of_zero_disconnects_at_the_first_miss() {
        assert_eq!(
            LinkState::Up.step(ProbeResult::Missed, 0),
            (LinkState::Down, Some(LinkChange::Disconnected { was_up: true }))
        );
    }

    proptest! {
        /// The step function says to the store exactly what the counters it replaced said.
        #[test]
        fn the_link_changes_as_the_miss_counters_did(probes in probes(), threshold in 0u32..6) {
            let mut link = LinkState::default();
            let mut counters = Counters { failures: 0, disconnected: true, down: false };
            for probe in probes {
                let (next, change) = link.step(probe, threshold);
                prop_assert_eq!(change, counters.probe(probe, threshold));
                link = next;
            }
        }

        /// The IDC is down exactly when the last `threshold` probes (at least one) all missed, and
        /// up exactly when the last one was answered.
        #[test]
        fn the_link_is_down_after_enough_misses_in_a_row(probes in probes(), threshold in 0u32..6) {
            let mut link = LinkState::default();
            for probe in &probes {
                link = link.step(*probe, threshold).0;
            }
            let misses_in_a_row = probes.iter().rev().take_while(|p| **p == ProbeResult::Missed).count();
            let enough = usize::try_from(threshold.max(1)).unwrap();
            prop_assert_eq!(link == LinkState::Down, misses_in_a_row >= enough);
            prop_assert_eq!(link.is_up(), probes.last() == Some(&ProbeResult::Answered));
            match link {
                LinkState::Unproven { misses } => {
                    prop_assert!(!probes.contains(&ProbeResult::Answered));
                    prop_assert_eq!(usize::try_from(misses).unwrap(), misses_in_a_row);
                }
                LinkState::Missing(misses) => {
                    prop_assert!(probes.contains(&ProbeResult::Answered));
                    prop_assert_eq!(usize::try_from(misses).unwrap(), misses_in_a_row);
                }
                LinkState::Up | LinkState::Down => {}
            }
        }
    }
}
