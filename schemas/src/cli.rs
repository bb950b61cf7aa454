//! The command-line contract shared by every role (`CONTRACTS.md` §4): the
//! lake flags, each with its `SQI_*` environment variable, and the value
//! parsers every role uses. The Kafka flags are `sqi_kafka::KafkaArgs`;
//! role-specific flags live with their role.

use std::time::Duration;

use crate::lake::LakeOptions;

/// Where the lake is, shared by the roles that read or write it.
#[derive(Debug, Clone, clap::Args)]
pub struct LakeArgs {
    /// The lake root: s3://bucket/prefix, file:///path or memory://.
    #[arg(long = "lake-url", env = "SQI_LAKE_URL")]
    pub url: String,
    /// An S3-compatible endpoint, e.g. http://127.0.0.1:5000.
    #[arg(long = "s3-endpoint", env = "SQI_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

impl LakeArgs {
    /// The object store options these flags describe.
    pub fn options(&self) -> LakeOptions {
        LakeOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_options: Vec::new(),
        }
    }
}

/// A flag set with `args` given and every other flag at its default, read
/// without the environment's `SQI_*` variables. Configurations built in code
/// (tests, the demo, benchmarks) take their defaults from here, so each
/// default is written once, in its `#[arg]`.
pub fn defaults_with<T: clap::Args + clap::FromArgMatches>(
    args: &[&str],
) -> Result<T, clap::Error> {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true))
        .mut_args(|arg| arg.env(None));
    T::from_arg_matches(&command.try_get_matches_from(args)?)
}

/// Parses `250ms`, `2s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 2s, 5m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}` has an unknown unit; use ms, s, m or h")),
    }
}

/// Parses a byte size: `536870912`, `64KiB`, `512MiB`, `2GiB`, or Kubernetes'
/// `512Mi`, so that a pod's memory limit can be passed as it is written.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a byte size such as 512MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        other => return Err(format!("unknown byte unit `{other}`; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_binary_and_kubernetes_units() {
        assert_eq!(parse_bytes("536870912"), Ok(512 << 20));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("5TB").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }
}
