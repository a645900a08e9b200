//! Argument parsers shared by several commands. They check what can be checked locally (a
//! quantity, an area code, `K=V`) so that a typo fails at once with a precise message instead of a
//! round trip, and take their word lists from `eci-core` so that the client and the server agree.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::builder::PossibleValuesParser;
use eci_core::{BatchState, Carrier, InstanceState, MiB, MilliCpu, Runtime};

/// `--carrier`: one of the carriers the platform knows.
pub fn carriers() -> PossibleValuesParser {
    PossibleValuesParser::new(Carrier::ALL.map(|c| c.as_str()))
}

/// `--runtime`: container, rich or vm.
pub fn runtimes() -> PossibleValuesParser {
    PossibleValuesParser::new(Runtime::ALL.map(|r| r.as_str()))
}

/// `--state` of `batch list`.
pub fn batch_states() -> PossibleValuesParser {
    PossibleValuesParser::new(BatchState::ALL.iter().map(|s| s.as_str()))
}

/// `--state` of `group list`.
pub fn group_states() -> PossibleValuesParser {
    PossibleValuesParser::new(eci_scaler::group::GroupState::ALL.iter().map(|s| s.as_str()))
}

/// `--state` of `instance list`.
pub fn instance_states() -> PossibleValuesParser {
    PossibleValuesParser::new(InstanceState::ALL.iter().map(|s| s.as_str()))
}

/// `--cpu`: a Kubernetes CPU quantity ("2", "0.5", "500m"), passed on as written.
pub fn cpu(s: &str) -> Result<String, String> {
    MilliCpu::parse(s).map(|_| s.trim().to_string()).map_err(|e| e.to_string())
}

/// `--memory`: a Kubernetes memory quantity ("4Gi", "512Mi"), passed on as written.
pub fn memory(s: &str) -> Result<String, String> {
    MiB::parse(s).map(|_| s.trim().to_string()).map_err(|e| e.to_string())
}

/// `--area`: an area code at any level (`south-china`, `guangdong`, `shenzhen`) or `*` for
/// anywhere. Upper case is forgiven, since codes are pinyin people may capitalise.
pub fn area(s: &str) -> Result<String, String> {
    let code = s.trim().to_ascii_lowercase();
    if code == "*" || eci_core::fleet::is_area_code(&code) {
        Ok(code)
    } else {
        Err(format!(
            "`{s}` is not an area code; expected a lowercase pinyin code such as `guangdong` \
             or `south-china`, or `*` for anywhere (see `eci areas`)"
        ))
    }
}

/// `--env`, `--label`: `KEY=VALUE`, split at the first `=` so that values may contain `=`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        Some(_) => Err(format!("`{s}` has an empty key; expected KEY=VALUE")),
        None => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// `--count`, `--limit`, `--max-per-idc`: a whole number of at least 1.
pub fn positive<T: std::str::FromStr + Default + PartialEq>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        Ok(_) => Err("must be at least 1".to_string()),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// `--ttl`: seconds, or a number with a unit (`90s`, `30m`, `2h`, `7d`).
pub fn seconds(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!("`{s}` is not a duration; expected seconds or e.g. 30m, 2h, 7d"));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; expected seconds or e.g. 30m, 2h, 7d"))?;
    match n.checked_mul(scale) {
        Some(0) => Err("the duration must be positive".to_string()),
        Some(total) => Ok(total),
        None => Err(format!("`{s}` is too long")),
    }
}

/// `--create-timeout`: a duration as [`seconds`] takes it, at most the hour a batch may give its
/// instances to start.
pub fn create_timeout(s: &str) -> Result<u32, String> {
    let max = eci_core::records::MAX_CREATE_TIMEOUT_SECONDS;
    u32::try_from(seconds(s)?)
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| format!("`{s}` is longer than the {max} seconds an instance may take to start"))
}

/// Collects repeated `KEY=VALUE` flags into a map, refusing a key given twice rather than
/// silently keeping one of them.
pub fn into_map(pairs: &[(String, String)], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v.clone()).is_some() {
            bail!("{flag} `{k}` is given twice");
        }
    }
    Ok(map)
}

