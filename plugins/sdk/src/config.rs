//! Typed access to a plugin's key/value configuration.
//!
//! Every error names the key, so a user reading the EtcdBackup status knows
//! which field of the source block or which Secret key to fix.

use std::collections::BTreeMap;

/// The configuration a plugin receives in `open` (or a policy hook), as a map.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<String, String>,
}

/// A configuration problem, naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Build from the WIT `config` type (a list of key/value pairs).
    /// A later duplicate key wins.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self {
            values: pairs.into_iter().collect(),
        }
    }

    /// The value of `key`, if present and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The value of `key`, or an error saying it is required.
    pub fn required(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key).ok_or_else(|| {
            ConfigError(format!(
                "config key `{key}` is required but missing or empty"
            ))
        })
    }

    /// The value of `key` parsed as a number, or `default` when absent.
    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "config key `{key}` must be a non-negative whole number, got `{v}`"
                ))
            }),
        }
    }

    /// The value of `key` parsed as a boolean (`true`/`false`), or `default`.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(ConfigError(format!(
                "config key `{key}` must be `true` or `false`, got `{v}`"
            ))),
        }
    }

    /// Every key, for diagnostics (values are never logged: they may be secrets).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

#[cfg(any(feature = "storage", feature = "policy"))]
impl From<ConfigError> for crate::types::PluginError {
    fn from(e: ConfigError) -> Self {
        crate::types::PluginError::InvalidConfig(e.0)
    }
}
