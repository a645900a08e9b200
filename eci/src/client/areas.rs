//! `eci areas`: the area codes and carriers one may ask for, as a tree, so that `--area` and
//! `--carrier` values can be looked up instead of guessed.

use anyhow::Result;
use serde::Deserialize;

use super::OutputFormat;
use super::http::Api;
use super::render::{self, finish, table};

/// Runs `areas` and returns the text to print.
pub async fn run(api: &Api, output: OutputFormat) -> Result<String> {
    let answer = api.get(&["v1", "areas"], &Vec::new()).await?;
    render::one(output, answer, "area list", areas_tree)
}

/// `GET /v1/areas`: regions > provinces > cities, each with the carriers found there.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Areas {
    regions: Vec<Region>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Region {
    code: String,
    carriers: Vec<String>,
    provinces: Vec<Province>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Province {
    code: String,
    carriers: Vec<String>,
    cities: Vec<City>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct City {
    code: String,
    carriers: Vec<String>,
    idcs: u64,
}

/// One line per area, indented by level, with its carriers and how many IDCs it holds.
fn areas_tree(areas: &Areas) -> String {
    if areas.regions.is_empty() {
        return "No areas found.".to_string();
    }
    let mut t = table(&["AREA", "CARRIERS", "IDCS"], &[2]);
    let mut row = |depth: usize, code: &str, carriers: &[String], idcs: u64| {
        let carriers = if carriers.is_empty() { "-".to_string() } else { carriers.join(", ") };
        t.add_row([format!("{}{code}", "  ".repeat(depth)), carriers, idcs.to_string()]);
    };
    for region in &areas.regions {
        let idcs = |p: &Province| p.cities.iter().map(|c| c.idcs).sum::<u64>();
        row(0, &region.code, &region.carriers, region.provinces.iter().map(idcs).sum());
        for province in &region.provinces {
            row(1, &province.code, &province.carriers, idcs(province));
            for city in &province.cities {
                row(2, &city.code, &city.carriers, city.idcs);
            }
        }
    }
    finish(&t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn areas_render_as_an_indented_tree() {
        let answer = json!({"regions": [{
            "code": "south-china", "carriers": ["telecom", "unicom", "bgp"],
            "provinces": [{
                "code": "guangdong", "carriers": ["telecom", "unicom", "bgp"],
                "cities": [
                    {"code": "shenzhen", "carriers": ["telecom", "bgp"], "idcs": 3},
                    {"code": "guangzhou", "carriers": ["unicom"], "idcs": 1}
                ]
            }]
        }]});
        let text = render::one(OutputFormat::Table, answer, "area list", areas_tree).unwrap();
        assert_eq!(
            text,
            "AREA            CARRIERS               IDCS\n\
             south-china     telecom, unicom, bgp      4\n\
             \x20 guangdong     telecom, unicom, bgp      4\n\
             \x20   shenzhen    telecom, bgp              3\n\
             \x20   guangzhou   unicom                    1"
        );
        assert_eq!(areas_tree(&Areas::default()), "No areas found.");
    }
}
