//! Generators and builders the property and example tests of every module share.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use eci_core::{Area, BatchId, Carrier, InstanceId, MiB, MilliCpu, Resources, Runtime};
use proptest::prelude::*;
use proptest::sample::select;

use crate::catalogue::{Catalogue, Price, PriceTier};
use crate::meter::{DAY_MS, MeteredInstance};

/// Prices take effect, and instances run, within this many days from the epoch (plus a little).
pub const HORIZON_MS: i64 = 4 * DAY_MS;

/// UTC milliseconds of a moment on a day of November 2026, for examples that read like a clock.
pub fn at(day: u32, hour: u32, minute: u32, second: u32, milli: u32) -> i64 {
    NaiveDate::from_ymd_opt(2026, 11, day)
        .and_then(|d| d.and_hms_milli_opt(hour, minute, second, milli))
        .expect("a valid moment")
        .and_utc()
        .timestamp_millis()
}

pub fn shenzhen() -> Area {
    Area::new("south-china", "guangdong", "shenzhen")
}

pub fn instance(
    id: &str,
    cpu: u64,
    memory: u64,
    gpu: u32,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
) -> MeteredInstance {
    MeteredInstance {
        id: InstanceId(id.to_owned()),
        batch: BatchId("b-1".to_owned()),
        runtime: Runtime::Container,
        area: shenzhen(),
        carrier: Carrier::Telecom,
        resources: Resources::new(MilliCpu(cpu), MiB(memory), gpu),
        labels: BTreeMap::new(),
        started_ms,
        ended_ms,
    }
}

/// A container price for anywhere, in micro-units per vCPU-, GiB- and GPU-second.
pub fn flat_price(id: &str, effective_from_ms: i64, cpu: u64, memory: u64, gpu: u64) -> Price {
    Price {
        id: id.to_owned(),
        runtime: Runtime::Container,
        tier: PriceTier::default(),
        effective_from_ms,
        cpu_micros_per_vcpu_second: cpu,
        memory_micros_per_gib_second: memory,
        gpu_micros_per_gpu_second: gpu,
    }
}

const AREAS: &[(&str, &str, &str)] = &[
    ("north", "hebei", "tangshan"),
    ("north", "hebei", "baoding"),
    ("north", "shanxi", "taiyuan"),
    ("south", "guangdong", "shenzhen"),
    ("south", "guangdong", "foshan"),
];

pub fn an_area() -> impl Strategy<Value = Area> {
    select(AREAS).prop_map(|(r, p, c)| Area::new(r, p, c))
}

pub fn a_carrier() -> impl Strategy<Value = Carrier> {
    select(Carrier::ALL.to_vec())
}

/// The runtimes generated catalogues price; the third is left for the unpriced examples.
pub fn a_runtime() -> impl Strategy<Value = Runtime> {
    select(vec![Runtime::Container, Runtime::Vm])
}

/// A tier cut from a real area at a random depth, with or without a carrier.
pub fn a_tier() -> impl Strategy<Value = PriceTier> {
    (an_area(), 0u8..=3, prop::option::of(a_carrier())).prop_map(|(area, depth, carrier)| PriceTier {
        region: (depth >= 1).then_some(area.region),
        province: (depth >= 2).then_some(area.province),
        city: (depth >= 3).then_some(area.city),
        carrier,
    })
}

/// A moment before the horizon: often a midnight or a whole second, as real ones are.
pub fn a_moment() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0..=HORIZON_MS / DAY_MS).prop_map(|d| d * DAY_MS),
        (0..HORIZON_MS / 1_000).prop_map(|s| s * 1_000),
        0..HORIZON_MS,
    ]
}

