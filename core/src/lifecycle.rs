//! Lifecycles of instances, batches and reservations, each with one pure transition function that
//! refuses illegal moves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fleet::UnknownWord;

/// An illegal state change was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} cannot go from `{from}` to `{to}`")]
pub struct IllegalTransition {
    pub kind: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn illegal(self, to: $name) -> IllegalTransition {
                IllegalTransition { kind: $kind, from: self.as_str(), to: to.as_str() }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| UnknownWord {
                    kind: concat!($kind, " state"),
                    value: s.to_string(),
                    expected: concat!($($text, " "),+),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(
    /// Where one instance is in its life.
    InstanceState, "instance", {
        /// Accepted and holding capacity; nothing exists in the cluster yet.
        Pending => "pending",
        /// The Pod or VMI was asked for and is starting.
        Creating => "creating",
        Running => "running",
        /// Release asked for; waiting for the cluster to remove it.
        Stopping => "stopping",
        Terminated => "terminated",
        Failed => "failed",
        /// Its IDC is unreachable: presumed still running, never failed or re-created for that.
        Unknown => "unknown",
    }
);

impl InstanceState {
    /// An ended instance holds no capacity and never changes again.
    pub fn is_ended(&self) -> bool {
        matches!(self, InstanceState::Terminated | InstanceState::Failed)
    }

    /// The one place that decides which moves an instance may make.
    pub fn transition(self, to: InstanceState) -> Result<InstanceState, IllegalTransition> {
        use InstanceState::*;
        let legal = match (self, to) {
            (a, b) if a == b => !a.is_ended(),
            (Pending, Creating | Stopping | Terminated | Failed | Unknown) => true,
            (Creating, Running | Stopping | Failed | Unknown) => true,
            (Running, Stopping | Failed | Unknown) => true,
            (Unknown, Pending | Creating | Running | Stopping | Terminated | Failed) => true,
            (Stopping, Terminated | Failed | Unknown) => true,
            _ => false,
        };
        if legal { Ok(to) } else { Err(self.illegal(to)) }
    }
}

state_enum!(
    /// Where a batch is in its life.
    BatchState, "batch", {
        /// Holds live instances.
        Active => "active",
        /// Released by its owner.
        Released => "released",
        /// Released by itself when its TTL ran out.
        Expired => "expired",
    }
);

impl BatchState {
    pub fn transition(self, to: BatchState) -> Result<BatchState, IllegalTransition> {
        match (self, to) {
            (BatchState::Active, BatchState::Released | BatchState::Expired) => Ok(to),
            _ => Err(self.illegal(to)),
        }
    }
}

state_enum!(
    /// Where a reservation is in its life.
    ReservationState, "reservation", {
        Active => "active",
        /// Deleted by its owner; what was unused went back to the pool.
        Released => "released",
        /// Its end time passed; what was unused went back to the pool.
        Expired => "expired",
    }
);

impl ReservationState {
    pub fn transition(self, to: ReservationState) -> Result<ReservationState, IllegalTransition> {
        match (self, to) {
            (ReservationState::Active, ReservationState::Released | ReservationState::Expired) => Ok(to),
            _ => Err(self.illegal(to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_instances_never_change_again() {
        for &end in &[InstanceState::Terminated, InstanceState::Failed] {
            for &to in InstanceState::ALL {
                assert!(end.transition(to).is_err(), "{end} -> {to}");
            }
        }
    }

    #[test]
    fn an_unreachable_instance_is_never_failed_by_the_transition_rules_alone() {
        assert!(InstanceState::Running.transition(InstanceState::Unknown).is_ok());
        assert!(InstanceState::Unknown.transition(InstanceState::Running).is_ok());
        assert!(InstanceState::Running.transition(InstanceState::Pending).is_err());
        assert!(InstanceState::Running.transition(InstanceState::Terminated).is_err());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for &s in InstanceState::ALL {
            assert_eq!(s.as_str().parse::<InstanceState>(), Ok(s));
        }
        assert!("gone".parse::<BatchState>().is_err());
        assert!(BatchState::Released.transition(BatchState::Active).is_err());
        assert!(ReservationState::Active.transition(ReservationState::Expired).is_ok());
    }
}
