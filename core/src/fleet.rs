//! The fleet: IDCs with their area, carriers, capacity and runtimes, and how it is described in YAML.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::{MiB, MilliCpu, Resources};
pub use crate::words::UnknownWord;
use crate::words::word_enum;

/// Opaque IDC identifier; customers see it on an instance but never choose it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdcId(pub String);

impl fmt::Display for IdcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an IDC stands: region > province > city, each a lowercase pinyin code unique across levels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Area {
    /// The broadest level, such as `south-china`.
    pub region: String,
    /// The province within the region, such as `guangdong`.
    pub province: String,
    /// The city within the province, such as `shenzhen`: the finest level customers see or ask for.
    pub city: String,
}

impl Area {
    /// An area from its region, province and city codes; [`Idc::validate`] checks the codes, not this.
    pub fn new(region: &str, province: &str, city: &str) -> Self {
        Area { region: region.into(), province: province.into(), city: city.into() }
    }

    /// True when `code` names this area at any level.
    pub fn is_within(&self, code: &str) -> bool {
        self.region == code || self.province == code || self.city == code
    }
}

word_enum!(
    /// The ISPs an IDC is connected to; `bgp` is a multi-line IDC.
    Carrier, "carrier", {
        /// China Telecom.
        Telecom => "telecom",
        /// China Unicom.
        Unicom => "unicom",
        /// China Mobile.
        Mobile => "mobile",
        /// A multi-line (BGP) IDC, reached equally well from every carrier's network.
        Bgp => "bgp",
    }
);

word_enum!(
    /// How an instance runs: a plain container, a rich container (Kata) or a KubeVirt VM.
    #[derive(Default)]
    Runtime, "runtime", {
        /// A plain container, one Pod running the customer's image; every IDC runs these.
        #[default]
        Container => "container",
        /// A rich container: the platform's systemd base image in a Kata sandbox, logged into over ssh.
        Rich => "rich",
        /// A KubeVirt virtual machine booted from the customer's image as its container disk, logged
        /// into over ssh.
        Vm => "vm",
    }
);

impl Runtime {
    /// Rich containers and VMs are logged into by their owners, so they need ssh keys.
    pub fn needs_ssh(&self) -> bool {
        matches!(self, Runtime::Rich | Runtime::Vm)
    }
}

word_enum!(
    /// Whether new work may land in an IDC.
    #[derive(Default)]
    IdcStatus, "IDC status", {
        /// Takes new batches and reservations.
        #[default]
        Active => "active",
        /// Keeps what runs there, takes nothing new: the IDC is being emptied for decommissioning.
        Draining => "draining",
        /// The link to its cluster is down; its instances keep running but nothing new goes there.
        Disconnected => "disconnected",
    }
);

impl IdcStatus {
    /// The one rule for what news of an IDC's link does to its status: a lost link turns an active
    /// IDC `disconnected`, a restored one turns it `active` again; an IDC an admin is draining stays
    /// draining either way. `None` when the status does not change.
    pub fn on_link(self, link: LinkNews) -> Option<IdcStatus> {
        match (self, link) {
            (IdcStatus::Active, LinkNews::Lost) => Some(IdcStatus::Disconnected),
            (IdcStatus::Disconnected, LinkNews::Restored) => Some(IdcStatus::Active),
            _ => None,
        }
    }

    /// Every status that `link` moves, and where to: what the store applies conditionally.
    pub fn moved_by(link: LinkNews) -> Vec<(IdcStatus, IdcStatus)> {
        IdcStatus::ALL.into_iter().filter_map(|from| from.on_link(link).map(|to| (from, to))).collect()
    }
}

/// What the instance manager learnt about the link to an IDC's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkNews {
    /// The cluster stopped answering.
    Lost,
    /// The cluster answers again.
    Restored,
}

