//! `--coalesce`: when a shard's batching wait (`--coalesce-us`) applies. Parsing and
//! validation only; the engine's `coalesce` module owns what the modes do.

use engine::coalesce::CoalesceMode;

use super::ConfigError;

/// The mode a flag or file value names: `adaptive` (the default) or `always`.
pub fn coalesce_mode(v: Option<&str>) -> Result<CoalesceMode, ConfigError> {
    match v {
        None => Ok(CoalesceMode::default()),
        Some("adaptive") => Ok(CoalesceMode::Adaptive),
        Some("always") => Ok(CoalesceMode::Always),
        Some(other) => Err(ConfigError::Invalid(format!(
            "coalesce must be adaptive or always (got {other:?})"
        ))),
    }
}

/// The mode's name, as the flag takes it.
pub fn coalesce_name(mode: CoalesceMode) -> &'static str {
    match mode {
        CoalesceMode::Adaptive => "adaptive",
        CoalesceMode::Always => "always",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name_and_anything_else_is_refused() {
        assert_eq!(coalesce_mode(None).unwrap(), CoalesceMode::Adaptive);
        for mode in [CoalesceMode::Adaptive, CoalesceMode::Always] {
            assert_eq!(coalesce_mode(Some(coalesce_name(mode))).unwrap(), mode);
        }
        let err = coalesce_mode(Some("sometimes")).unwrap_err().to_string();
        assert!(err.contains("adaptive or always"), "{err}");
    }
}
