//! The capacity ledger: per IDC, what exists, what is reserved for a tenant and what is allocated.
//!
//! The store keeps the authoritative copy and applies the same rules with conditional updates; this
//! in-memory form is the snapshot the planner reads and the model the property tests check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::{Fleet, IdcId};
use crate::units::Resources;

/// One IDC's line in the ledger. Invariant: `reserved + allocated <= total` in every dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdcLedger {
    pub total: Resources,
    /// Held for reservations and not yet drawn on; used for everyone but the reservation's owner.
    pub reserved: Resources,
    /// Taken by live instances (including those drawn from reservations).
    pub allocated: Resources,
}

impl IdcLedger {
    pub fn new(total: Resources) -> Self {
        IdcLedger { total, ..Default::default() }
    }

    /// What a new allocation or reservation may still take. Saturates so that a shrunk IDC (total
    /// lowered below what is in use) shows no room rather than underflowing.
    pub fn free(&self) -> Resources {
        self.total.saturating_sub(&(self.reserved + self.allocated))
    }
}

/// Why a ledger change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("IDC `{0}` is not in the ledger")]
    UnknownIdc(IdcId),
    #[error("IDC `{0}` has not enough free capacity")]
    OverCommit(IdcId),
    #[error("IDC `{0}` gives back more than it holds")]
    Underflow(IdcId),
}

/// The ledger of the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger {
    pub idcs: BTreeMap<IdcId, IdcLedger>,
}

/// Which column of a ledger line a change touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Reserved,
    Allocated,
}

impl Ledger {
    /// An empty ledger sized to the fleet.
    pub fn for_fleet(fleet: &Fleet) -> Self {
        Ledger { idcs: fleet.idcs.iter().map(|i| (i.id.clone(), IdcLedger::new(i.capacity))).collect() }
    }

    pub fn free(&self, idc: &IdcId) -> Resources {
        self.idcs.get(idc).map(IdcLedger::free).unwrap_or(Resources::ZERO)
    }

    /// Takes `amounts` from free capacity into `column`, all or nothing.
    pub fn take(&mut self, column: Column, amounts: &[(IdcId, Resources)]) -> Result<(), LedgerError> {
        let mut next = self.idcs.clone();
        for (idc, amount) in amounts {
            let line = next.get_mut(idc).ok_or_else(|| LedgerError::UnknownIdc(idc.clone()))?;
            if !line.free().covers(amount) {
                return Err(LedgerError::OverCommit(idc.clone()));
            }
            match column {
                Column::Reserved => line.reserved = line.reserved + *amount,
                Column::Allocated => line.allocated = line.allocated + *amount,
            }
        }
        self.idcs = next;
        Ok(())
    }

    /// Gives `amount` held in `column` back to free capacity.
    pub fn give_back(&mut self, column: Column, idc: &IdcId, amount: Resources) -> Result<(), LedgerError> {
        let line = self.idcs.get_mut(idc).ok_or_else(|| LedgerError::UnknownIdc(idc.clone()))?;
        let held = match column {
            Column::Reserved => &mut line.reserved,
            Column::Allocated => &mut line.allocated,
        };
        if !held.covers(&amount) {
            return Err(LedgerError::Underflow(idc.clone()));
        }
        *held = *held - amount;
        Ok(())
    }

    /// Moves `amount` from a reservation into allocation: the owner's batch draws on what it reserved.
    pub fn draw_reserved(&mut self, idc: &IdcId, amount: Resources) -> Result<(), LedgerError> {
        let line = self.idcs.get_mut(idc).ok_or_else(|| LedgerError::UnknownIdc(idc.clone()))?;
        if !line.reserved.covers(&amount) {
            return Err(LedgerError::Underflow(idc.clone()));
        }
        line.reserved = line.reserved - amount;
        line.allocated = line.allocated + amount;
        Ok(())
    }
}
