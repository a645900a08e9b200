//! The rules a request's strings follow, each written twice side by side: as the pattern the
//! OpenAPI document states (ECMA-262, anchored) and as the check the server makes. The two must take
//! exactly the same strings: whatever the document allows the server accepts, and whatever it refuses
//! the server refuses. Each rule is a type, so the document names it as a component (`Cpu`,
//! `LabelKey`, ...) and fields refer to it with `value_type`. CI holds the two sides together by
//! running schemathesis against the document (see `.ci/run`); no regex engine is linked here, so
//! each check is written out by hand.

use chrono::{DateTime, Utc};
use serde::de::{Deserialize, Deserializer, Error as _};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::Object};

use crate::error::{ApiError, Result};

/// A rule for one kind of string: its pattern, its description, and the server's check.
pub trait TextRule {
    /// What the string must be, in words: the document's description and the reason a value is refused.
    const WHAT: &'static str;
    /// The pattern the document states.
    const PATTERN: &'static str;
    /// The server's check: true for exactly the strings [`Self::PATTERN`] matches.
    fn check(value: &str) -> bool;

    /// `Ok` when `value` follows the rule, else a 400 naming `field`.
    fn require(field: &str, value: &str) -> Result<()> {
        if Self::check(value) {
            Ok(())
        } else {
            Err(ApiError::invalid(field, format!("must be {}", Self::WHAT)))
        }
    }

    /// The rule as a string schema.
    fn object() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(Self::WHAT))
            .pattern(Some(Self::PATTERN))
            .build()
    }
}

