//! One source for every closed set of names payflow reads or writes: the Avro contract's enum
//! symbols (in contract order, which is their Avro index), the stages operators see, and the
//! states the services keep in their tables. Each is an enum declared with [`symbols!`], which
//! gives it its symbol (`as_str`, `Display`, serde), `ALL` in declaration order, and `FromStr`
//! with an error that lists what was expected.

/// A text that is not one of a set's symbols.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}: expected one of {}", expected.join(", "))]
pub struct UnknownSymbol {
    /// What the set is, e.g. `payment method`.
    pub kind: &'static str,
    /// The text that was given.
    pub value: String,
    /// Every symbol of the set.
    pub expected: Vec<&'static str>,
}

/// Declares an enum of symbols: `symbols! { #[doc] pub enum Name("kind") { Variant = "SYMBOL", ... } }`.
#[macro_export]
macro_rules! symbols {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $symbol:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $symbol)] $variant ),+
        }

        impl $name {
            /// Every symbol, in declaration (contract) order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The symbol.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $symbol),+
                }
            }

            /// The position in [`Self::ALL`]: the Avro enum index of a contract symbol.
            pub fn index(self) -> usize {
                Self::ALL.iter().position(|s| *s == self).unwrap_or_default()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::convert::TryFrom<String> for $name {
            type Error = $crate::symbols::UnknownSymbol;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::symbols::UnknownSymbol;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::symbols::UnknownSymbol {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: Self::ALL.iter().map(|v| v.as_str()).collect(),
                    })
            }
        }
    };
}

#[cfg(test)]
#[allow(unreachable_pub)] // a symbol set is declared public, here in a private module
mod tests {
    crate::symbols! {
        /// A test set.
        pub enum Colour("colour") {
            /// Red.
            Red = "RED",
            /// Dark blue.
            DarkBlue = "DARK_BLUE",
        }
    }

    #[test]
    fn a_symbol_set_round_trips_and_names_what_it_expected() {
        for colour in Colour::ALL {
            assert_eq!(colour.as_str().parse::<Colour>().unwrap(), *colour);
            assert_eq!(
                serde_json::to_string(colour).unwrap(),
                format!("\"{colour}\"")
            );
        }
        assert_eq!(Colour::DarkBlue.index(), 1);
        let err = "GREEN".parse::<Colour>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown colour "GREEN": expected one of RED, DARK_BLUE"#
        );
    }
}
