//! Properties of the parsers that read untrusted text (the pod metrics file, `/proc` from a
//! possibly foreign mount, flag values): never a panic, and canonical forms round-trip.

use std::time::Duration;

use metrics_apiserver::pods::parse_pod_metrics;
use metrics_apiserver::proc::{cpu_usage_nanocores, parse_meminfo, parse_stat};
use metrics_apiserver::quantity::{
    Quantity, format_binary_bytes, format_decimal_nanos, format_go_duration, parse_go_duration,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn quantity_parsing_never_panics(s in "\\PC{0,40}") {
        let _ = Quantity::parse(&s);
    }

    #[test]
    fn quantity_like_text_never_panics(s in "[-+]?[0-9.]{0,45}(e-?[0-9]{1,3}|[numkMGTPE]|[KMGTPE]i)?") {
        if let Ok(q) = Quantity::parse(&s) {
            // Whatever parses prints in a form that parses back to the same value.
            prop_assert_eq!(Quantity::parse(&q.to_string()).map(|p| p.nanos).ok(), Some(q.nanos));
        }
    }

    #[test]
    fn decimal_nanos_round_trip(n in 0i64..i64::MAX) {
        let text = format_decimal_nanos(i128::from(n));
        prop_assert_eq!(Quantity::parse(&text).map(|q| q.nanos).ok(), Some(i128::from(n)));
    }

    #[test]
    fn binary_bytes_round_trip(bytes in 0i64..(1i64 << 62)) {
        let text = format_binary_bytes(i128::from(bytes));
        let parsed = Quantity::parse(&text).map(|q| q.nanos).ok();
        prop_assert_eq!(parsed, Some(i128::from(bytes) * 1_000_000_000));
    }

    #[test]
    fn go_durations_round_trip(nanos in 0u64..(400 * 24 * 3600 * 1_000_000_000u64)) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(parse_go_duration(&format_go_duration(d)).ok(), Some(d));
    }

    #[test]
    fn duration_parsing_never_panics(s in "\\PC{0,30}") {
        let _ = parse_go_duration(&s);
    }

    #[test]
    fn proc_parsing_never_panics(s in "\\PC{0,200}") {
        let _ = parse_stat(&s);
        let _ = parse_meminfo(&s);
    }

    #[test]
    fn cpu_usage_stays_within_the_cpus(
        a in proptest::collection::vec(0u64..1 << 40, 8),
        d in proptest::collection::vec(0u64..1 << 30, 8),
        cpus in 1u32..512,
    ) {
        let line = |v: &[u64]| format!("cpu {}\n", v.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
        let per_cpu: String = (0..cpus).map(|i| format!("cpu{i} 0 0 0 0\n")).collect();
        let after: Vec<u64> = a.iter().zip(&d).map(|(x, y)| x + y).collect();
        let (Ok(before), Ok(after)) = (parse_stat(&(line(&a) + &per_cpu)), parse_stat(&(line(&after) + &per_cpu))) else {
            return Err(TestCaseError::fail("fixtures must parse"));
        };
        if let Some(n) = cpu_usage_nanocores(&before, &after) {
            prop_assert!(u128::from(n) <= u128::from(cpus) * 1_000_000_000);
        }
    }

    #[test]
    fn pod_file_parsing_never_panics(s in "\\PC{0,200}") {
        let _ = parse_pod_metrics(&s, jiff::Timestamp::UNIX_EPOCH, Duration::from_secs(10));
    }
}