/// One edge data centre: a Kubernetes cluster somewhere, with the capacity the platform may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idc {
    /// Its stable identifier: the key of its ledger line and what instances record.
    pub id: IdcId,
    /// Shown to operators only.
    pub name: String,
    /// Where it stands; what a request's area codes are matched against.
    pub area: Area,
    /// Never empty: an IDC without a carrier serves nobody.
    pub carriers: Vec<Carrier>,
    /// The most the platform may sell there, across all servers: the fleet file's bound. What it
    /// sells is what the cluster offers within it ([`crate::capacity::sellable`]).
    pub capacity: Resources,
    /// Always contains `container`.
    pub runtimes: Vec<Runtime>,
    /// Whether new work may land here; the planner uses only `active` IDCs.
    pub status: IdcStatus,
    /// The kubeconfig context naming this IDC's cluster.
    pub kube_context: Option<String>,
    /// `runtimeClassName` of rich containers in this IDC's cluster; the platform's default when unset.
    pub rich_runtime_class: Option<String>,
    /// Where ssh reaches this IDC's instances from outside: an address that forwards the nodes' ssh
    /// NodePorts (the IDC's NAT or load balancer). The node's own address when unset.
    pub ssh_ingress_host: Option<String>,
    /// Percent of what the cluster offers that is never sold (spare room for evictions, bursts and
    /// daemons the kubelet does not reserve for): the fleet file's default when the IDC names none.
    #[serde(default)]
    pub headroom_percent: u8,
}

impl Idc {
    /// True when this IDC's cluster can run instances of `runtime`.
    pub fn supports(&self, runtime: Runtime) -> bool {
        self.runtimes.contains(&runtime)
    }

    /// Checks the invariants a fleet file or an admin request must respect.
    pub fn validate(&self) -> Result<(), FleetError> {
        let bad = |why: &str| Err(FleetError::InvalidIdc { id: self.id.0.clone(), why: why.to_string() });
        if self.id.0.is_empty()
            || !self.id.0.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("id must be non-empty and made of letters, digits, `-` and `_`");
        }
        for code in [&self.area.region, &self.area.province, &self.area.city] {
            if !is_area_code(code) {
                return bad("area codes must be lowercase pinyin words joined by `-`");
            }
        }
        if self.carriers.is_empty() {
            return bad("an IDC needs at least one carrier");
        }
        if !self.runtimes.contains(&Runtime::Container) {
            return bad("every IDC runs plain containers; `runtimes` must include `container`");
        }
        if self.capacity.cpu.0 == 0 || self.capacity.memory.0 == 0 {
            return bad("capacity must have some CPU and memory");
        }
        if self.rich_runtime_class.as_deref().is_some_and(|c| !is_dns_subdomain(c)) {
            return bad(
                "`rich_runtime_class` must be a RuntimeClass name: lowercase letters, digits, `-` and `.`",
            );
        }
        let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']');
        if self.ssh_ingress_host.as_deref().is_some_and(|h| h.is_empty() || !h.chars().all(host_char)) {
            return bad("`ssh_ingress_host` must be a host name or an IP address");
        }
        if self.headroom_percent > crate::capacity::MAX_HEADROOM_PERCENT {
            return bad("`headroom_percent` must be between 0 and 90");
        }
        Ok(())
    }
}

