//! Usage: the charges of many instances in a window, added up overall and per group (batch, label,
//! area, carrier, runtime or day), as customers ask for them.
//!
//! Groups are exact sums of charges, so the groups of any grouping add up to the overall total to
//! the micro-unit (see the rounding rule in [`crate::rating`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use eci_core::{Area, Carrier, Runtime};

use crate::catalogue::Catalogue;
use crate::meter::{MeteredInstance, Metering, Window};
use crate::rating::{Piece, Rater, RatingError, Totals, date};

/// What usage is grouped by, as the API spells it: `batch`, `label:<key>`, `area`, `carrier`,
/// `runtime` or `day`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// By batch: what a batch task cost is what its customer asks first.
    Batch,
    /// By the value of one label. Instances without the label fall in the group with key `""`,
    /// together with those whose value is empty.
    Label(String),
    /// By `region/province/city`.
    Area,
    /// By carrier, since prices may differ per carrier.
    Carrier,
    /// By runtime, since each runtime has its own prices.
    Runtime,
    /// By UTC day, `YYYY-MM-DD`. An instance running over midnight counts in both days.
    Day,
}

/// Why a grouping could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupByError {
    /// Only the groupings above can be added up; anything else is a typing mistake to point out.
    #[error("`{0}` is not a grouping; expected one of: batch, label:<key>, area, carrier, runtime, day")]
    Unknown(String),
    /// `label:` alone names no label to group by.
    #[error("`label:` needs a label key, as in `label:team`")]
    EmptyLabelKey,
}

impl FromStr for GroupBy {
    type Err = GroupByError;

    fn from_str(s: &str) -> Result<GroupBy, GroupByError> {
        if let Some(key) = s.strip_prefix("label:") {
            return if key.is_empty() {
                Err(GroupByError::EmptyLabelKey)
            } else {
                Ok(GroupBy::Label(key.into()))
            };
        }
        match s {
            "batch" => Ok(GroupBy::Batch),
            "area" => Ok(GroupBy::Area),
            "carrier" => Ok(GroupBy::Carrier),
            "runtime" => Ok(GroupBy::Runtime),
            "day" => Ok(GroupBy::Day),
            _ => Err(GroupByError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupBy::Batch => f.write_str("batch"),
            GroupBy::Label(key) => write!(f, "label:{key}"),
            GroupBy::Area => f.write_str("area"),
            GroupBy::Carrier => f.write_str("carrier"),
            GroupBy::Runtime => f.write_str("runtime"),
            GroupBy::Day => f.write_str("day"),
        }
    }
}

/// One group's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroup {
    /// The group as the API prints it: a batch id, a label value, `region/province/city`, a carrier,
    /// a runtime or `YYYY-MM-DD`.
    pub key: String,
    /// Distinct instances with at least one charge in the group.
    pub instances: u64,
    /// What the group's charges add up to.
    pub totals: Totals,
}

/// Usage in a window: the groups, sorted by key (none when not grouped), and the overall total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The breakdown asked for, by key so that it reads the same every time.
    pub groups: Vec<UsageGroup>,
    /// Distinct instances with at least one charge in the window.
    pub instances: u64,
    /// The overall total, which the groups add up to exactly.
    pub total: Totals,
}

/// A group's key while adding up: borrowed from the instances, so that adding allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GroupKey<'i> {
    Batch(&'i str),
    Label(&'i str),
    Area(&'i Area),
    Carrier(Carrier),
    Runtime(Runtime),
    /// Days since 1970-01-01 (UTC).
    Day(i64),
}

impl GroupKey<'_> {
    fn of<'i>(group_by: &GroupBy, instance: &'i MeteredInstance, day: i64) -> GroupKey<'i> {
        match group_by {
            GroupBy::Batch => GroupKey::Batch(&instance.batch.0),
            GroupBy::Label(key) => GroupKey::Label(instance.labels.get(key).map_or("", String::as_str)),
            GroupBy::Area => GroupKey::Area(&instance.area),
            GroupBy::Carrier => GroupKey::Carrier(instance.carrier),
            GroupBy::Runtime => GroupKey::Runtime(instance.runtime),
            GroupBy::Day => GroupKey::Day(day),
        }
    }

    fn render(&self) -> String {
        match self {
            GroupKey::Batch(s) | GroupKey::Label(s) => (*s).to_owned(),
            GroupKey::Area(a) => format!("{}/{}/{}", a.region, a.province, a.city),
            GroupKey::Carrier(c) => c.as_str().to_owned(),
            GroupKey::Runtime(r) => r.as_str().to_owned(),
            GroupKey::Day(day) => date(*day).to_string(),
        }
    }
}

