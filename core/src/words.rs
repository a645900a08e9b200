//! Product words: the enums whose values customers and operators type and read (carriers,
//! runtimes, IDC statuses, lifecycle states), each spelled once by [`word_enum!`], so that parsing,
//! printing, serde, the CLI's choices and the API document's lists can never disagree.

/// An enum of product words.
pub trait Word: Copy + Eq + 'static {
    /// What a value of this kind is called in messages (`carrier`, `instance state`).
    const KIND: &'static str;
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The value's word, as the API, the CLI and the store spell it.
    fn as_str(&self) -> &'static str;
}

/// Why a product word could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}; expected one of: {expected}")]
pub struct UnknownWord {
    /// What kind of word was expected.
    pub kind: &'static str,
    /// What was given.
    pub value: String,
    /// The words that would have been accepted, comma-separated.
    pub expected: String,
}

/// Reads `s` as one of `W`'s words.
pub fn parse_word<W: Word>(s: &str) -> Result<W, UnknownWord> {
    W::ALL.iter().copied().find(|w| w.as_str() == s).ok_or_else(|| UnknownWord {
        kind: W::KIND,
        value: s.to_string(),
        expected: W::ALL.iter().map(Word::as_str).collect::<Vec<_>>().join(", "),
    })
}

/// Declares an enum of product words: the enum (serialised as its words), `ALL`, `as_str`,
/// [`Word`], `FromStr` and `Display`. Exported for the crates whose words are their own (the
/// scaler's group modes and conditions).
#[macro_export]
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:expr, {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The value's word, as the API, the CLI and the store spell it.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $crate::words::Word for $name {
            const KIND: &'static str = $kind;
            const ALL: &'static [$name] = &$name::ALL;
            fn as_str(&self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::words::UnknownWord;
            fn from_str(s: &str) -> Result<Self, $crate::words::UnknownWord> {
                $crate::words::parse_word(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub use word_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Carrier, IdcStatus, Runtime};
    use crate::lifecycle::{BatchState, InstanceState, ReservationState};
    use crate::placement::{CarrierPerIdc, Strategy};

    fn round_trips<W: Word + std::str::FromStr<Err = UnknownWord> + std::fmt::Debug + serde::Serialize>() {
        for w in W::ALL {
            assert_eq!(w.as_str().parse::<W>(), Ok(*w));
            assert_eq!(serde_json::to_string(w).unwrap(), format!("\"{}\"", w.as_str()));
        }
        let refused = "Nope".parse::<W>().unwrap_err();
        assert_eq!(refused.kind, W::KIND);
        assert_eq!(refused.expected, W::ALL.iter().map(Word::as_str).collect::<Vec<_>>().join(", "));
    }

    #[test]
    fn every_word_parses_prints_and_serialises_as_itself() {
        round_trips::<Carrier>();
        round_trips::<Runtime>();
        round_trips::<IdcStatus>();
        round_trips::<InstanceState>();
        round_trips::<BatchState>();
        round_trips::<ReservationState>();
        round_trips::<Strategy>();
        round_trips::<CarrierPerIdc>();
        assert_eq!(
            "gsm".parse::<Carrier>().unwrap_err().to_string(),
            "`gsm` is not a valid carrier; expected one of: telecom, unicom, mobile, bgp"
        );
    }
}
