//! `eci capacity`: how many instances of a size fit right now and where, so a customer can size a
//! batch (or pick `--partial`) before asking for it.

use anyhow::Result;
use serde::Deserialize;

use super::http::{Api, Query};
use super::render::{self, dash, finish, table};
use super::{OutputFormat, parse};

/// The instance size and the area, carrier and runtime to count capacity for.
#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    /// CPU per instance, as a Kubernetes quantity: 2, 0.5, 500m.
    #[arg(long, value_parser = parse::cpu)]
    pub cpu: String,
    /// Memory per instance, as a Kubernetes quantity: 4Gi, 512Mi.
    #[arg(long, value_parser = parse::memory)]
    pub memory: String,
    /// GPUs per instance.
    #[arg(long, value_name = "N")]
    pub gpu: Option<u32>,
    /// Only this area (region, province or city code).
    #[arg(long, value_name = "CODE", value_parser = parse::area)]
    pub area: Option<String>,
    /// Only this carrier.
    #[arg(long, value_name = "C", value_parser = parse::carriers())]
    pub carrier: Option<String>,
    /// Only IDCs that offer this runtime.
    #[arg(long, value_parser = parse::runtimes())]
    pub runtime: Option<String>,
}

/// Runs `capacity` and returns the text to print.
pub async fn run(api: &Api, args: CapacityArgs, output: OutputFormat) -> Result<String> {
    let answer = api.get(&["v1", "capacity"], &query(&args)).await?;
    render::one(output, answer, "capacity", |c: &Capacity| capacity_view(c, &args))
}

/// The query of `GET /v1/capacity`.
fn query(a: &CapacityArgs) -> Query {
    let given = [
        ("cpu", Some(a.cpu.clone())),
        ("memory", Some(a.memory.clone())),
        ("gpu", a.gpu.map(|n| n.to_string())),
        ("area", a.area.clone()),
        ("carrier", a.carrier.clone()),
        ("runtime", a.runtime.clone()),
    ];
    given.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// Free capacity in instances of the asked size, in total and by location.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Capacity {
    total: u64,
    locations: Vec<Location>,
}

/// One city and carrier with the number of instances that still fit there.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Location {
    region: Option<String>,
    province: Option<String>,
    city: Option<String>,
    carrier: Option<String>,
    available: u64,
}

/// The total line, then the locations with the most room first (ties in area order).
fn capacity_view(c: &Capacity, a: &CapacityArgs) -> String {
    let gpu = a.gpu.filter(|&g| g > 0).map(|g| format!(" gpu={g}")).unwrap_or_default();
    let total = format!("{} instances of cpu={} memory={}{gpu} fit", c.total, a.cpu, a.memory);
    if c.locations.is_empty() {
        return total;
    }
    let mut locations: Vec<&Location> = c.locations.iter().collect();
    locations.sort_by(|x, y| {
        let key = |l: &Location| (l.region.clone(), l.province.clone(), l.city.clone(), l.carrier.clone());
        y.available.cmp(&x.available).then_with(|| key(x).cmp(&key(y)))
    });
    let mut t = table(&["REGION", "PROVINCE", "CITY", "CARRIER", "AVAILABLE"], &[4]);
    for l in locations {
        t.add_row([
            dash(l.region.as_deref()),
            dash(l.province.as_deref()),
            dash(l.city.as_deref()),
            dash(l.carrier.as_deref()),
            l.available.to_string(),
        ]);
    }
    format!("{total}\n\n{}", finish(&t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CapacityArgs,
    }

    fn args(argv: &[&str]) -> CapacityArgs {
        Cli::try_parse_from(["eci"].iter().chain(argv)).unwrap().args
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn only_given_filters_are_sent() {
        assert_eq!(
            query(&args(&["--cpu", "2", "--memory", "4Gi"])),
            [("cpu", "2".into()), ("memory", "4Gi".into())]
        );
        let full = args(&[
            "--cpu",
            "1",
            "--memory",
            "1Gi",
            "--gpu",
            "1",
            "--area",
            "guangdong",
            "--carrier",
            "telecom",
            "--runtime",
            "rich",
        ]);
        assert_eq!(query(&full).len(), 6);
    }

    #[test]
    fn locations_are_sorted_by_room_left() {
        let answer = json!({"total": 70, "locations": [
            {"region": "north-china", "province": "beijing", "city": "beijing", "carrier": "unicom", "available": 14},
            {"region": "south-china", "province": "guangdong", "city": "shenzhen", "carrier": "telecom", "available": 56},
        ]});
        let a = args(&["--cpu", "2", "--memory", "4Gi"]);
        let text = render::one(OutputFormat::Table, answer, "capacity", |c: &Capacity| capacity_view(c, &a))
            .unwrap();
        assert_eq!(
            text,
            "70 instances of cpu=2 memory=4Gi fit\n\n\
             REGION        PROVINCE    CITY       CARRIER   AVAILABLE\n\
             south-china   guangdong   shenzhen   telecom          56\n\
             north-china   beijing     beijing    unicom           14"
        );
    }
}