/// Resolves `--ssh-key` values: a public key as is, or `@FILE` (`~/` allowed) whose every
/// non-empty, non-comment line is a key, like an `authorized_keys` file.
pub fn ssh_keys(values: &[String]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for value in values {
        let Some(file) = value.strip_prefix('@') else {
            let key = value.trim();
            if key.is_empty() {
                bail!("--ssh-key is empty");
            }
            keys.push(key.to_string());
            continue;
        };
        let path = expand_home(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow!("cannot read ssh key file {}: {e}", path.display()))?;
        if text.contains("PRIVATE KEY-----") {
            bail!("{} is a private key; pass the public one (usually the .pub file)", path.display());
        }
        let before = keys.len();
        keys.extend(
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
        );
        if keys.len() == before {
            bail!("no ssh key in {}", path.display());
        }
    }
    Ok(keys)
}

/// `~/x` → `$HOME/x`; the shell does not expand a `~` that follows `@`.
fn expand_home(file: &str) -> PathBuf {
    match (file.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(key_value("EMPTY="), Ok(("EMPTY".into(), String::new())));
        assert!(key_value("novalue").unwrap_err().contains("not KEY=VALUE"));
        assert!(key_value("=v").unwrap_err().contains("empty key"));
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let pairs = vec![("a".to_string(), "1".to_string()), ("a".to_string(), "2".to_string())];
        assert_eq!(into_map(&pairs, "--label").unwrap_err().to_string(), "--label `a` is given twice");
        let ok = into_map(&pairs[..1], "--label").unwrap();
        assert_eq!(ok.get("a").map(String::as_str), Some("1"));
    }

    #[test]
    fn quantities_and_areas_are_checked_locally() {
        assert_eq!(cpu(" 500m "), Ok("500m".into()));
        assert!(cpu("2Gi").is_err());
        assert_eq!(memory("4Gi"), Ok("4Gi".into()));
        assert!(memory("4GB").is_err());
        assert_eq!(area("GuangDong"), Ok("guangdong".into()));
        assert_eq!(area("*"), Ok("*".into()));
        assert!(area("guang dong").is_err());
    }

    #[test]
    fn counts_are_positive_whole_numbers() {
        assert_eq!(positive::<u64>("12"), Ok(12));
        assert_eq!(positive::<u32>("0"), Err("must be at least 1".into()));
        assert!(positive::<u16>("-1").unwrap_err().contains("not a whole number"));
        assert!(positive::<u16>("70000").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(seconds("3600"), Ok(3600));
        assert_eq!(seconds("30m"), Ok(1800));
        assert_eq!(seconds("2h"), Ok(7200));
        assert_eq!(seconds("1d"), Ok(86_400));
        assert!(seconds("0").is_err());
        assert!(seconds("1w").is_err());
        assert!(seconds("h").is_err());
        assert_eq!(create_timeout("5m"), Ok(300));
        assert_eq!(create_timeout("1h"), Ok(3600));
        assert!(create_timeout("3601").unwrap_err().contains("3600 seconds"));
        assert!(create_timeout("0").is_err());
    }

    #[test]
    fn ssh_keys_come_inline_or_from_files() {
        let dir = std::env::temp_dir().join(format!("eci-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys_file = dir.join("keys.pub");
        std::fs::write(&keys_file, "# mine\nssh-ed25519 AAAA one@x\n\nssh-rsa BBBB two@y\n").unwrap();
        let private = dir.join("id_ed25519");
        std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").unwrap();
        let empty = dir.join("empty.pub");
        std::fs::write(&empty, "\n# nothing\n").unwrap();

        let got = ssh_keys(&["ssh-ed25519 CCCC inline".into(), format!("@{}", keys_file.display())]).unwrap();
        assert_eq!(got, ["ssh-ed25519 CCCC inline", "ssh-ed25519 AAAA one@x", "ssh-rsa BBBB two@y"]);
        let err = ssh_keys(&[format!("@{}", private.display())]).unwrap_err().to_string();
        assert!(err.contains("is a private key"), "{err}");
        let err = ssh_keys(&[format!("@{}", empty.display())]).unwrap_err().to_string();
        assert!(err.starts_with("no ssh key in"), "{err}");
        let err = ssh_keys(&[format!("@{}", dir.join("missing").display())]).unwrap_err().to_string();
        assert!(err.starts_with("cannot read ssh key file") && !err.contains('\n'), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn home_is_expanded_after_the_at_sign() {
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(expand_home("~/.ssh/id.pub"), PathBuf::from(home).join(".ssh/id.pub"));
        }
        assert_eq!(expand_home("/k.pub"), PathBuf::from("/k.pub"));
    }
}
