//! The price catalogue: what a second of CPU, memory and GPU costs, by runtime and by area/carrier
//! tier, in versions that each take effect at a moment.
//!
//! A price is never edited in place. A change is a new version with a later `effective_from_ms`, so
//! any past moment can be rated again to the same amount, and a correction is an auditable new row.
//!
//! # Which price applies
//!
//! An instance at moment `t` pays, among the prices for its runtime whose tier matches its area and
//! carrier and whose `effective_from_ms <= t`, the one of the most specific tier, and within that
//! tier the latest version.
//!
//! Specificity is a total order on tiers: area depth first (none, region, province, city), then
//! whether a carrier is set. As a rank, `2 * depth + (carrier set)`, from 0 (anywhere, any carrier)
//! to 7 (one city on one carrier). Area beats carrier: a province price outranks a region + carrier
//! price, because an operator prices by where the machines are before by whose lines reach them.
//!
//! Two different tiers that both match one instance never have the same rank (every level a tier
//! sets must equal the instance's), so the rule always picks one tier, never a tie.
//!
//! A version has no end, only successors: once some price applies to an instance it applies at every
//! later moment too. An instance can only be unpriced from its start until the first price that
//! matches it takes effect.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use eci_core::fleet::is_area_code;
use eci_core::{Area, Carrier, Runtime};
use serde::{Deserialize, Serialize};

/// Which instances a price is for, by where they run and which carrier reaches them. An unset level
/// matches anything; a level may only be set when the one above it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct PriceTier {
    /// The coarsest level an operator prices by: machines in one region cost alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Only with `region`, so that a tier always names one place in the hierarchy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    /// Only with `province`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Lines of different carriers cost the operator differently, wherever the machines are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<Carrier>,
}

impl PriceTier {
    /// A tier from the levels it selects; `None` matches any.
    pub fn new(
        region: Option<&str>,
        province: Option<&str>,
        city: Option<&str>,
        carrier: Option<Carrier>,
    ) -> Self {
        PriceTier {
            region: region.map(str::to_owned),
            province: province.map(str::to_owned),
            city: city.map(str::to_owned),
            carrier,
        }
    }

    /// True when every level this tier sets equals the instance's.
    pub fn matches(&self, area: &Area, carrier: Carrier) -> bool {
        let level = |tier: &Option<String>, code: &str| tier.as_deref().is_none_or(|t| t == code);
        level(&self.region, &area.region)
            && level(&self.province, &area.province)
            && level(&self.city, &area.city)
            && self.carrier.is_none_or(|c| c == carrier)
    }

    /// How many area levels are set: 0 (anywhere) to 3 (a city).
    pub fn depth(&self) -> u8 {
        [&self.region, &self.province, &self.city].iter().map(|level| u8::from(level.is_some())).sum()
    }

    /// The rank described in the module docs: `2 * depth + (carrier set)`; higher is more specific.
    pub fn specificity(&self) -> u8 {
        2 * self.depth() + u8::from(self.carrier.is_some())
    }

    /// Why this tier cannot be in a catalogue, if it cannot.
    fn defect(&self) -> Option<&'static str> {
        if self.province.is_some() && self.region.is_none() {
            return Some("a province needs its region");
        }
        if self.city.is_some() && self.province.is_none() {
            return Some("a city needs its province");
        }
        let codes = [&self.region, &self.province, &self.city];
        if codes.into_iter().flatten().any(|code| !is_area_code(code)) {
            return Some("area codes must be lowercase pinyin words joined by `-`");
        }
        None
    }
}

impl fmt::Display for PriceTier {
    /// `region/province/city/carrier`, an unset level printed as `*`: `south-china/guangdong/*/telecom`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let carrier = self.carrier.map_or("*", |c| c.as_str());
        write!(f, "{}/{}/{}/{carrier}", or_star(&self.region), or_star(&self.province), or_star(&self.city))
    }
}

fn or_star(code: &Option<String>) -> &str {
    code.as_deref().unwrap_or("*")
}