/// Declares a rule type whose schema is its pattern.
macro_rules! text_rule {
    ($(#[$doc:meta])* $name:ident, $what:expr, $pattern:expr, $check:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl TextRule for $name {
            const WHAT: &'static str = $what;
            const PATTERN: &'static str = $pattern;
            fn check(value: &str) -> bool {
                let check: fn(&str) -> bool = $check;
                check(value)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                <$name as TextRule>::object().into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// The number part of a quantity: its integer digits (no leading zero unless the integer is `0`),
/// its fraction's digits if a `.` follows (one to three), and what follows as the suffix.
fn quantity_parts(s: &str) -> Option<(&str, Option<&str>, &str)> {
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, rest) = s.split_at(int_end);
    if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    let Some(after_dot) = rest.strip_prefix('.') else {
        return Some((int, None, rest));
    };
    let frac_end = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
    let (frac, suffix) = after_dot.split_at(frac_end);
    (1..=3).contains(&frac.len()).then_some((int, Some(frac), suffix))
}

/// A CPU quantity in the API's grammar: vCPU with up to three decimals and at most 9 integer
/// digits, or millicores (`m`) with at most 12 digits, so that no value is finer than the ledger's
/// millicore or large enough to overflow it (times the largest batch).
fn cpu_quantity(s: &str, zero_allowed: bool) -> bool {
    let grammar = match quantity_parts(s) {
        Some((int, _, "")) => int.len() <= 9,
        Some((int, None, "m")) => int.len() <= 12,
        _ => false,
    };
    grammar && eci_core::MilliCpu::parse(s).is_ok_and(|c| zero_allowed || c.0 > 0)
}

/// A memory quantity in the API's grammar: a number of bytes with a decimal suffix (or none) and up
/// to three decimals, or whole `Mi`, or `Gi`/`Ti` with a fraction that comes to whole MiB; the integer
/// digits are bounded per suffix so that the largest value is about 10^12 MiB.
fn memory_quantity(s: &str) -> bool {
    let grammar = match quantity_parts(s) {
        Some((int, frac, suffix)) => {
            let max_digits = match (suffix, frac) {
                ("", _) => 18,
                ("k", _) => 15,
                ("M", _) => 12,
                ("G", _) => 9,
                ("T", _) => 6,
                ("Mi", None) => 12,
                ("Gi", _) => 9,
                ("Ti", _) => 6,
                _ => 0,
            };
            int.len() <= max_digits
        }
        None => false,
    };
    // A binary fraction finer than a MiB (`1.1Gi`) is refused by the parser; zero is not a size.
    grammar && eci_core::MiB::parse(s).is_ok_and(|m| m.0 > 0)
}

/// Integer part of at most 9, 12, 15 or 18 digits with no leading zero; pieces of the patterns below.
macro_rules! int {
    (9) => {
        "[1-9][0-9]{0,8}"
    };
    (12) => {
        "[1-9][0-9]{0,11}"
    };
    (6) => {
        "[1-9][0-9]{0,5}"
    };
    (15) => {
        "[1-9][0-9]{0,14}"
    };
    (18) => {
        "[1-9][0-9]{0,17}"
    };
}
/// `0.` and one to three digits that are not all zero.
macro_rules! small {
    () => {
        r"0\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9])"
    };
}
/// The fractions of a GiB or TiB that come to whole MiB (`5^d` divides them), zero included.
macro_rules! binary_fraction {
    () => {
        r"(0|5|00|25|50|75|000|125|250|375|500|625|750|875)"
    };
}
/// The same without zero.
macro_rules! binary_small {
    () => {
        r"0\.(5|25|50|75|125|250|375|500|625|750|875)"
    };
}

text_rule!(
    /// vCPU of an instance or an IDC.
    Cpu,
    "a CPU quantity above zero: vCPU with up to three decimals (`2`, `0.5`) or millicores (`500m`)",
    concat!("^(", int!(9), r"(\.[0-9]{1,3})?|", small!(), "|", int!(12), "m)$"),
    |s| cpu_quantity(s, false)
);

text_rule!(
    /// A tenant's CPU limit, which may be zero.
    CpuLimit,
    "a CPU quantity, zero or more: vCPU with up to three decimals (`2000`) or millicores (`500m`)",
    concat!("^((0|", int!(9), r")(\.[0-9]{1,3})?|(0|", int!(12), ")m)$"),
    |s| cpu_quantity(s, true)
);

text_rule!(
    /// Memory of an instance or an IDC.
    Memory,
    "a memory quantity of at least one byte, rounded up to whole MiB: bytes with a decimal suffix \
     `k`, `M`, `G`, `T` or none (up to three decimals), whole `Mi`, or `Gi`/`Ti` (`4Gi`, `1.5Gi`) \
     whose fraction comes to whole MiB",
    concat!(
        "^((",
        int!(18),
        r"(\.[0-9]{1,3})?|",
        small!(),
        ")|(",
        int!(15),
        r"(\.[0-9]{1,3})?|",
        small!(),
        ")k|(",
        int!(12),
        r"(\.[0-9]{1,3})?|",
        small!(),
        ")M|(",
        int!(9),
        r"(\.[0-9]{1,3})?|",
        small!(),
        ")G|(",
        int!(6),
        r"(\.[0-9]{1,3})?|",
        small!(),
        ")T|",
        int!(12),
        "Mi|(",
        int!(9),
        r"(\.",
        binary_fraction!(),
        ")?|",
        binary_small!(),
        ")Gi|(",
        int!(6),
        r"(\.",
        binary_fraction!(),
        ")?|",
        binary_small!(),
        ")Ti)$"
    ),
    memory_quantity
);

text_rule!(
    /// A container image reference.
    Image,
    "an image reference such as `nginx:1.27`: 1 to 512 printable ASCII characters, no spaces",
    "^[!-~]{1,512}$",
    |s| (1..=512).contains(&s.len()) && s.bytes().all(|b| (b'!'..=b'~').contains(&b))
);

/// True for an OpenSSH public key line: `<type> <base64> [comment]`.
fn ssh_public_key(s: &str) -> bool {
    let Some((kind, rest)) = s.split_once(' ') else { return false };
    let kind_ok = ["ssh-", "ecdsa-", "sk-"].iter().any(|p| kind.len() > p.len() && kind.starts_with(p))
        && kind.bytes().all(|b| (b'!'..=b'~').contains(&b));
    let rest = rest.trim_start_matches(' ');
    let (body, comment) = rest.split_once(' ').unwrap_or((rest, ""));
    let padding = body.len() - body.trim_end_matches('=').len();
    let base64 = body.trim_end_matches('=');
    kind_ok
        && !base64.is_empty()
        && padding <= 2
        && base64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && !comment.chars().any(is_control)
}

text_rule!(
    /// An OpenSSH public key.
    SshPublicKey,
    "an OpenSSH public key line: a key type starting `ssh-`, `ecdsa-` or `sk-`, spaces, the base64 \
     key, and an optional comment after a space without control characters",
    r"^(ssh|ecdsa|sk)-[!-~]+ +[A-Za-z0-9+/]+={0,2}( [^\x00-\x1f\x7f]*)?$",
    ssh_public_key
);

text_rule!(
    /// The name of an environment variable.
    EnvName,
    "an environment variable name: letters, digits and `_`, not starting with a digit",
    "^[A-Za-z_][A-Za-z0-9_]*$",
    |s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
);

/// Kubernetes' label name (and non-empty value): at most 63 characters of letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit.
fn label_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Kubernetes' DNS subdomain: at most 253 characters, dot-separated labels of lowercase letters,
/// digits and `-`, each starting and ending with a letter or digit.
fn dns_subdomain(s: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&s.len()) && s.split('.').all(label)
}

/// The pattern of a label key's shape; its lengths are [`LABEL_KEY_LENGTHS`].
const LABEL_KEY_SHAPE: &str = concat!(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?",
    "([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$"
);
/// The pattern of a label key's lengths: a prefix of at most 253 characters. One pattern cannot say
/// both, so the schema requires both patterns.
const LABEL_KEY_LENGTHS: &str = "^([^/]{1,253}/)?[^/]+$";

/// A Kubernetes label key, as put on every instance's Pod or VM.
pub struct LabelKey;

impl TextRule for LabelKey {
    const WHAT: &'static str = "a Kubernetes label key: an optional DNS subdomain prefix of at most 253 \
        characters and `/`, then a name of at most 63 letters, digits, `-`, `_` and `.` starting and \
        ending with a letter or digit";
    const PATTERN: &'static str = LABEL_KEY_SHAPE;
    fn check(key: &str) -> bool {
        match key.split_once('/') {
            Some((prefix, name)) => dns_subdomain(prefix) && label_name(name),
            None => label_name(key),
        }
    }
}

impl LabelKey {
    /// Both patterns, each a schema of its own, as the key of a label map needs them.
    pub fn both_patterns() -> Schema {
        let pattern = |p: &str| ObjectBuilder::new().schema_type(Type::String).pattern(Some(p)).build();
        let both = AllOfBuilder::new()
            .description(Some(<LabelKey as TextRule>::WHAT))
            .item(pattern(LABEL_KEY_SHAPE))
            .item(pattern(LABEL_KEY_LENGTHS))
            .build();
        Schema::AllOf(both)
    }
}

impl utoipa::PartialSchema for LabelKey {
    fn schema() -> RefOr<Schema> {
        RefOr::T(LabelKey::both_patterns())
    }
}

impl utoipa::ToSchema for LabelKey {}

text_rule!(
    /// A Kubernetes label value.
    LabelValue,
    "a Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_` and `.` starting and \
     ending with a letter or digit",
    "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$",
    |s| s.is_empty() || label_name(s)
);

text_rule!(
    /// A label filter of a listing.
    LabelFilter,
    "`key=value`: a label key and value joined by `=`",
    "=",
    |s| s.contains('=')
);

/// True for lowercase ASCII words (letters and digits) joined by single dashes.
fn area_code(s: &str) -> bool {
    eci_core::fleet::is_area_code(s)
}

text_rule!(
    /// A region, province or city code.
    AreaCode,
    "an area code: lowercase letters and digits in words joined by single `-` (`south-china`)",
    "^[a-z0-9]+(-[a-z0-9]+)*$",
    area_code
);

text_rule!(
    /// An area code, or `*` for anywhere.
    AreaSelector,
    "an area code (lowercase letters and digits in words joined by single `-`), or `*` for anywhere",
    r"^(\*|[a-z0-9]+(-[a-z0-9]+)*)$",
    |s| s == "*" || area_code(s)
);

/// True for `prefix` followed by 32 lowercase hexadecimal digits, the shape of every generated id.
fn generated_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

text_rule!(
    /// A batch id.
    BatchIdText,
    "a batch id: `b-` and 32 lowercase hexadecimal digits",
    "^b-[0-9a-f]{32}$",
    |s| generated_id(s, "b-")
);
text_rule!(
    /// An instance id.
    InstanceIdText,
    "an instance id: `i-` and 32 lowercase hexadecimal digits",
    "^i-[0-9a-f]{32}$",
    |s| generated_id(s, "i-")
);
text_rule!(
    /// A reservation id.
    ReservationIdText,
    "a reservation id: `r-` and 32 lowercase hexadecimal digits",
    "^r-[0-9a-f]{32}$",
    |s| generated_id(s, "r-")
);
text_rule!(
    /// A group id.
    GroupIdText,
    "a group id: `g-` and 32 lowercase hexadecimal digits",
    "^g-[0-9a-f]{32}$",
    |s| generated_id(s, "g-")
);
text_rule!(
    /// A group's name.
    GroupName,
    "a group name: 1 to 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
    "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    label_name
);
text_rule!(
    /// A 5-field cron expression: minute, hour, day of month, month, day of week.
    CronExpression,
    "a 5-field cron expression (minute hour day-of-month month day-of-week, such as `0 20 * * *`): \
     five fields of printable ASCII separated by single spaces",
    "^[!-~]{1,64}( [!-~]{1,64}){4}$",
    |s| {
        let fields: Vec<&str> = s.split(' ').collect();
        fields.len() == 5
            && fields.iter().all(|f| (1..=64).contains(&f.len()) && f.bytes().all(|b| (b'!'..=b'~').contains(&b)))
    }
);
text_rule!(
    /// An IANA time zone name.
    TimeZoneName,
    "an IANA time zone name such as `Asia/Shanghai` or `UTC`: letters, digits, `/`, `_`, `+` and `-`",
    "^[A-Za-z0-9/_+-]{1,64}$",
    |s| (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
);
text_rule!(
    /// A tenant id.
    TenantIdText,
    "a tenant id: `t-` and 32 lowercase hexadecimal digits",
    "^t-[0-9a-f]{32}$",
    |s| generated_id(s, "t-")
);
text_rule!(
    /// An API key id.
    KeyIdText,
    "an API key id: `k-` and 32 lowercase hexadecimal digits",
    "^k-[0-9a-f]{32}$",
    |s| generated_id(s, "k-")
);

text_rule!(
    /// An IDC id, chosen by admins.
    IdcIdText,
    "an IDC id: letters, digits, `-` and `_`",
    "^[A-Za-z0-9_-]+$",
    |s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
);

text_rule!(
    /// A price id, chosen by admins.
    PriceIdText,
    "a price id: letters, digits, `-`, `_` and `.`",
    "^[A-Za-z0-9._-]+$",
    |s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
);

text_rule!(
    /// Where a page starts.
    Cursor,
    "the `next_cursor` of the previous page: up to 255 printable ASCII characters",
    "^[!-~]{0,255}$",
    |s| s.len() <= 255 && s.bytes().all(|b| (b'!'..=b'~').contains(&b))
);

text_rule!(
    /// A UTC month.
    PeriodText,
    "a UTC month, `YYYY-MM`, from `0001-01` to `9999-12`",
    "^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])$",
    |s| s.parse::<eci_billing::Period>().is_ok()
);

text_rule!(
    /// How usage is grouped.
    GroupByText,
    "`batch`, `area`, `carrier`, `runtime`, `day`, or `label:` and a label key (printable ASCII)",
    "^(batch|area|carrier|runtime|day|label:[!-~]+)$",
    |s| match s.strip_prefix("label:") {
        Some(key) => !key.is_empty() && key.bytes().all(|b| (b'!'..=b'~').contains(&b)),
        None => matches!(s, "batch" | "area" | "carrier" | "runtime" | "day"),
    }
);

text_rule!(
    /// An `Idempotency-Key` header.
    IdempotencyKey,
    "1 to 255 printable ASCII characters, not starting or ending with a space",
    "^[!-~]([ -~]{0,253}[!-~])?$",
    |s| {
        (1..=255).contains(&s.len())
            && s.bytes().all(|b| (b' '..=b'~').contains(&b))
            && !s.starts_with(' ')
            && !s.ends_with(' ')
    }
);

text_rule!(
    /// The `runtimeClassName` of rich containers.
    RuntimeClass,
    "a RuntimeClass name: at most 253 lowercase letters, digits, `-` and `.`, starting and ending with \
     a letter or digit",
    r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
    |s| {
        let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        (1..=253).contains(&s.len())
            && s.starts_with(edge)
            && s.ends_with(edge)
            && s.chars().all(|c| edge(c) || c == '-' || c == '.')
    }
);

text_rule!(
    /// A host name or IP address.
    Host,
    "a host name or an IP address: letters, digits, `-`, `.`, `:`, `[` and `]`",
    r"^[A-Za-z0-9.:\[\]-]+$",
    |s| {
        let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']');
        !s.is_empty() && s.chars().all(host_char)
    }
);

/// A character no name may hold: the C0 controls and DEL, which logs and terminals misread and
/// PostgreSQL's text refuses (NUL).
fn is_control(c: char) -> bool {
    c < ' ' || c == '\x7f'
}

text_rule!(
    /// A tenant's account name.
    TenantName,
    "1 to 128 characters, no control characters, not starting or ending with a space",
    r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]{0,126}[^\x00-\x20\x7f])?$",
    |s| {
        (1..=128).contains(&s.chars().count())
            && !s.chars().any(is_control)
            && !s.starts_with(' ')
            && !s.ends_with(' ')
    }
);

