//! Restart strategies for failed jobs, with Flink's names and meanings:
//! - `none`: a failed job stays failed;
//! - `fixed-delay`: up to `restart-strategy.fixed-delay.attempts` restarts, each after
//!   `restart-strategy.fixed-delay.delay`;
//! - `exponential-delay`: the first restart after `restart-strategy.exponential-delay.initial-backoff`,
//!   each later one after `backoff-multiplier` times the previous delay, capped at `max-backoff`,
//!   up to `restart-strategy.exponential-delay.attempts-before-reset-backoff` restarts (unlimited
//!   when not set, as in Flink).
//!
//! The strategy is chosen by `restart-strategy.type` (or `restart-strategy`). Durations are
//! written as Flink writes them: `10 s`, `500 ms`, `1 min`, `2h`; a bare number is milliseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use rivulet_planner::ddl::parse_duration;

use crate::error::{SqlError, sqlstate};

/// When a failed job is restarted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartPolicy {
    None,
    FixedDelay {
        attempts: u32,
        delay: Duration,
    },
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        attempts: Option<u32>,
    },
}

fn invalid(key: &str, value: &str, expected: &str) -> SqlError {
    SqlError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{key}\": \"{value}\""),
    )
    .with_hint(format!("Expected {expected}."))
}

impl RestartPolicy {
    /// The policy `settings` choose, starting from `default` for anything they leave out.
    pub fn from_settings(
        settings: &BTreeMap<String, String>,
        default: RestartPolicy,
    ) -> Result<RestartPolicy, SqlError> {
        let get = |k: &str| {
            settings
                .get(k)
                .map(|v| v.trim().trim_matches('\'').to_string())
        };
        let kind = get("restart-strategy.type").or_else(|| get("restart-strategy"));
        let duration = |key: &str, fallback: Duration| -> Result<Duration, SqlError> {
            match get(key) {
                Some(v) => {
                    parse_duration(&v).ok_or_else(|| invalid(key, &v, "a duration such as '10 s'"))
                }
                None => Ok(fallback),
            }
        };
        let count = |key: &str| -> Result<Option<u32>, SqlError> {
            get(key)
                .map(|v| v.parse().map_err(|_| invalid(key, &v, "a whole number")))
                .transpose()
        };
        let kind = match kind {
            Some(k) => k.to_ascii_lowercase(),
            None => match default {
                RestartPolicy::None => "none".into(),
                RestartPolicy::FixedDelay { .. } => "fixed-delay".into(),
                RestartPolicy::ExponentialDelay { .. } => "exponential-delay".into(),
            },
        };
        Ok(match kind.as_str() {
            "none" | "off" | "disable" => RestartPolicy::None,
            "fixed-delay" | "fixeddelay" => {
                let (attempts, delay) = match default {
                    RestartPolicy::FixedDelay { attempts, delay } => (attempts, delay),
                    _ => (1, Duration::from_secs(1)),
                };
                RestartPolicy::FixedDelay {
                    attempts: count("restart-strategy.fixed-delay.attempts")?.unwrap_or(attempts),
                    delay: duration("restart-strategy.fixed-delay.delay", delay)?,
                }
            }
            "exponential-delay" | "exponentialdelay" => {
                let (initial, max, multiplier, attempts) = match default {
                    RestartPolicy::ExponentialDelay {
                        initial,
                        max,
                        multiplier,
                        attempts,
                    } => (initial, max, multiplier, attempts),
                    _ => (Duration::from_secs(1), Duration::from_secs(60), 1.5, None),
                };
                let key = "restart-strategy.exponential-delay.backoff-multiplier";
                let multiplier = match get(key) {
                    Some(v) => v
                        .parse::<f64>()
                        .ok()
                        .filter(|m| m.is_finite() && *m >= 1.0)
                        .ok_or_else(|| invalid(key, &v, "a number of at least 1.0"))?,
                    None => multiplier,
                };
                RestartPolicy::ExponentialDelay {
                    initial: duration(
                        "restart-strategy.exponential-delay.initial-backoff",
                        initial,
                    )?,
                    max: duration("restart-strategy.exponential-delay.max-backoff", max)?,
                    multiplier,
                    attempts: count(
                        "restart-strategy.exponential-delay.attempts-before-reset-backoff",
                    )?
                    .or(attempts),
                }
            }
            other => {
                return Err(invalid(
                    "restart-strategy.type",
                    other,
                    "none, fixed-delay or exponential-delay",
                ));
            }
        })
    }

    /// The delay before restart number `done + 1`, or `None` when the strategy gives up.
    pub fn delay(&self, done: u32) -> Option<Duration> {
        match *self {
            RestartPolicy::None => None,
            RestartPolicy::FixedDelay { attempts, delay } => (done < attempts).then_some(delay),
            RestartPolicy::ExponentialDelay {
                initial,
                max,
                multiplier,
                attempts,
            } => {
                if attempts.is_some_and(|a| done >= a) {
                    return None;
                }
                let factor = multiplier.powi(done.min(1000) as i32);
                let secs = (initial.as_secs_f64() * factor).min(max.as_secs_f64());
                Some(Duration::from_secs_f64(secs.max(0.0)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations_are_read_as_flink_writes_them() {
        assert_eq!(parse_duration("10 s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("'500ms'"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2 min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("ten seconds"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
    }

    #[test]
    fn exponential_delay_grows_to_its_cap_and_stops_after_its_attempts() {
        let default = RestartPolicy::FixedDelay {
            attempts: 3,
            delay: Duration::from_secs(1),
        };
        let p = RestartPolicy::from_settings(
            &settings(&[
                ("restart-strategy.type", "exponential-delay"),
                (
                    "restart-strategy.exponential-delay.initial-backoff",
                    "100 ms",
                ),
                ("restart-strategy.exponential-delay.max-backoff", "1 s"),
                (
                    "restart-strategy.exponential-delay.backoff-multiplier",
                    "2.0",
                ),
                (
                    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
                    "6",
                ),
            ]),
            default,
        )
        .unwrap();
        let delays: Vec<Option<u128>> = (0..7).map(|i| p.delay(i).map(|d| d.as_millis())).collect();
        assert_eq!(
            delays,
            vec![
                Some(100),
                Some(200),
                Some(400),
                Some(800),
                Some(1000),
                Some(1000),
                None
            ]
        );
    }

    #[test]
    fn fixed_delay_and_none_and_bad_values() {
        let default = RestartPolicy::FixedDelay {
            attempts: 3,
            delay: Duration::from_secs(1),
        };
        let p = RestartPolicy::from_settings(
            &settings(&[("restart-strategy.fixed-delay.attempts", "1")]),
            default,
        )
        .unwrap();
        assert_eq!(p.delay(0), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(1), None);
        let none =
            RestartPolicy::from_settings(&settings(&[("restart-strategy", "none")]), default);
        assert_eq!(none.unwrap().delay(0), None);
        let bad = RestartPolicy::from_settings(
            &settings(&[("restart-strategy.fixed-delay.delay", "soon")]),
            default,
        );
        assert_eq!(bad.unwrap_err().code, "22023");
        let bad =
            RestartPolicy::from_settings(&settings(&[("restart-strategy.type", "often")]), default);
        assert!(bad.is_err());
    }
}
