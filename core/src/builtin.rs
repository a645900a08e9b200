//! The built-in fleet of the embedded default: a realistic, uneven spread of IDCs over China.

use crate::fleet::{Area, Carrier, Fleet, Idc, IdcId, IdcStatus, Runtime};
use crate::units::{MiB, MilliCpu, Resources};

/// (region, province, cities). Codes are unique across levels, which is why there is no `beijing`
/// (a province and a city of the same name) in this list.
const AREAS: &[(&str, &str, &[&str])] = &[
    ("south-china", "guangdong", &["guangzhou", "shenzhen", "dongguan", "foshan", "shantou", "zhanjiang"]),
    ("south-china", "guangxi", &["nanning", "liuzhou", "guilin"]),
    ("south-china", "hainan", &["haikou", "sanya"]),
    ("east-china", "zhejiang", &["hangzhou", "ningbo", "wenzhou", "jinhua"]),
    ("east-china", "jiangsu", &["nanjing", "suzhou", "wuxi", "xuzhou"]),
    ("east-china", "shandong", &["jinan", "qingdao", "yantai", "linyi"]),
    ("east-china", "fujian", &["fuzhou", "xiamen", "quanzhou"]),
    ("north-china", "hebei", &["shijiazhuang", "tangshan", "baoding"]),
    ("north-china", "shanxi", &["taiyuan", "datong"]),
    ("north-china", "neimenggu", &["huhehaote", "baotou"]),
    ("central-china", "henan", &["zhengzhou", "luoyang", "nanyang"]),
    ("central-china", "hubei", &["wuhan", "yichang", "xiangyang"]),
    ("central-china", "hunan", &["changsha", "hengyang", "yueyang"]),
    ("southwest", "sichuan", &["chengdu", "mianyang", "yibin"]),
    ("southwest", "yunnan", &["kunming", "dali"]),
    ("southwest", "guizhou", &["guiyang", "zunyi"]),
    ("northeast", "liaoning", &["shenyang", "dalian"]),
    ("northeast", "heilongjiang", &["haerbin", "daqing"]),
    ("northwest", "shaanxi", &["xian", "baoji"]),
    ("northwest", "gansu", &["lanzhou"]),
];

/// Each server of the built-in fleet: 32 vCPU and 128 GiB.
const SERVER: Resources = Resources { cpu: MilliCpu(32_000), memory: MiB(128 * 1024), gpu: 0 };

/// SplitMix64: a small deterministic generator, so the built-in fleet (and the benchmarks' fleets)
/// are the same on every start.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next number of the sequence; the same seed always gives the same sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (up to a modulo bias far below what fixtures care about).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The fleet `eci up` runs on: 140-odd IDCs over 7 regions, 20 provinces and all four carriers,
/// from 3 to 300 servers each, with Kata (`rich`) in about a third and KubeVirt (`vm`) in about
/// a sixth of them, and GPUs in a few.
pub fn builtin_fleet() -> Fleet {
    let mut rng = SplitMix(0x0EC1_F1EE);
    let mut idcs = Vec::new();
    for &(region, province, cities) in AREAS {
        for (ci, city) in cities.iter().enumerate() {
            // Capital-like first cities get more IDCs.
            let n_idcs = if ci == 0 { 3 } else { 2 };
            for n in 1..=n_idcs {
                let carriers = match rng.below(10) {
                    0..=2 => vec![Carrier::Telecom],
                    3..=4 => vec![Carrier::Unicom],
                    5..=6 => vec![Carrier::Mobile],
                    7 => vec![Carrier::Telecom, Carrier::Unicom],
                    _ => vec![Carrier::Bgp],
                };
                // Cubing a uniform draw gives many small sites and a few big ones.
                let u = rng.below(1000) as f64 / 1000.0;
                let servers = 3 + (u * u * u * 297.0).round() as u64;
                let mut runtimes = vec![Runtime::Container];
                let draw = rng.below(6);
                if draw < 2 {
                    runtimes.push(Runtime::Rich);
                }
                if draw == 0 || (draw == 2 && servers >= 20) {
                    runtimes.push(Runtime::Vm);
                }
                let gpu = if servers >= 40 && rng.below(4) == 0 { (servers / 10) as u32 * 8 } else { 0 };
                let id = format!("idc-{city}-{n}");
                idcs.push(Idc {
                    name: format!(
                        "{} {} #{n}",
                        city,
                        carriers.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("+")
                    ),
                    kube_context: Some(id.clone()),
                    rich_runtime_class: None,
                    ssh_ingress_host: None,
                    headroom_percent: 0,
                    id: IdcId(id),
                    area: Area::new(region, province, city),
                    carriers,
                    capacity: Resources { gpu, ..SERVER * servers },
                    runtimes,
                    status: IdcStatus::Active,
                });
            }
        }
    }
    Fleet { idcs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_builtin_fleet_is_big_varied_and_valid() {
        let fleet = builtin_fleet();
        fleet.validate().unwrap();
        assert!(fleet.idcs.len() >= 120, "{} IDCs", fleet.idcs.len());
        let regions: BTreeSet<_> = fleet.idcs.iter().map(|i| &i.area.region).collect();
        let provinces: BTreeSet<_> = fleet.idcs.iter().map(|i| &i.area.province).collect();
        let carriers: BTreeSet<_> = fleet.idcs.iter().flat_map(|i| i.carriers.iter()).collect();
        assert!(regions.len() >= 4 && provinces.len() >= 10 && carriers.len() == 4);
        let servers: Vec<u64> = fleet.idcs.iter().map(|i| i.capacity.cpu.0 / SERVER.cpu.0).collect();
        assert_eq!(servers.iter().min(), Some(&3));
        assert!(*servers.iter().max().unwrap() >= 200 && *servers.iter().max().unwrap() <= 300);
        let rich = fleet.idcs.iter().filter(|i| i.supports(Runtime::Rich)).count();
        let vm = fleet.idcs.iter().filter(|i| i.supports(Runtime::Vm)).count();
        assert!(rich > 10 && rich < fleet.idcs.len() / 2, "{rich} rich");
        assert!(vm > 5 && vm < fleet.idcs.len() / 3, "{vm} vm");
        assert!(fleet.idcs.iter().any(|i| i.capacity.gpu > 0));
        let guangdong_telecom = fleet
            .idcs
            .iter()
            .filter(|i| i.area.province == "guangdong" && i.carriers.contains(&Carrier::Telecom))
            .map(|i| i.capacity.how_many(&Resources::new(MilliCpu(2000), MiB(4096), 0)))
            .sum::<u64>();
        assert!(
            guangdong_telecom >= 1000,
            "the README walk-through needs 1000 slots, has {guangdong_telecom}"
        );
    }
}