/// One version of the price of a runtime in a tier, in integer micro-units of currency per second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Price {
    /// Chosen by whoever writes the catalogue (`price-vm-gd-2026-11`) and unique in it; invoice lines
    /// name prices by it.
    pub id: String,
    /// Runtimes cost differently to host (a VM more than a container), so each has its own prices.
    pub runtime: Runtime,
    /// Where and through which carrier the price applies; anywhere when left out.
    #[serde(default)]
    pub tier: PriceTier,
    /// From this moment (UTC milliseconds) on, this version replaces earlier ones of its tier.
    pub effective_from_ms: i64,
    /// Each resource is priced on its own, so that a line reads as unit price times quantity.
    pub cpu_micros_per_vcpu_second: u64,
    /// The memory part of the price, per GiB-second.
    pub memory_micros_per_gib_second: u64,
    /// The GPU part of the price, per GPU-second; instances without GPUs never pay it.
    pub gpu_micros_per_gpu_second: u64,
}

/// Why a list of prices is not a catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// Invoice lines and URLs name prices by id, so an id must be a plain word.
    #[error("price id `{0}` must be non-empty and made of letters, digits, `-`, `_` and `.`")]
    InvalidId(String),
    /// Two prices with one id would make the invoice lines that name it ambiguous.
    #[error("price id `{0}` is used by two prices")]
    DuplicateId(String),
    /// A tier that names no one place in the area hierarchy cannot be ranked by specificity.
    #[error("price `{id}` has an invalid tier `{tier}`: {why}")]
    InvalidTier {
        /// The price whose tier it is.
        id: String,
        /// The tier as printed.
        tier: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two versions of one tier from one moment would leave the price from then on undecided.
    #[error(
        "prices `{first}` and `{second}` are both the {runtime} price of tier `{tier}` from {effective_from_ms} ms"
    )]
    DuplicateVersion {
        /// The price listed first.
        first: String,
        /// The price that repeats its version.
        second: String,
        /// The runtime both are for.
        runtime: Runtime,
        /// The tier both are for, as printed.
        tier: String,
        /// The moment both take effect.
        effective_from_ms: i64,
    },
}

/// A validated set of prices, indexed so that the prices of one kind of instance can be laid out on
/// a [`Timeline`] in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Price>", into = "Vec<Price>")]
pub struct Catalogue {
    prices: Vec<Price>,
    /// Per runtime (in `Runtime::ALL` order), indexes into `prices` by ascending `effective_from_ms`.
    by_runtime: [Vec<usize>; 3],
}

impl Catalogue {
    /// Checks the prices (ids, tiers, one version per tier and moment) and indexes them.
    pub fn new(prices: Vec<Price>) -> Result<Catalogue, CatalogueError> {
        let mut ids = BTreeSet::new();
        let mut versions = BTreeMap::new();
        for price in &prices {
            let id_ok = !price.id.is_empty()
                && price.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !id_ok {
                return Err(CatalogueError::InvalidId(price.id.clone()));
            }
            if !ids.insert(price.id.as_str()) {
                return Err(CatalogueError::DuplicateId(price.id.clone()));
            }
            if let Some(why) = price.tier.defect() {
                return Err(CatalogueError::InvalidTier {
                    id: price.id.clone(),
                    tier: price.tier.to_string(),
                    why,
                });
            }
            let version = (price.runtime, &price.tier, price.effective_from_ms);
            if let Some(first) = versions.insert(version, price.id.as_str()) {
                return Err(CatalogueError::DuplicateVersion {
                    first: first.to_owned(),
                    second: price.id.clone(),
                    runtime: price.runtime,
                    tier: price.tier.to_string(),
                    effective_from_ms: price.effective_from_ms,
                });
            }
        }
        let by_runtime = Runtime::ALL.map(|runtime| {
            let mut of_runtime: Vec<usize> =
                (0..prices.len()).filter(|&i| prices[i].runtime == runtime).collect();
            of_runtime.sort_by_key(|&i| prices[i].effective_from_ms);
            of_runtime
        });
        Ok(Catalogue { prices, by_runtime })
    }

    /// Every price, in the order the catalogue was given.
    pub fn prices(&self) -> &[Price] {
        &self.prices
    }

    /// The price an instance of `runtime` in `area` on `carrier` pays at `at_ms`, straight from the
    /// rule in the module docs. Rating many moments of one kind of instance goes through its
    /// [`timeline`](Self::timeline) instead, which answers by binary search.
    pub fn price_at(&self, runtime: Runtime, area: &Area, carrier: Carrier, at_ms: i64) -> Option<&Price> {
        self.of_runtime(runtime)
            .map(|i| &self.prices[i])
            .filter(|p| p.effective_from_ms <= at_ms && p.tier.matches(area, carrier))
            .max_by_key(|p| (p.tier.specificity(), p.effective_from_ms))
    }

