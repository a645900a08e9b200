//! Resource units and Kubernetes quantity strings.
//!
//! Everything is an integer: milli-vCPU for CPU, MiB for memory, whole devices for GPUs, so that a
//! vCPU can never be added to a MiB and no rounding creeps into the ledger.

use std::fmt;
use std::ops::{Add, Mul, Sub};

use serde::{Deserialize, Serialize};

/// CPU in thousandths of a vCPU, the unit Kubernetes requests use ("500m").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct MilliCpu(pub u64);

/// Memory in mebibytes; finer grain buys nothing for instance sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct MiB(pub u64);

/// A bundle of the three dimensions the ledger tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU, in milli-vCPU.
    pub cpu: MilliCpu,
    /// Memory, in MiB.
    pub memory: MiB,
    /// GPUs, in whole devices: an instance never shares one.
    pub gpu: u32,
}

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing was given, or only spaces.
    #[error("quantity is empty")]
    Empty,
    /// Not a number with a suffix of this dimension (`2Gi` for CPU, `4GB` for memory, `abc`).
    #[error("`{0}` is not a Kubernetes quantity")]
    Malformed(String),
    /// Smaller than the unit the ledger counts in (1m of CPU, or 1Mi for a binary memory suffix), so
    /// it cannot be granted exactly.
    #[error("`{0}` is finer than the platform's unit (1m of CPU, 1Mi of memory)")]
    TooFine(String),
    /// Beyond what the ledger's integers can count.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl Resources {
    /// No CPU, memory or GPU: the start of a sum, and the free room of an IDC the ledger does not know.
    pub const ZERO: Resources = Resources { cpu: MilliCpu(0), memory: MiB(0), gpu: 0 };

    /// A bundle from its three dimensions; `const` so that fixed sizes can be constants.
    pub const fn new(cpu: MilliCpu, memory: MiB, gpu: u32) -> Self {
        Resources { cpu, memory, gpu }
    }

    /// True when every dimension of `need` fits inside `self`.
    pub fn covers(&self, need: &Resources) -> bool {
        self.cpu >= need.cpu && self.memory >= need.memory && self.gpu >= need.gpu
    }

    /// Subtraction that stops at zero, for "what is left" views that must never underflow.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu: MilliCpu(self.cpu.0.saturating_sub(other.cpu.0)),
            memory: MiB(self.memory.0.saturating_sub(other.memory.0)),
            gpu: self.gpu.saturating_sub(other.gpu),
        }
    }

    /// The smaller of `self` and `other` in each dimension (what fits in both).
    pub fn each_min(&self, other: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.min(other.cpu),
            memory: self.memory.min(other.memory),
            gpu: self.gpu.min(other.gpu),
        }
    }

    /// The larger of `self` and `other` in each dimension (what holds either).
    pub fn each_max(&self, other: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
            gpu: self.gpu.max(other.gpu),
        }
    }

    /// How many instances of `spec` fit into `self`. A zero-sized dimension of `spec` never limits.
    pub fn how_many(&self, spec: &Resources) -> u64 {
        let limits = [
            self.cpu.0.checked_div(spec.cpu.0),
            self.memory.0.checked_div(spec.memory.0),
            self.gpu.checked_div(spec.gpu).map(u64::from),
        ];
        // A spec of all zeros is refused upstream; counting "infinitely many" of it helps no one.
        limits.into_iter().flatten().min().unwrap_or(0)
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu: MilliCpu(self.cpu.0 + o.cpu.0),
            memory: MiB(self.memory.0 + o.memory.0),
            gpu: self.gpu + o.gpu,
        }
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpu: MilliCpu(self.cpu.0 - o.cpu.0),
            memory: MiB(self.memory.0 - o.memory.0),
            gpu: self.gpu - o.gpu,
        }
    }
}

impl Mul<u64> for Resources {
    type Output = Resources;
    fn mul(self, n: u64) -> Resources {
        Resources {
            cpu: MilliCpu(self.cpu.0 * n),
            memory: MiB(self.memory.0 * n),
            gpu: self.gpu * u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
}

/// Splits "4Gi" into its number and suffix, keeping a decimal part as (integer, fraction digits).
fn split_quantity(s: &str) -> Result<(u128, u128, u32, &str), QuantityError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return Err(QuantityError::Malformed(s.to_string()));
    }
    let parse = |d: &str| -> Result<u128, QuantityError> {
        if d.is_empty() {
            Ok(0)
        } else {
            d.parse::<u128>().map_err(|_| QuantityError::TooLarge(s.to_string()))
        }
    };
    Ok((parse(int)?, parse(frac)?, frac.len() as u32, suffix))
}

/// Scales `int.frac * multiplier / divisor` exactly, refusing a result that is not whole.
fn scale(
    s: &str,
    int: u128,
    frac: u128,
    frac_digits: u32,
    num: u128,
    den: u128,
) -> Result<u64, QuantityError> {
    let pow = 10u128.pow(frac_digits);
    let too_large = || QuantityError::TooLarge(s.to_string());
    let total = int
        .checked_mul(pow)
        .and_then(|v| v.checked_add(frac))
        .and_then(|v| v.checked_mul(num))
        .ok_or_else(too_large)?;
    let den = den.checked_mul(pow).ok_or_else(too_large)?;
    if total % den != 0 {
        return Err(QuantityError::TooFine(s.to_string()));
    }
    u64::try_from(total / den).map_err(|_| too_large())
}