/// Up to 10 prices in random tiers, and usually a base price per runtime from the epoch (sometimes
/// later, sometimes none, so that some instances are unpriced for a while).
pub fn a_catalogue() -> impl Strategy<Value = Catalogue> {
    let unit_prices = (0u64..2_000, 0u64..2_000, prop_oneof![Just(0u64), 0u64..100_000]);
    let a_price = (a_runtime(), a_tier(), a_moment(), unit_prices.clone());
    let a_base = prop_oneof![8 => Just(Some(0)), 1 => a_moment().prop_map(Some), 1 => Just(None)];
    (prop::collection::vec(a_price, 0..10), [a_base.clone(), a_base], [unit_prices.clone(), unit_prices])
        .prop_map(|(drawn, bases, base_prices)| {
            let based = [Runtime::Container, Runtime::Vm].into_iter().zip(bases).zip(base_prices);
            let bases = based
                .filter_map(|((runtime, from), prices)| Some((runtime, PriceTier::default(), from?, prices)));
            let mut seen = BTreeSet::new();
            let mut prices = Vec::new();
            for (i, (runtime, tier, from, (cpu, memory, gpu))) in bases.chain(drawn).enumerate() {
                if seen.insert((runtime, tier.clone(), from)) {
                    prices.push(Price {
                        id: format!("price-{i}"),
                        runtime,
                        tier,
                        effective_from_ms: from,
                        cpu_micros_per_vcpu_second: cpu,
                        memory_micros_per_gib_second: memory,
                        gpu_micros_per_gpu_second: gpu,
                    });
                }
            }
            Catalogue::new(prices).expect("generated prices are distinct and well nested")
        })
}

/// An instance that mostly started before the horizon, ran for a minute or for days, and has
/// often ended; its id is made unique by [`some_instances`].
pub fn an_instance() -> impl Strategy<Value = MeteredInstance> {
    let resources = (
        prop_oneof![select(vec![250u64, 500, 1000, 2000, 4000, 32_000]), 0u64..100_000],
        prop_oneof![select(vec![512u64, 1024, 1536, 4096, 98_304]), 0u64..300_000],
        prop_oneof![3 => Just(0u32), 1 => 1u32..=8],
    );
    let life = (
        prop_oneof![1 => Just(None), 9 => a_moment().prop_map(Some)],
        prop_oneof![3 => Just(None), 7 => prop_oneof![0i64..120_000, 0i64..2 * DAY_MS].prop_map(Some)],
    );
    let labels = prop::option::of(select(vec!["red", "blue", ""]));
    (a_runtime(), an_area(), a_carrier(), resources, life, 0u8..3, labels).prop_map(
        |(runtime, area, carrier, (cpu, memory, gpu), (started_ms, ran_ms), batch, team)| MeteredInstance {
            id: InstanceId(String::new()),
            batch: BatchId(format!("b-{batch}")),
            runtime,
            area,
            carrier,
            resources: Resources::new(MilliCpu(cpu), MiB(memory), gpu),
            labels: team.map(|t| [("team".to_owned(), t.to_owned())].into()).unwrap_or_default(),
            started_ms,
            ended_ms: started_ms.zip(ran_ms).map(|(s, ran)| s + ran),
        },
    )
}

pub fn some_instances() -> impl Strategy<Value = Vec<MeteredInstance>> {
    prop::collection::vec(an_instance(), 0..12).prop_map(|mut instances| {
        for (i, instance) in instances.iter_mut().enumerate() {
            instance.id = InstanceId(format!("i-{i}"));
        }
        instances
    })
}

/// A `now` around the instances' lives: sometimes before a live one started.
pub fn a_now() -> impl Strategy<Value = i64> {
    0..HORIZON_MS + 2 * DAY_MS
}

/// Three ordered moments a <= b <= c around the horizon, edges of two adjacent windows.
pub fn three_moments() -> impl Strategy<Value = (i64, i64, i64)> {
    let point = prop_oneof![a_moment(), -DAY_MS..HORIZON_MS + 3 * DAY_MS];
    [point.clone(), point.clone(), point].prop_map(|mut p| {
        p.sort_unstable();
        (p[0], p[1], p[2])
    })
}
