//! `/v1/areas` and `/v1/capacity`: what the fleet offers, by area and carrier, never by IDC.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use eci_core::availability::availability;
use eci_core::{Carrier, IdcStatus, PlacementRequest, Runtime};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::extract::Query;
use crate::openapi::{BadRequest, TenantCall, Unprocessable};
use crate::wire::rules::{self, TextRule};
use crate::wire::{SpecBody, word_list_schema, word_schema};

routes! { router, ROUTES;
    "/v1/areas" => get(areas);
    "/v1/capacity" => get(capacity);
}

/// A city, with the carriers present there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CityView {
    /// City code, such as `shenzhen`.
    pub code: String,
    /// Carriers (ISPs) of the IDCs there, including IDCs that take nothing new.
    #[schema(schema_with = word_list_schema::<Carrier>)]
    pub carriers: Vec<String>,
    /// IDCs that take new instances.
    pub idcs: u64,
}

/// A province, with its cities and the carriers present there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvinceView {
    /// Province code, such as `guangdong`.
    pub code: String,
    /// Carriers (ISPs) of the IDCs there, including IDCs that take nothing new.
    #[schema(schema_with = word_list_schema::<Carrier>)]
    pub carriers: Vec<String>,
    /// IDCs in the province that take new instances.
    pub idcs: u64,
    /// Its cities, by code.
    pub cities: Vec<CityView>,
}

/// A region, with its provinces and the carriers present there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegionView {
    /// Region code, such as `south-china`.
    pub code: String,
    /// Carriers (ISPs) of the IDCs there, including IDCs that take nothing new.
    #[schema(schema_with = word_list_schema::<Carrier>)]
    pub carriers: Vec<String>,
    /// IDCs in the region that take new instances.
    pub idcs: u64,
    /// Its provinces, by code.
    pub provinces: Vec<ProvinceView>,
}

/// The fleet's areas: regions > provinces > cities. Any of their codes is an area selector.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AreasView {
    /// Every region, by code.
    pub regions: Vec<RegionView>,
}

/// Carriers and IDC count under one area, and its children.
#[derive(Default)]
struct Acc {
    carriers: BTreeSet<Carrier>,
    idcs: u64,
    children: BTreeMap<String, Acc>,
}

impl Acc {
    fn carriers(&self) -> Vec<String> {
        self.carriers.iter().map(|c| c.to_string()).collect()
    }
}

/// The area tree: regions > provinces > cities, each with the carriers present.
#[utoipa::path(get, path = "/v1/areas", responses((status = 200, body = AreasView), TenantCall))]
pub async fn areas(State(state): State<AppState>, _caller: Caller) -> Result<Json<AreasView>> {
    let mut root = Acc::default();
    for (idc, _) in state.store.list_idcs().await? {
        let active = u64::from(idc.status == IdcStatus::Active);
        let mut node = &mut root;
        for code in [&idc.area.region, &idc.area.province, &idc.area.city] {
            node = node.children.entry(code.clone()).or_default();
            node.carriers.extend(idc.carriers.iter().copied());
            node.idcs += active;
        }
    }
    let regions = root
        .children
        .into_iter()
        .map(|(code, r)| RegionView {
            carriers: r.carriers(),
            idcs: r.idcs,
            provinces: r
                .children
                .into_iter()
                .map(|(code, p)| ProvinceView {
                    carriers: p.carriers(),
                    idcs: p.idcs,
                    cities: p
                        .children
                        .into_iter()
                        .map(|(code, c)| CityView { carriers: c.carriers(), idcs: c.idcs, code })
                        .collect(),
                    code,
                })
                .collect(),
            code,
        })
        .collect();
    Ok(Json(AreasView { regions }))
}

/// The size of instance to count, and where.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CapacityQuery {
    /// vCPU per instance, e.g. `2`.
    #[param(value_type = rules::Cpu)]
    pub cpu: String,
    /// Memory per instance, e.g. `4Gi`.
    #[param(value_type = rules::Memory)]
    pub memory: String,
    /// GPUs per instance, 0 to 10000; default 0.
    #[param(minimum = 0, maximum = 10000)]
    pub gpu: Option<u32>,
    /// A region, province or city code of the fleet (see `GET /v1/areas`), or `*`; absent = anywhere.
    #[param(value_type = Option<rules::AreaSelector>)]
    pub area: Option<String>,
    /// Only IDCs reached through this carrier; absent = any.
    #[param(schema_with = word_schema::<Carrier>)]
    pub carrier: Option<String>,
    /// How the instances would run; `container` when absent.
    #[param(schema_with = word_schema::<Runtime>)]
    pub runtime: Option<String>,
}

/// Instances available in one city on one carrier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LocationCapacity {
    /// Region code of the city.
    pub region: String,
    /// Province code of the city.
    pub province: String,
    /// City code, such as `shenzhen`.
    pub city: String,
    /// The carrier (ISP).
    #[schema(schema_with = word_schema::<Carrier>)]
    pub carrier: String,
    /// Instances of the size that fit there right now.
    pub available: u64,
}

/// How many instances of one size fit right now, in total and where.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CapacityView {
    /// The size counted, as quantities in their shortest form ("2000m" reads "2").
    pub spec: SpecBody,
    /// The runtime counted.
    #[schema(schema_with = word_schema::<Runtime>)]
    pub runtime: String,
    /// How many instances of the spec a batch could get right now.
    pub total: u64,
    /// Every city and carrier with room, roomiest first.
    pub locations: Vec<LocationCapacity>,
}

/// How many instances of a size can be had right now, in total and per city and carrier.
#[utoipa::path(get, path = "/v1/capacity", params(CapacityQuery),
    responses((status = 200, body = CapacityView), TenantCall, (status = 400, response = BadRequest),
        (status = 422, response = Unprocessable)))]
pub async fn capacity(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<CapacityQuery>,
) -> Result<Json<CapacityView>> {
    let spec = SpecBody { cpu: q.cpu, memory: q.memory, gpu: q.gpu.unwrap_or(0) };
    let resources = spec.to_resources("spec")?;
    let runtime = match q.runtime.as_deref() {
        None => Runtime::Container,
        Some(r) => r
            .parse()
            .map_err(|e: eci_core::fleet::UnknownWord| ApiError::invalid("runtime", e.to_string()))?,
    };
    if let Some(area) = &q.area {
        rules::AreaSelector::require("area", area)?;
    }
    let mut request = PlacementRequest::new(0, resources);
    request.runtime = runtime;
    if let Some(c) = q.carrier.as_deref() {
        request.carriers = vec![
            c.parse()
                .map_err(|e: eci_core::fleet::UnknownWord| ApiError::invalid("carrier", e.to_string()))?,
        ];
    }
    let eci_core::Snapshot { fleet, ledger } = state.store.snapshot().await?;
    if let Some(area) = q.area {
        if area != "*" && !fleet.idcs.iter().any(|i| i.area.is_within(&area)) {
            return Err(ApiError::unknown_area("area", &area));
        }
        request.areas = vec![area];
    }
    let mut locations: Vec<LocationCapacity> = availability(&fleet, &ledger, &request)
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(area, carrier, available)| LocationCapacity {
            region: area.region,
            province: area.province,
            city: area.city,
            carrier: carrier.to_string(),
            available,
        })
        .collect();
    locations.sort_by(|a, b| b.available.cmp(&a.available).then_with(|| a.city.cmp(&b.city)));
    Ok(Json(CapacityView {
        spec: SpecBody::from_resources(&resources),
        runtime: runtime.to_string(),
        total: locations.iter().map(|l| l.available).sum(),
        locations,
    }))
}
