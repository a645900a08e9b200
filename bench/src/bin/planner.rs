//! Planner benchmark: plans 10,000 instances of 2 vCPU / 4 GiB over a deterministic 5,000-IDC fleet
//! and prints median, p99 and min wall time per scenario.
//!
//! Run with `cargo run --release -p eci-bench --bin planner`. Target: median <= 5 ms per plan.

use std::hint::black_box;
use std::time::{Duration, Instant};

use eci_core::builtin::SplitMix;
use eci_core::{
    Area, Carrier, Column, Fleet, Idc, IdcId, IdcStatus, Ledger, MiB, MilliCpu, PlacementRequest, Resources,
    Runtime, Strategy, plan,
};

const IDCS: usize = 5_000;
const WARM_UP: usize = 20;
const ITERATIONS: usize = 200;
const SERVER: Resources = Resources { cpu: MilliCpu(32_000), memory: MiB(128 * 1024), gpu: 0 };

/// (region, provinces): 7 regions over 30 provinces; cities are made up per province.
const REGIONS: &[(&str, &[&str])] = &[
    ("south-china", &["guangdong", "guangxi", "hainan"]),
    ("east-china", &["zhejiang", "jiangsu", "shandong", "fujian", "anhui", "jiangxi", "shanghai"]),
    ("north-china", &["hebei", "shanxi", "neimenggu", "tianjin", "beijing"]),
    ("central-china", &["henan", "hubei", "hunan"]),
    ("southwest", &["sichuan", "yunnan", "guizhou", "chongqing", "xizang"]),
    ("northeast", &["liaoning", "jilin", "heilongjiang"]),
    ("northwest", &["shaanxi", "gansu", "qinghai", "ningxia"]),
];

/// 5,000 IDCs of 3..300 servers (many small, a few big), with some capacity already reserved or
/// allocated, a few draining or disconnected.
fn fleet_and_ledger() -> (Fleet, Ledger) {
    let mut rng = SplitMix(0x0BE0_C4B1);
    let provinces: Vec<(&str, &str)> =
        REGIONS.iter().flat_map(|&(region, provinces)| provinces.iter().map(move |&p| (region, p))).collect();
    let mut idcs = Vec::with_capacity(IDCS);
    for n in 0..IDCS {
        let (region, province) = provinces[rng.below(provinces.len() as u64) as usize];
        let city = format!("{province}-city{}", rng.below(8));
        let carriers = match rng.below(10) {
            0..=2 => vec![Carrier::Telecom],
            3..=4 => vec![Carrier::Unicom],
            5..=6 => vec![Carrier::Mobile],
            7 => vec![Carrier::Telecom, Carrier::Unicom],
            8 => vec![Carrier::Mobile, Carrier::Telecom, Carrier::Unicom],
            _ => vec![Carrier::Bgp],
        };
        let u = rng.below(1000) as f64 / 1000.0;
        let servers = 3 + (u * u * u * 297.0).round() as u64;
        let mut runtimes = vec![Runtime::Container];
        if rng.below(3) == 0 {
            runtimes.push(Runtime::Rich);
        }
        if rng.below(6) == 0 {
            runtimes.push(Runtime::Vm);
        }
        let status = match rng.below(50) {
            0 => IdcStatus::Draining,
            1 => IdcStatus::Disconnected,
            _ => IdcStatus::Active,
        };
        let id = format!("idc-{province}-{n:04}");
        idcs.push(Idc {
            name: id.clone(),
            kube_context: Some(id.clone()),
            rich_runtime_class: None,
            ssh_ingress_host: None,
            headroom_percent: 0,
            id: IdcId(id),
            area: Area::new(region, province, &city),
            carriers,
            capacity: SERVER * servers,
            runtimes,
            status,
        });
    }
    let fleet = Fleet { idcs };
    let mut ledger = Ledger::for_fleet(&fleet);
    for idc in &fleet.idcs {
        let servers = idc.capacity.cpu.0 / SERVER.cpu.0;
        match rng.below(10) {
            // About 40% partly allocated, 10% partly reserved, the rest empty.
            0..=3 => {
                let used = servers * rng.below(95) / 100;
                ledger.take(Column::Allocated, &[(idc.id.clone(), SERVER * used)]).expect("fits");
            }
            4 => {
                let held = servers * rng.below(50) / 100;
                ledger.take(Column::Reserved, &[(idc.id.clone(), SERVER * held)]).expect("fits");
            }
            _ => {}
        }
    }
    (fleet, ledger)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs one scenario and prints its line.
fn scenario(name: &str, fleet: &Fleet, ledger: &Ledger, request: &PlacementRequest) {
    let result = plan(fleet, ledger, request).expect("the bench fleet has room");
    for _ in 0..WARM_UP {
        black_box(plan(black_box(fleet), black_box(ledger), black_box(request)).ok());
    }
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            black_box(plan(black_box(fleet), black_box(ledger), black_box(request)).ok());
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99).div_ceil(100) - 1];
    let min = times[0];
    println!(
        "{name:<18} median {:>7.3} ms  p99 {:>7.3} ms  min {:>7.3} ms  ({} placed over {} IDCs)",
        millis(median),
        millis(p99),
        millis(min),
        result.placed(),
        result.placements.len(),
    );
}

fn main() {
    let (fleet, ledger) = fleet_and_ledger();
    let spec = Resources::new(MilliCpu(2000), MiB(4096), 0);
    let slots: u64 = fleet.idcs.iter().map(|i| ledger.free(&i.id).how_many(&spec)).sum();
    println!(
        "fleet: {} IDCs, {} provinces, {} free slots of 2 vCPU / 4 GiB; {ITERATIONS} iterations after {WARM_UP} warm-up",
        fleet.idcs.len(),
        REGIONS.iter().map(|(_, p)| p.len()).sum::<usize>(),
        slots,
    );
    let anywhere = PlacementRequest::new(10_000, spec);
    scenario("anywhere spread", &fleet, &ledger, &anywhere);
    let region = PlacementRequest { areas: vec!["east-china".into()], ..anywhere.clone() };
    scenario("one region spread", &fleet, &ledger, &region);
    let pack = PlacementRequest { strategy: Strategy::Pack, ..anywhere.clone() };
    scenario("anywhere pack", &fleet, &ledger, &pack);
}