/// True for a Kubernetes object name of the DNS-subdomain kind (at most 253 characters of lowercase
/// letters, digits, `-` and `.`, starting and ending with a letter or digit).
fn is_dns_subdomain(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// True for lowercase ASCII words joined by single dashes, such as `south-china`.
pub fn is_area_code(code: &str) -> bool {
    !code.is_empty()
        && code
            .split('-')
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

/// Why a fleet could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The text is not YAML, or not a fleet file's shape (an unknown field, carrier or runtime).
    #[error("fleet file is not valid YAML for a fleet")]
    Parse(#[source] serde_yaml::Error),
    /// One IDC breaks a rule of [`Idc::validate`].
    #[error("IDC `{id}` is invalid: {why}")]
    InvalidIdc {
        /// The IDC's id as written.
        id: String,
        /// The rule it breaks, in words for the operator.
        why: String,
    },
    /// Two IDCs share the id this holds.
    #[error("IDC id `{0}` appears twice")]
    DuplicateId(String),
    /// One area code names two places (two levels, or two parents), so a request for it would be ambiguous.
    #[error("area code `{code}` is used at two levels or under two parents")]
    AmbiguousArea {
        /// The code used twice.
        code: String,
    },
    /// An IDC's `cpu` or `memory` is not a quantity the platform can count.
    #[error("capacity `{value}` of IDC `{id}` is invalid: {source}")]
    Quantity {
        /// The IDC whose capacity is written wrong.
        id: String,
        /// The quantity as written in the file.
        value: String,
        /// Why the quantity was refused.
        #[source]
        source: crate::units::QuantityError,
    },
}

/// The whole set of IDCs the planner may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Every IDC, whatever its status; ids are unique.
    pub idcs: Vec<Idc>,
}

/// One IDC as written in a fleet file, with human quantity strings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdcFile {
    id: String,
    name: Option<String>,
    region: String,
    province: String,
    city: String,
    carriers: Vec<Carrier>,
    cpu: String,
    memory: String,
    #[serde(default)]
    gpu: u32,
    #[serde(default)]
    runtimes: Vec<Runtime>,
    #[serde(default)]
    status: IdcStatus,
    kube_context: Option<String>,
    rich_runtime_class: Option<String>,
    ssh_ingress_host: Option<String>,
    headroom_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    /// The headroom of every IDC that names none.
    #[serde(default)]
    headroom_percent: u8,
    idcs: Vec<IdcFile>,
}

impl Fleet {
    /// Reads a fleet file:
    ///
    /// ```yaml
    /// headroom_percent: 5                  # optional; kept back in every IDC (0 when absent)
    /// idcs:
    ///   - id: gd-sz-01
    ///     region: south-china
    ///     province: guangdong
    ///     city: shenzhen
    ///     carriers: [telecom]
    ///     cpu: "640"
    ///     memory: 2560Gi
    ///     runtimes: [container, rich]
    ///     kube_context: gd-sz-01            # the kubeconfig context of its cluster
    ///     rich_runtime_class: kata-qemu     # optional; the platform's default otherwise
    ///     ssh_ingress_host: 203.0.113.10    # optional; the nodes' addresses otherwise
    ///     headroom_percent: 10              # optional; the file's own otherwise
    /// ```
    ///
    /// `cpu`, `memory` and `gpu` bound what the IDC sells; what it really sells is read from its
    /// cluster ([`crate::capacity`]).
    pub fn from_yaml(text: &str) -> Result<Fleet, FleetError> {
        let file: FleetFile = serde_yaml::from_str(text).map_err(FleetError::Parse)?;
        let mut idcs = Vec::with_capacity(file.idcs.len());
        for f in file.idcs {
            let quantity =
                |value: &str, source| FleetError::Quantity { id: f.id.clone(), value: value.into(), source };
            let cpu = MilliCpu::parse(&f.cpu).map_err(|e| quantity(&f.cpu, e))?;
            let memory = MiB::parse(&f.memory).map_err(|e| quantity(&f.memory, e))?;
            let mut runtimes = f.runtimes;
            if !runtimes.contains(&Runtime::Container) {
                runtimes.insert(0, Runtime::Container);
            }
            idcs.push(Idc {
                name: f.name.unwrap_or_else(|| f.id.clone()),
                id: IdcId(f.id),
                area: Area { region: f.region, province: f.province, city: f.city },
                carriers: f.carriers,
                capacity: Resources::new(cpu, memory, f.gpu),
                runtimes,
                status: f.status,
                kube_context: f.kube_context,
                rich_runtime_class: f.rich_runtime_class,
                ssh_ingress_host: f.ssh_ingress_host,
                headroom_percent: f.headroom_percent.unwrap_or(file.headroom_percent),
            });
        }
        let fleet = Fleet { idcs };
        fleet.validate()?;
        Ok(fleet)
    }

    /// Checks every IDC and that ids are unique and area codes unambiguous.
    pub fn validate(&self) -> Result<(), FleetError> {
        let mut ids = BTreeSet::new();
        for idc in &self.idcs {
            idc.validate()?;
            if !ids.insert(&idc.id) {
                return Err(FleetError::DuplicateId(idc.id.0.clone()));
            }
        }
        check_area_codes(self.idcs.iter().map(|i| &i.area))
    }
}