text_rule!(
    /// A label for people: an API key's or an IDC's name.
    Label128,
    "up to 128 characters, no control characters",
    r"^[^\x00-\x1f\x7f]{0,128}$",
    |s| s.chars().count() <= 128 && !s.chars().any(is_control)
);

text_rule!(
    /// A kubeconfig context name.
    KubeContext,
    "1 to 253 characters, no control characters",
    r"^[^\x00-\x1f\x7f]{1,253}$",
    |s| (1..=253).contains(&s.chars().count()) && !s.chars().any(is_control)
);

/// A moment in RFC 3339's own form, `T` between date and time: what the document's `date-time`
/// means. chrono alone also takes a space there, which the document does not allow.
fn moment(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(format!("`{s}` is not an RFC 3339 date-time such as 2026-11-05T08:00:00Z"));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 date-time such as 2026-11-05T08:00:00Z: {e}"))
}

/// `#[serde(deserialize_with = "rules::rfc3339")]`.
pub fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<DateTime<Utc>, D::Error> {
    moment(&String::deserialize(d)?).map_err(D::Error::custom)
}

/// `#[serde(default, deserialize_with = "rules::rfc3339_opt")]`: absent is `None`.
pub fn rfc3339_opt<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?.map(|s| moment(&s)).transpose().map_err(D::Error::custom)
}