    /// Every moment the price of an instance of `runtime` in `area` on `carrier` changes, with the
    /// price from then on.
    pub fn timeline(&self, runtime: Runtime, area: &Area, carrier: Carrier) -> Timeline<'_> {
        // The latest version seen so far of the one tier that matches at each rank (see module docs).
        let mut by_rank: [Option<usize>; 8] = [None; 8];
        let mut steps: Vec<Step> = Vec::new();
        let order = &self.by_runtime[runtime_index(runtime)];
        let mut next = 0;
        while next < order.len() {
            let from_ms = self.prices[order[next]].effective_from_ms;
            // All versions taking effect at one moment land before the price at that moment is read.
            while let Some(&i) = order.get(next).filter(|&&i| self.prices[i].effective_from_ms == from_ms) {
                let tier = &self.prices[i].tier;
                if tier.matches(area, carrier) {
                    by_rank[usize::from(tier.specificity())] = Some(i);
                }
                next += 1;
            }
            let current = by_rank.iter().rev().flatten().next().copied();
            if let Some(price) = current.filter(|&p| steps.last().is_none_or(|s| s.price != p)) {
                steps.push(Step { from_ms, price });
            }
        }
        Timeline { prices: &self.prices, steps }
    }

    fn of_runtime(&self, runtime: Runtime) -> impl Iterator<Item = usize> + '_ {
        self.by_runtime[runtime_index(runtime)].iter().copied()
    }
}

impl TryFrom<Vec<Price>> for Catalogue {
    type Error = CatalogueError;

    fn try_from(prices: Vec<Price>) -> Result<Catalogue, CatalogueError> {
        Catalogue::new(prices)
    }
}

impl From<Catalogue> for Vec<Price> {
    fn from(catalogue: Catalogue) -> Vec<Price> {
        catalogue.prices
    }
}

/// Where a runtime sits in per-runtime arrays (`Runtime::ALL` order).
pub(crate) fn runtime_index(runtime: Runtime) -> usize {
    match runtime {
        Runtime::Container => 0,
        Runtime::Rich => 1,
        Runtime::Vm => 2,
    }
}

/// The moment a price starts to apply on a timeline, and which price (an index into the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) from_ms: i64,
    pub(crate) price: usize,
}

/// The prices one kind of instance (runtime, area, carrier) pays over time: a step at every moment
/// the applicable price changes, and no step where it stays the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline<'c> {
    prices: &'c [Price],
    pub(crate) steps: Vec<Step>,
}