/// Area codes are unique across levels, so `guangdong` can only ever mean one province.
pub fn check_area_codes<'a>(areas: impl Iterator<Item = &'a Area>) -> Result<(), FleetError> {
    use std::collections::BTreeMap;
    // code -> (level, parent)
    let mut seen: BTreeMap<&str, (u8, &str)> = BTreeMap::new();
    for a in areas {
        for (level, code, parent) in
            [(0, &a.region, ""), (1, &a.province, a.region.as_str()), (2, &a.city, a.province.as_str())]
        {
            match seen.get(code.as_str()) {
                Some(&(l, p)) if l != level || p != parent => {
                    return Err(FleetError::AmbiguousArea { code: code.clone() });
                }
                Some(_) => {}
                None => {
                    seen.insert(code, (level, parent));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_file_is_read_with_quantities_and_defaults() {
        let fleet = Fleet::from_yaml(
            "idcs:\n  - id: gd-sz-01\n    region: south-china\n    province: guangdong\n    city: shenzhen\n    carriers: [telecom, unicom]\n    cpu: \"640\"\n    memory: 2560Gi\n    runtimes: [rich]\n",
        )
        .unwrap();
        let idc = &fleet.idcs[0];
        assert_eq!(idc.capacity, Resources::new(MilliCpu(640_000), MiB(2560 * 1024), 0));
        assert_eq!(idc.runtimes, vec![Runtime::Container, Runtime::Rich]);
        assert_eq!(idc.status, IdcStatus::Active);
        assert_eq!(idc.name, "gd-sz-01");
    }

    #[test]
    fn a_fleet_file_with_mistakes_is_refused() {
        let base = "idcs:\n  - id: a\n    region: south-china\n    province: guangdong\n    city: shenzhen\n    carriers: [telecom]\n    cpu: \"64\"\n    memory: 256Gi\n";
        assert!(matches!(
            Fleet::from_yaml(&format!("{base}{}", &base[6..])),
            Err(FleetError::DuplicateId(_))
        ));
        assert!(matches!(
            Fleet::from_yaml(&base.replace("[telecom]", "[]")),
            Err(FleetError::InvalidIdc { .. })
        ));
        assert!(matches!(Fleet::from_yaml(&base.replace("256Gi", "lots")), Err(FleetError::Quantity { .. })));
        assert!(matches!(Fleet::from_yaml(&base.replace("telecom", "cmcc")), Err(FleetError::Parse(_))));
        let ambiguous = format!(
            "{base}  - id: b\n    region: guangdong\n    province: x\n    city: y\n    carriers: [telecom]\n    cpu: \"64\"\n    memory: 256Gi\n"
        );
        assert!(matches!(Fleet::from_yaml(&ambiguous), Err(FleetError::AmbiguousArea { .. })));
        for bad in [
            "rich_runtime_class: Kata",
            "rich_runtime_class: kata-",
            "ssh_ingress_host: a b",
            "ssh_ingress_host: ''",
            "headroom_percent: 91",
        ] {
            assert!(
                matches!(Fleet::from_yaml(&format!("{base}    {bad}\n")), Err(FleetError::InvalidIdc { .. })),
                "{bad}"
            );
        }
        let good = Fleet::from_yaml(&format!(
            "{base}    rich_runtime_class: kata-qemu\n    ssh_ingress_host: ssh.gd-sz.example.net\n"
        ))
        .unwrap();
        assert_eq!(good.idcs[0].rich_runtime_class.as_deref(), Some("kata-qemu"));
        assert_eq!(good.idcs[0].ssh_ingress_host.as_deref(), Some("ssh.gd-sz.example.net"));
        let two = format!(
            "{base}  - id: b\n    region: north-china\n    province: beijing\n    city: beijing-city\n    carriers: [bgp]\n    cpu: \"8\"\n    memory: 32Gi\n    headroom_percent: 20\n"
        );
        let headrooms = Fleet::from_yaml(&format!("headroom_percent: 5\n{two}")).unwrap();
        let headrooms: Vec<u8> = headrooms.idcs.iter().map(|i| i.headroom_percent).collect();
        assert_eq!(headrooms, [5, 20], "an IDC's own headroom wins over the file's");
    }
}