/// `Ok` for an id of the shape `R` describes, else the 404 a lookup of it would give: no `what`
/// has that id, and the database need not be asked.
pub fn known_id<R: TextRule>(what: &str, id: String) -> Result<String> {
    if R::check(&id) { Ok(id) } else { Err(ApiError::not_found(what, &id)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_follow_the_grammar_and_are_above_zero() {
        for ok in ["2", "0.5", "0.05", "0.001", "1.250", "500m", "999999999", "999999999999m", "0.50"] {
            assert!(Cpu::check(ok), "{ok}");
        }
        for bad in ["0", "0.0", "0m", "02", ".5", "5.", "1.2345", "1.5m", " 2", "2 ", "1e3", "2Gi", ""] {
            assert!(!Cpu::check(bad), "{bad}");
        }
        assert!(!Cpu::check("1000000000") && !Cpu::check("1000000000000m"), "bounded");
        assert!(CpuLimit::check("0") && CpuLimit::check("0m") && CpuLimit::check("0.000"));
    }

    #[test]
    fn memory_quantities_follow_the_grammar_and_come_to_whole_mib() {
        for ok in ["4Gi", "512Mi", "1.5Gi", "0.5Gi", "1.125Ti", "1.0Gi", "1G", "0.5k", "1", "1073741824"] {
            assert!(Memory::check(ok), "{ok}");
        }
        for bad in
            ["0", "0Mi", "0.0Gi", "1.1Gi", "1.5Mi", "1Ki", "4GB", "4gi", " 4Gi", "1.2345G", "1000000Ti"]
        {
            assert!(!Memory::check(bad), "{bad}");
        }
    }

    #[test]
    fn label_keys_follow_kubernetes() {
        for ok in ["app", "a", "app.kubernetes.io/name", "x/y", "A_b-c.d", &"a".repeat(63)] {
            assert!(LabelKey::check(ok), "{ok}");
        }
        let long_prefix = format!("{}/a", "a".repeat(254));
        for bad in ["", "-a", "a-", "a/b/c", "A/b", "a..b/c", "/a", "a/", &"a".repeat(64), &long_prefix] {
            assert!(!LabelKey::check(bad), "{bad}");
        }
        assert!(LabelKey::check(&format!("{}/a", "a".repeat(253))));
    }

    #[test]
    fn ssh_keys_are_openssh_public_key_lines() {
        for ok in
            ["ssh-ed25519 AAAAC3Nz test@example", "ssh-rsa AAAA==", "ecdsa-sha2-nistp256  AAAA me", "sk-x A "]
        {
            assert!(SshPublicKey::check(ok), "{ok}");
        }
        for bad in
            ["not a key", "ssh- AAAA", "ssh-rsa", "ssh-rsa AAAA===", "ssh-rsa AA*A", "ssh-rsa AAAA a\tb"]
        {
            assert!(!SshPublicKey::check(bad), "{bad}");
        }
    }

    #[test]
    fn names_hold_no_control_characters_and_no_outer_spaces() {
        assert!(TenantName::check("acme") && TenantName::check("a b") && TenantName::check("漢字"));
        for bad in ["", " acme", "acme ", "a\u{0}b", "a\nb", &"x".repeat(129)] {
            assert!(!TenantName::check(bad), "{bad:?}");
        }
        assert!(Label128::check("") && !Label128::check("\u{7f}"));
    }

    #[test]
    fn moments_are_rfc_3339_with_a_t() {
        for ok in ["2026-01-01T00:00:00Z", "2026-01-01t00:00:00.5z", "2026-06-30T23:59:60+02:00"] {
            assert!(moment(ok).is_ok(), "{ok}");
        }
        for bad in ["2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "2026-01-01", "now", ""] {
            assert!(moment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_have_their_generated_shape() {
        assert!(BatchIdText::check("b-0123456789abcdef0123456789abcdef"));
        for bad in
            ["b-nope", "i-0123456789abcdef0123456789abcdef", "b-0123456789ABCDEF0123456789ABCDEF", "b-"]
        {
            assert!(!BatchIdText::check(bad), "{bad}");
        }
        assert!(known_id::<BatchIdText>("batch", "x".into()).is_err());
    }
}