impl MilliCpu {
    /// Parses a Kubernetes CPU quantity: "2", "0.5", "500m".
    pub fn parse(s: &str) -> Result<MilliCpu, QuantityError> {
        let (int, frac, digits, suffix) = split_quantity(s)?;
        let (num, den) = match suffix {
            "" => (1000, 1),
            "m" => (1, 1),
            _ => return Err(QuantityError::Malformed(s.trim().to_string())),
        };
        scale(s.trim(), int, frac, digits, num, den).map(MilliCpu)
    }
}

impl MiB {
    /// Parses a Kubernetes memory quantity: "4Gi", "512Mi", "1G", "1073741824".
    pub fn parse(s: &str) -> Result<MiB, QuantityError> {
        const MI: u128 = 1 << 20;
        let (int, frac, digits, suffix) = split_quantity(s)?;
        let bytes_per_unit: u128 = match suffix {
            "" => 1,
            "k" => 1_000,
            "Ki" => 1 << 10,
            "M" => 1_000_000,
            "Mi" => 1 << 20,
            "G" => 1_000_000_000,
            "Gi" => 1 << 30,
            "T" => 1_000_000_000_000,
            "Ti" => 1 << 40,
            _ => return Err(QuantityError::Malformed(s.trim().to_string())),
        };
        // Decimal suffixes rarely land on a whole MiB; round those up, as a request for "1G" must
        // get at least a gigabyte. Binary suffixes must be exact.
        let pow = 10u128.pow(digits);
        let too_large = || QuantityError::TooLarge(s.trim().to_string());
        let bytes_scaled = int
            .checked_mul(pow)
            .and_then(|v| v.checked_add(frac))
            .and_then(|v| v.checked_mul(bytes_per_unit))
            .ok_or_else(too_large)?;
        let den = MI.checked_mul(pow).ok_or_else(too_large)?;
        let binary = bytes_per_unit.is_power_of_two() && bytes_per_unit >= MI;
        if binary {
            return scale(s.trim(), int, frac, digits, bytes_per_unit, MI).map(MiB);
        }
        u64::try_from(bytes_scaled.div_ceil(den)).map(MiB).map_err(|_| too_large())
    }
}

impl fmt::Display for MilliCpu {
    /// Prints the shortest exact Kubernetes form: "2" for 2000m, "500m" otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) { write!(f, "{}", self.0 / 1000) } else { write!(f, "{}m", self.0) }
    }
}

impl fmt::Display for MiB {
    /// Prints "4Gi" when the amount is whole gibibytes, "512Mi" otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1024) && self.0 > 0 {
            write!(f, "{}Gi", self.0 / 1024)
        } else {
            write!(f, "{}Mi", self.0)
        }
    }
}

impl fmt::Display for Resources {
    /// Prints the dimensions that are not zero, `cpu 16, memory 64Gi, gpu 2`, or `nothing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.cpu.0 > 0 {
            parts.push(format!("cpu {}", self.cpu));
        }
        if self.memory.0 > 0 {
            parts.push(format!("memory {}", self.memory));
        }
        if self.gpu > 0 {
            parts.push(format!("gpu {}", self.gpu));
        }
        if parts.is_empty() { f.write_str("nothing") } else { f.write_str(&parts.join(", ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_quantities_parse_like_kubernetes() {
        assert_eq!(MilliCpu::parse("2"), Ok(MilliCpu(2000)));
        assert_eq!(MilliCpu::parse("500m"), Ok(MilliCpu(500)));
        assert_eq!(MilliCpu::parse("0.5"), Ok(MilliCpu(500)));
        assert_eq!(MilliCpu::parse("1.25"), Ok(MilliCpu(1250)));
        assert!(matches!(MilliCpu::parse("0.0001"), Err(QuantityError::TooFine(_))));
        assert!(matches!(MilliCpu::parse("2Gi"), Err(QuantityError::Malformed(_))));
        assert!(matches!(MilliCpu::parse(""), Err(QuantityError::Empty)));
        assert!(matches!(MilliCpu::parse("abc"), Err(QuantityError::Malformed(_))));
    }

    #[test]
    fn memory_quantities_parse_like_kubernetes() {
        assert_eq!(MiB::parse("4Gi"), Ok(MiB(4096)));
        assert_eq!(MiB::parse("512Mi"), Ok(MiB(512)));
        assert_eq!(MiB::parse("1.5Gi"), Ok(MiB(1536)));
        assert_eq!(MiB::parse("1Ti"), Ok(MiB(1 << 20)));
        assert_eq!(MiB::parse("1048576"), Ok(MiB(1)));
        assert_eq!(MiB::parse("1G"), Ok(MiB(954)));
        assert!(matches!(MiB::parse("1.0000001Mi"), Err(QuantityError::TooFine(_))));
        assert!(matches!(MiB::parse("4GB"), Err(QuantityError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn printed_quantities_parse_back_to_themselves(cpu in 1u64..10_000_000, mem in 1u64..100_000_000) {
            prop_assert_eq!(MilliCpu::parse(&MilliCpu(cpu).to_string()), Ok(MilliCpu(cpu)));
            prop_assert_eq!(MiB::parse(&MiB(mem).to_string()), Ok(MiB(mem)));
        }

        #[test]
        fn how_many_never_overfills(free_cpu in 0u64..1_000_000, free_mem in 0u64..1_000_000, cpu in 1u64..10_000, mem in 1u64..10_000) {
            let free = Resources::new(MilliCpu(free_cpu), MiB(free_mem), 0);
            let spec = Resources::new(MilliCpu(cpu), MiB(mem), 0);
            let n = free.how_many(&spec);
            prop_assert!(free.covers(&(spec * n)));
            prop_assert!(!free.covers(&(spec * (n + 1))));
        }
    }
}
