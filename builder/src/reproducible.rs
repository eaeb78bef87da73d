//! Reproducible images: `SOURCE_DATE_EPOCH`, as BuildKit reads it (a build arg; buildx passes
//! the client's environment variable as one).
//!
//! With an epoch, every layer the build writes has its mtimes clamped to it, the config's
//! `created` is the epoch, and so is every history entry's `created` that is later than it (the
//! base image's older entries keep their dates, as BuildKit keeps them). The epoch is one of the
//! settings of each layer step's key, so a layer written with another epoch (or none) is not
//! reused: the step runs again and the miss names `SOURCE_DATE_EPOCH` as what changed.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::ImageConfig;
use crate::error::{BuildError, Result};

/// The build arg (and step setting) that carries the epoch.
pub(crate) const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// A build's epoch: its `SOURCE_DATE_EPOCH` build arg, else `fallback` (the builder's layer
/// options). An empty value means none, as in BuildKit.
pub fn source_date_epoch(
    build_args: &BTreeMap<String, String>,
    fallback: Option<i64>,
) -> Result<Option<i64>> {
    match build_args.get(SOURCE_DATE_EPOCH).map(|v| v.trim()) {
        None | Some("") => Ok(fallback),
        Some(v) => match v.parse::<i64>() {
            Ok(seconds) if OffsetDateTime::from_unix_timestamp(seconds).is_ok() => {
                Ok(Some(seconds))
            }
            _ => Err(BuildError::InvalidBuildArg {
                name: SOURCE_DATE_EPOCH.into(),
                message: format!("{v:?} is not a Unix time in seconds"),
            }),
        },
    }
}

/// `created` for the epoch (RFC 3339, as Go's `time.Time` marshals it).
fn created(epoch: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// Dates `config` by the epoch: its `created`, and every history entry later than the epoch
/// (or undated).
pub(crate) fn date_config(config: &mut ImageConfig, epoch: i64) {
    let (Ok(at), Some(stamp)) = (OffsetDateTime::from_unix_timestamp(epoch), created(epoch)) else {
        return;
    };
    for h in &mut config.history {
        let later = h
            .created
            .as_deref()
            .is_none_or(|c| !matches!(OffsetDateTime::parse(c, &Rfc3339), Ok(t) if t <= at));
        if later {
            h.created = Some(stamp.clone());
        }
    }
    config.created = Some(stamp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::History;

    fn args(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(SOURCE_DATE_EPOCH.to_string(), v.to_string())])
    }

    #[test]
    fn the_build_arg_wins_and_bad_values_are_refused() {
        assert_eq!(source_date_epoch(&BTreeMap::new(), None).unwrap(), None);
        assert_eq!(
            source_date_epoch(&BTreeMap::new(), Some(5)).unwrap(),
            Some(5)
        );
        assert_eq!(
            source_date_epoch(&args("1700000000"), Some(5)).unwrap(),
            Some(1700000000)
        );
        assert_eq!(source_date_epoch(&args(""), None).unwrap(), None);
        let e = source_date_epoch(&args("yesterday"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SOURCE_DATE_EPOCH") && e.contains("yesterday"),
            "{e}"
        );
    }

    #[test]
    fn later_dates_are_clamped_older_ones_kept() {
        let dated = |c: Option<&str>| History {
            created: c.map(String::from),
            ..Default::default()
        };
        let mut config = ImageConfig {
            history: vec![
                dated(Some("2001-02-03T04:05:06Z")),
                dated(Some("2030-01-01T00:00:00Z")),
                dated(Some("2023-11-14T22:13:20.5Z")),
                dated(None),
            ],
            ..Default::default()
        };
        date_config(&mut config, 1_700_000_000);
        let got: Vec<_> = config
            .history
            .iter()
            .map(|h| h.created.clone().unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "2001-02-03T04:05:06Z",
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z"
            ]
        );
        assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    }
}