/// The usage of `instances` in `window` as of `now_ms`, grouped by `group_by` if given.
pub fn usage<'i>(
    instances: impl IntoIterator<Item = &'i MeteredInstance>,
    catalogue: &Catalogue,
    metering: &Metering,
    window: Window,
    now_ms: i64,
    group_by: Option<&GroupBy>,
) -> Result<Usage, RatingError> {
    let mut rater = Rater::new(catalogue, metering, window, now_ms);
    let mut total = Totals::default();
    let mut counted = 0u64;
    let mut slots: HashMap<GroupKey<'i>, usize> = HashMap::new();
    let mut groups: Vec<(GroupKey<'i>, u64, Totals)> = Vec::new();
    // Instances of one batch tend to come together: a repeat of the previous key skips the hash.
    let mut last: Option<(GroupKey<'i>, usize)> = None;
    for instance in instances {
        let mut charged = false;
        // An instance's charges come in time order, so it never returns to a group (a day) it has
        // left: a group other than the one it was last counted in is a new one for it.
        let mut counted_in = None;
        rater.pieces(instance, |piece: &Piece| {
            charged = true;
            total.add_parts(piece.ms, &piece.quantities, &piece.amounts)?;
            let Some(group_by) = group_by else {
                return Ok(());
            };
            let key = GroupKey::of(group_by, instance, piece.day);
            let slot = match last {
                Some((k, slot)) if k == key => slot,
                _ => *slots.entry(key).or_insert_with(|| {
                    groups.push((key, 0, Totals::default()));
                    groups.len() - 1
                }),
            };
            last = Some((key, slot));
            if counted_in != Some(slot) {
                groups[slot].1 += 1;
                counted_in = Some(slot);
            }
            groups[slot].2.add_parts(piece.ms, &piece.quantities, &piece.amounts)
        })?;
        counted += u64::from(charged);
    }
    // Distinct areas could print alike (codes are not checked here); such groups are one group.
    let mut by_key: BTreeMap<String, (u64, Totals)> = BTreeMap::new();
    for (key, instances, totals) in groups {
        let entry = by_key.entry(key.render()).or_default();
        entry.0 += instances;
        entry.1.merge(&totals)?;
    }
    let groups =
        by_key.into_iter().map(|(key, (instances, totals))| UsageGroup { key, instances, totals }).collect();
    Ok(Usage { groups, instances: counted, total })
}

#[cfg(test)]
mod tests {
    use eci_core::{BatchId, Runtime};
    use proptest::prelude::*;

    use super::*;
    use crate::catalogue::Price;
    use crate::testing::*;

    fn all_groupings() -> [GroupBy; 6] {
        [
            GroupBy::Batch,
            GroupBy::Label("team".into()),
            GroupBy::Area,
            GroupBy::Carrier,
            GroupBy::Runtime,
            GroupBy::Day,
        ]
    }

    #[test]
    fn groupings_read_and_print_as_the_api_spells_them() {
        for g in all_groupings() {
            assert_eq!(g.to_string().parse::<GroupBy>(), Ok(g));
        }
        assert_eq!("label:team".parse(), Ok(GroupBy::Label("team".into())));
        assert_eq!("label:".parse::<GroupBy>(), Err(GroupByError::EmptyLabelKey));
        assert_eq!("idc".parse::<GroupBy>(), Err(GroupByError::Unknown("idc".into())));
        assert_eq!(
            "Batch".parse::<GroupBy>().unwrap_err().to_string(),
            "`Batch` is not a grouping; expected one of: batch, label:<key>, area, carrier, runtime, day"
        );
    }

    /// Three 1 vCPU / 1 GiB instances of a minute each at 33 / 7: 2400 micro-units apiece. The
    /// first runs over midnight; the third has no team.
    fn three_minutes() -> (Vec<MeteredInstance>, Catalogue) {
        let mut over_midnight =
            instance("i-1", 1000, 1024, 0, Some(at(1, 23, 59, 30, 0)), Some(at(2, 0, 0, 30, 0)));
        over_midnight.labels.insert("team".into(), "red".into());
        let mut red = instance("i-2", 1000, 1024, 0, Some(at(2, 10, 0, 0, 0)), Some(at(2, 10, 1, 0, 0)));
        red.labels.insert("team".into(), "red".into());
        red.batch = BatchId("b-2".into());
        let mut untagged = instance("i-3", 1000, 1024, 0, Some(at(2, 11, 0, 0, 0)), Some(at(2, 11, 1, 0, 0)));
        untagged.area = eci_core::Area::new("north-china", "hebei", "tangshan");
        untagged.runtime = Runtime::Vm;
        let vm = Price { runtime: Runtime::Vm, ..flat_price("v-1", 0, 33, 7, 0) };
        (
            vec![over_midnight, red, untagged],
            Catalogue::new(vec![flat_price("c-1", 0, 33, 7, 0), vm]).unwrap(),
        )
    }

    fn groups(usage: &Usage) -> Vec<(&str, u64, i64, u64)> {
        usage
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.instances, g.totals.billed_ms, g.totals.amounts.total.0))
            .collect()
    }

    #[test]
    fn usage_is_grouped_by_the_key_asked_for() {
        let (instances, catalogue) = three_minutes();
        let window = Window::new(at(1, 0, 0, 0, 0), at(3, 0, 0, 0, 0)).unwrap();
        let by =
            |g: GroupBy| usage(&instances, &catalogue, &Metering::default(), window, 0, Some(&g)).unwrap();

        let by_team = by(GroupBy::Label("team".into()));
        assert_eq!(groups(&by_team), [("", 1, 60_000, 2400), ("red", 2, 120_000, 4800)]);
        assert_eq!(
            (by_team.instances, by_team.total.billed_ms, by_team.total.amounts.total.0),
            (3, 180_000, 7200)
        );

        assert_eq!(
            groups(&by(GroupBy::Day)),
            [("2026-11-01", 1, 30_000, 1200), ("2026-11-02", 3, 150_000, 6000)]
        );
        assert_eq!(groups(&by(GroupBy::Batch)), [("b-1", 2, 120_000, 4800), ("b-2", 1, 60_000, 2400)]);
        assert_eq!(
            groups(&by(GroupBy::Area)),
            [
                ("north-china/hebei/tangshan", 1, 60_000, 2400),
                ("south-china/guangdong/shenzhen", 2, 120_000, 4800)
            ]
        );
        assert_eq!(groups(&by(GroupBy::Runtime)), [("container", 2, 120_000, 4800), ("vm", 1, 60_000, 2400)]);
        assert_eq!(groups(&by(GroupBy::Carrier)), [("telecom", 3, 180_000, 7200)]);

        let ungrouped = usage(&instances, &catalogue, &Metering::default(), window, 0, None).unwrap();
        assert!(ungrouped.groups.is_empty());
        assert_eq!(ungrouped.total, by_team.total);
    }

    #[test]
    fn an_instance_without_charges_in_the_window_is_not_counted() {
        let (instances, catalogue) = three_minutes();
        let day_two = Window::new(at(2, 0, 0, 0, 0), at(2, 10, 0, 0, 0)).unwrap();
        let usage =
            usage(&instances, &catalogue, &Metering::default(), day_two, 0, Some(&GroupBy::Batch)).unwrap();
        assert_eq!(groups(&usage), [("b-1", 1, 30_000, 1200)]);
        assert_eq!(usage.instances, 1);
    }

    proptest! {
        #[test]
        fn groups_add_up_to_the_total_exactly_for_every_grouping(
            catalogue in a_catalogue(),
            instances in some_instances(),
            (from, _, to) in three_moments(),
            now in a_now(),
        ) {
            let window = Window::new(from, to).unwrap();
            let overall = usage(&instances, &catalogue, &Metering::default(), window, now, None);
            for group_by in all_groupings() {
                let grouped = usage(&instances, &catalogue, &Metering::default(), window, now, Some(&group_by));
                let (Ok(overall), Ok(grouped)) = (&overall, grouped) else {
                    prop_assert!(overall.is_err());
                    continue;
                };
                prop_assert_eq!(grouped.total, overall.total);
                prop_assert_eq!(grouped.instances, overall.instances);
                let mut sum = Totals::default();
                for g in &grouped.groups {
                    sum.merge(&g.totals).unwrap();
                }
                prop_assert_eq!(sum, grouped.total, "grouped by {}", group_by);
                prop_assert!(grouped.groups.windows(2).all(|w| w[0].key < w[1].key));
                let counted: u64 = grouped.groups.iter().map(|g| g.instances).sum();
                if group_by == GroupBy::Day {
                    prop_assert!(counted >= grouped.instances);
                } else {
                    prop_assert_eq!(counted, grouped.instances, "grouped by {}", group_by);
                }
            }
        }
    }
}