impl<'c> Timeline<'c> {
    /// The price in force at `at_ms`; `None` before any price for this kind of instance.
    pub fn at(&self, at_ms: i64) -> Option<&'c Price> {
        let passed = self.passed(at_ms);
        passed.checked_sub(1).map(|i| self.price(i))
    }

    /// The first moment after `at_ms` at which the price changes, if it ever does.
    pub fn next_change_after(&self, at_ms: i64) -> Option<i64> {
        self.steps.get(self.passed(at_ms)).map(|s| s.from_ms)
    }

    /// Each change as (moment, price from then on), earliest first.
    pub fn changes(&self) -> impl Iterator<Item = (i64, &'c Price)> + '_ {
        self.steps.iter().map(|s| (s.from_ms, &self.prices[s.price]))
    }

    /// How many steps have taken effect by `at_ms`.
    pub(crate) fn passed(&self, at_ms: i64) -> usize {
        self.steps.partition_point(|s| s.from_ms <= at_ms)
    }

    fn price(&self, step: usize) -> &'c Price {
        &self.prices[self.steps[step].price]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{HORIZON_MS, a_carrier, a_catalogue, a_runtime, an_area, shenzhen};
    use proptest::prelude::*;

    fn price(id: &str, tier: PriceTier, effective_from_ms: i64, cpu: u64) -> Price {
        Price {
            id: id.to_owned(),
            runtime: Runtime::Container,
            tier,
            effective_from_ms,
            cpu_micros_per_vcpu_second: cpu,
            memory_micros_per_gib_second: 1,
            gpu_micros_per_gpu_second: 0,
        }
    }

    #[test]
    fn the_most_specific_matching_tier_wins_and_area_beats_carrier() {
        let catalogue = Catalogue::new(vec![
            price("anywhere", PriceTier::default(), 0, 10),
            price("south", PriceTier::new(Some("south-china"), None, None, None), 0, 11),
            price(
                "south-telecom",
                PriceTier::new(Some("south-china"), None, None, Some(Carrier::Telecom)),
                0,
                12,
            ),
            price("guangdong", PriceTier::new(Some("south-china"), Some("guangdong"), None, None), 1_000, 13),
            price(
                "shenzhen-unicom",
                PriceTier::new(
                    Some("south-china"),
                    Some("guangdong"),
                    Some("shenzhen"),
                    Some(Carrier::Unicom),
                ),
                0,
                14,
            ),
            price("north", PriceTier::new(Some("north-china"), None, None, None), 0, 15),
        ])
        .unwrap();
        let at = |carrier, t| {
            catalogue.price_at(Runtime::Container, &shenzhen(), carrier, t).map(|p| p.id.as_str())
        };
        assert_eq!(at(Carrier::Telecom, 0), Some("south-telecom"));
        assert_eq!(at(Carrier::Mobile, 0), Some("south"));
        assert_eq!(at(Carrier::Unicom, 0), Some("shenzhen-unicom"));
        // The province price is not in force yet at 999; from 1000 it outranks region + carrier.
        assert_eq!(at(Carrier::Telecom, 999), Some("south-telecom"));
        assert_eq!(at(Carrier::Telecom, 1_000), Some("guangdong"));
        assert_eq!(at(Carrier::Unicom, 1_000), Some("shenzhen-unicom"));
        let beijing = Area::new("north-china", "beijing", "beijing");
        assert_eq!(catalogue.price_at(Runtime::Container, &beijing, Carrier::Bgp, 0).unwrap().id, "north");
        assert_eq!(catalogue.price_at(Runtime::Vm, &beijing, Carrier::Bgp, 0), None);
        assert_eq!(catalogue.price_at(Runtime::Container, &shenzhen(), Carrier::Bgp, -1), None);
    }

    #[test]
    fn the_latest_version_of_a_tier_wins() {
        let catalogue = Catalogue::new(vec![
            price("v2", PriceTier::default(), 2_000, 20),
            price("v1", PriceTier::default(), 1_000, 10),
            price("v3", PriceTier::default(), 3_000, 30),
        ])
        .unwrap();
        let timeline = catalogue.timeline(Runtime::Container, &shenzhen(), Carrier::Telecom);
        let ids: Vec<_> = timeline.changes().map(|(t, p)| (t, p.id.as_str())).collect();
        assert_eq!(ids, [(1_000, "v1"), (2_000, "v2"), (3_000, "v3")]);
        assert_eq!(timeline.at(999), None);
        assert_eq!(timeline.at(2_500).unwrap().id, "v2");
        assert_eq!(timeline.next_change_after(999), Some(1_000));
        assert_eq!(timeline.next_change_after(2_000), Some(3_000));
        assert_eq!(timeline.next_change_after(3_000), None);
    }

    #[test]
    fn a_new_version_of_an_outranked_tier_is_not_a_change() {
        let guangdong = PriceTier::new(Some("south-china"), Some("guangdong"), None, None);
        let catalogue = Catalogue::new(vec![
            price("base-1", PriceTier::default(), 0, 10),
            price("gd", guangdong, 500, 20),
            price("base-2", PriceTier::default(), 1_000, 30),
        ])
        .unwrap();
        let timeline = catalogue.timeline(Runtime::Container, &shenzhen(), Carrier::Telecom);
        let ids: Vec<_> = timeline.changes().map(|(t, p)| (t, p.id.as_str())).collect();
        assert_eq!(ids, [(0, "base-1"), (500, "gd")]);
    }

    #[test]
    fn tiers_print_unset_levels_as_stars() {
        let t = PriceTier::new(Some("south-china"), Some("guangdong"), None, Some(Carrier::Telecom));
        assert_eq!(t.to_string(), "south-china/guangdong/*/telecom");
        assert_eq!(PriceTier::default().to_string(), "*/*/*/*");
    }

    #[test]
    fn specificity_ranks_area_depth_before_carrier() {
        let ranks = [
            PriceTier::new(None, None, None, None),
            PriceTier::new(None, None, None, Some(Carrier::Bgp)),
            PriceTier::new(Some("a"), None, None, None),
            PriceTier::new(Some("a"), None, None, Some(Carrier::Bgp)),
            PriceTier::new(Some("a"), Some("b"), None, None),
            PriceTier::new(Some("a"), Some("b"), None, Some(Carrier::Bgp)),
            PriceTier::new(Some("a"), Some("b"), Some("c"), None),
            PriceTier::new(Some("a"), Some("b"), Some("c"), Some(Carrier::Bgp)),
        ]
        .map(|t| t.specificity());
        assert_eq!(ranks, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_catalogue_refuses_what_it_cannot_rate_unambiguously() {
        let base = || price("p1", PriceTier::default(), 0, 1);
        let err = |prices| Catalogue::new(prices).unwrap_err();
        assert_eq!(
            err(vec![base(), price("p2", PriceTier::default(), 0, 2)]),
            CatalogueError::DuplicateVersion {
                first: "p1".into(),
                second: "p2".into(),
                runtime: Runtime::Container,
                tier: "*/*/*/*".into(),
                effective_from_ms: 0,
            }
        );
        assert_eq!(
            err(vec![base(), price("p1", PriceTier::default(), 5, 2)]),
            CatalogueError::DuplicateId("p1".into())
        );
        assert_eq!(err(vec![price("", PriceTier::default(), 0, 1)]), CatalogueError::InvalidId("".into()));
        assert_eq!(
            err(vec![price("a,b", PriceTier::default(), 0, 1)]),
            CatalogueError::InvalidId("a,b".into())
        );
        let city_alone = PriceTier::new(Some("south-china"), None, Some("shenzhen"), None);
        assert_eq!(
            err(vec![price("p", city_alone, 0, 1)]).to_string(),
            "price `p` has an invalid tier `south-china/*/shenzhen/*`: a city needs its province"
        );
        let province_alone = PriceTier::new(None, Some("guangdong"), None, None);
        assert!(matches!(err(vec![price("p", province_alone, 0, 1)]), CatalogueError::InvalidTier { .. }));
        let slash = PriceTier::new(Some("south/china"), None, None, None);
        assert!(matches!(err(vec![price("p", slash, 0, 1)]), CatalogueError::InvalidTier { .. }));
        // The same tier and moment for another runtime is another price.
        let mut vm = base();
        vm.id = "p2".into();
        vm.runtime = Runtime::Vm;
        assert!(Catalogue::new(vec![base(), vm]).is_ok());
    }

    #[test]
    fn a_catalogue_reads_from_json_and_is_validated_on_the_way_in() {
        let json = r#"[
            {"id": "c-1", "runtime": "container", "effective_from_ms": 0,
             "cpu_micros_per_vcpu_second": 12, "memory_micros_per_gib_second": 3, "gpu_micros_per_gpu_second": 0},
            {"id": "c-gd", "runtime": "container", "tier": {"region": "south-china", "province": "guangdong", "carrier": "telecom"},
             "effective_from_ms": 0, "cpu_micros_per_vcpu_second": 10, "memory_micros_per_gib_second": 2, "gpu_micros_per_gpu_second": 0}
        ]"#;
        let catalogue: Catalogue = serde_json::from_str(json).unwrap();
        assert_eq!(catalogue.prices()[1].tier.to_string(), "south-china/guangdong/*/telecom");
        let back: Catalogue = serde_json::from_str(&serde_json::to_string(&catalogue).unwrap()).unwrap();
        assert_eq!(back, catalogue);
        let twice = json.replace("\"c-gd\"", "\"c-1\"");
        let refused = serde_json::from_str::<Catalogue>(&twice).unwrap_err();
        assert!(refused.to_string().contains("price id `c-1` is used by two prices"), "{refused}");
    }

    proptest! {
        #[test]
        fn a_timeline_agrees_with_the_rule_at_every_moment(
            catalogue in a_catalogue(),
            area in an_area(),
            carrier in a_carrier(),
            runtime in a_runtime(),
            probes in prop::collection::vec(-1i64..HORIZON_MS, 1..20),
        ) {
            let timeline = catalogue.timeline(runtime, &area, carrier);
            let mut moments = probes;
            for p in catalogue.prices() {
                moments.extend([p.effective_from_ms - 1, p.effective_from_ms, p.effective_from_ms + 1]);
            }
            for t in moments {
                prop_assert_eq!(timeline.at(t), catalogue.price_at(runtime, &area, carrier, t), "at {}", t);
                if let Some(next) = timeline.next_change_after(t) {
                    prop_assert!(next > t);
                    prop_assert_ne!(timeline.at(next), timeline.at(t));
                    prop_assert_eq!(timeline.at(next - 1), timeline.at(t));
                }
            }
        }
    }
}
