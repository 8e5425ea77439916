//! `/proc/stat` and `/proc/meminfo` as pure functions over their text, so that tests feed fixed
//! samples and the server can read another mount (e.g. the host's `/proc` at `/host/proc`).

use crate::Error;

/// Aggregate CPU time counters of the `cpu` line of `/proc/stat`, in USER_HZ ticks. The ticks
/// cancel out of [`cpu_usage_nanocores`], so USER_HZ never has to be known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Normal processes in user mode (includes guest time).
    pub user: u64,
    /// Niced processes in user mode (includes guest_nice time).
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Waiting for I/O (idle from the CPU's point of view).
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor: wall time this machine did not get.
    pub steal: u64,
}

impl CpuTimes {
    /// Ticks spent running something on this machine. guest/guest_nice are already inside
    /// user/nice, so adding them would count them twice.
    pub fn busy(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
    }

    /// All ticks: busy, idle, iowait and steal, i.e. wall time × online CPUs.
    pub fn total(&self) -> u64 {
        self.busy()
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.steal)
    }
}

/// What the server needs from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// The aggregate `cpu` line.
    pub times: CpuTimes,
    /// Number of `cpuN` lines: the online CPUs.
    pub online_cpus: u32,
    /// `btime`: boot time in seconds since the epoch, when present.
    pub boot_time: Option<i64>,
}

/// Parses `/proc/stat`. The `cpu` line needs at least user, nice, system and idle (kernels before
/// 2.6 stop there); later fields default to 0.
///
/// ```
/// let stat = metrics_apiserver::proc::parse_stat(
///     "cpu  100 0 50 800 10 0 5 0 0 0\ncpu0 50 0 25 400 5 0 2 0 0 0\ncpu1 50 0 25 400 5 0 3 0 0 0\nbtime 1700000000\n",
/// )?;
/// assert_eq!(stat.online_cpus, 2);
/// assert_eq!(stat.times.busy(), 155);
/// assert_eq!(stat.boot_time, Some(1_700_000_000));
/// # Ok::<(), metrics_apiserver::Error>(())
/// ```
pub fn parse_stat(text: &str) -> Result<CpuStat, Error> {
    let err = |reason: String| Error::Proc {
        file: "stat".into(),
        reason,
    };
    let mut times = None;
    let mut online_cpus = 0u32;
    let mut boot_time = None;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if key == "cpu" {
            let values = fields
                .map(|f| {
                    f.parse::<u64>()
                        .map_err(|_| err(format!("the cpu line has a non-numeric field {f:?}")))
                })
                .collect::<Result<Vec<u64>, Error>>()?;
            if values.len() < 4 {
                return Err(err(format!(
                    "the cpu line has {} fields, at least 4 are needed",
                    values.len()
                )));
            }
            let at = |i: usize| values.get(i).copied().unwrap_or(0);
            times = Some(CpuTimes {
                user: at(0),
                nice: at(1),
                system: at(2),
                idle: at(3),
                iowait: at(4),
                irq: at(5),
                softirq: at(6),
                steal: at(7),
            });
        } else if key.len() > 3
            && key.starts_with("cpu")
            && key[3..].bytes().all(|b| b.is_ascii_digit())
        {
            online_cpus += 1;
        } else if key == "btime" {
            boot_time = fields.next().and_then(|v| v.parse().ok());
        }
    }
    let times = times.ok_or_else(|| err("no aggregate cpu line".into()))?;
    if online_cpus == 0 {
        return Err(err("no per-CPU cpuN lines".into()));
    }
    Ok(CpuStat {
        times,
        online_cpus,
        boot_time,
    })
}

/// What the server needs from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable`, or `MemFree + Buffers + Cached` on kernels older than 3.14 that lack it.
    pub available_bytes: u64,
}

impl MemInfo {
    /// The machine's working set as this server reports it: `MemTotal − MemAvailable`.
    ///
    /// metrics-server reports the root cgroup's working set (usage minus inactive file pages)
    /// from the kubelet; `MemAvailable` also counts reclaimable slab and active file pages as
    /// free, so this is a little lower on a machine with a large page cache. It needs no
    /// cgroup mount and means the same thing on every Linux.
    pub fn working_set_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }
}

/// Parses `/proc/meminfo` (values in kB, which the kernel means as KiB).
///
/// ```
/// let mem = metrics_apiserver::proc::parse_meminfo(
///     "MemTotal:       16384000 kB\nMemFree:  1000 kB\nMemAvailable:   12288000 kB\n",
/// )?;
/// assert_eq!(mem.working_set_bytes(), 4_096_000 * 1024);
/// # Ok::<(), metrics_apiserver::Error>(())
/// ```
pub fn parse_meminfo(text: &str) -> Result<MemInfo, Error> {
    let err = |reason: String| Error::Proc {
        file: "meminfo".into(),
        reason,
    };
    let mut total = None;
    let mut available = None;
    let mut free = None;
    let mut buffers = None;
    let mut cached = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "MemFree" => &mut free,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let value = parts
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| err(format!("{key} has no numeric value")))?;
        let bytes = match parts.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(unit) => return Err(err(format!("{key} has unknown unit {unit:?}"))),
        }
        .ok_or_else(|| err(format!("{key} is too large")))?;
        *slot = Some(bytes);
    }
    let total_bytes = total.ok_or_else(|| err("no MemTotal".into()))?;
    let available_bytes = match (available, free, buffers, cached) {
        (Some(a), ..) => a,
        (None, Some(f), b, c) => f
            .saturating_add(b.unwrap_or(0))
            .saturating_add(c.unwrap_or(0)),
        (None, None, ..) => return Err(err("neither MemAvailable nor MemFree".into())),
    };
    Ok(MemInfo {
        total_bytes,
        available_bytes: available_bytes.min(total_bytes),
    })
}

/// CPU usage between two samples in nanocores (10⁻⁹ CPU): busy ticks over all ticks, times the
/// online CPUs. `None` when nothing can be said: no ticks passed, or a counter went backwards
/// (CPU hot-unplug or a different machine's file).
///
/// ```
/// use metrics_apiserver::proc::{cpu_usage_nanocores, parse_stat};
///
/// let before = parse_stat("cpu 0 0 0 0\ncpu0 0 0 0 0\ncpu1 0 0 0 0\n")?;
/// let after = parse_stat("cpu 50 0 50 100\ncpu0 25 0 25 50\ncpu1 25 0 25 50\n")?;
/// // Half of all ticks were busy on 2 CPUs: one CPU's worth.
/// assert_eq!(cpu_usage_nanocores(&before, &after), Some(1_000_000_000));
/// # Ok::<(), metrics_apiserver::Error>(())
/// ```
pub fn cpu_usage_nanocores(previous: &CpuStat, current: &CpuStat) -> Option<u64> {
    let busy = current.times.busy().checked_sub(previous.times.busy())?;
    let total = current.times.total().checked_sub(previous.times.total())?;
    if total == 0 {
        return None;
    }
    let cpus = u128::from(current.online_cpus);
    let nanocores = u128::from(busy) * cpus * 1_000_000_000 / u128::from(total);
    u64::try_from(nanocores.min(cpus * 1_000_000_000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/stat` from a 4-CPU Linux 6.x machine (trimmed of the intr line).
    const STAT_A: &str = "cpu  2255 34 2290 22625563 6290 127 456 0 0 0
cpu0 1132 34 1441 5655840 1390 64 272 0 0 0
cpu1 1123 0 849 5656929 4900 63 184 0 0 0
cpu2 0 0 0 5656397 0 0 0 0 0 0
cpu3 0 0 0 5656397 0 0 0 0 0 0
ctxt 1990473
btime 1700000000
processes 2915
procs_running 1
procs_blocked 0
softirq 2144 0 1041 0 0 0 0 0 0 0 1103
";

    /// The same machine 10 s (4000 ticks at USER_HZ=100 on 4 CPUs) later: 1000 busy ticks.
    const STAT_B: &str = "cpu  2855 34 2590 22628463 6390 127 556 0 0 0
cpu0 1432 34 1591 5656540 1440 64 322 0 0 0
cpu1 1423 0 999 5657629 4950 63 234 0 0 0
cpu2 0 0 0 5657097 0 0 0 0 0 0
cpu3 0 0 0 5657197 0 0 0 0 0 0
btime 1700000000
";

    const MEMINFO: &str = "MemTotal:       24576000 kB
MemFree:         1234567 kB
MemAvailable:   23341433 kB
Buffers:          123456 kB
Cached:         12345678 kB
SwapCached:            0 kB
HugePages_Total:       0
";

    #[test]
    fn stat_fixture() -> Result<(), Error> {
        let a = parse_stat(STAT_A)?;
        assert_eq!(a.online_cpus, 4);
        assert_eq!(a.boot_time, Some(1_700_000_000));
        assert_eq!(
            a.times,
            CpuTimes {
                user: 2255,
                nice: 34,
                system: 2290,
                idle: 22625563,
                iowait: 6290,
                irq: 127,
                softirq: 456,
                steal: 0,
            }
        );
        let b = parse_stat(STAT_B)?;
        assert_eq!(b.times.busy() - a.times.busy(), 1000);
        assert_eq!(b.times.total() - a.times.total(), 4000);
        // 1000 of 4000 ticks busy on 4 CPUs: exactly one core.
        assert_eq!(cpu_usage_nanocores(&a, &b), Some(1_000_000_000));
        Ok(())
    }

    #[test]
    fn usage_is_none_without_progress_or_when_counters_go_back() -> Result<(), Error> {
        let a = parse_stat(STAT_A)?;
        let b = parse_stat(STAT_B)?;
        assert_eq!(cpu_usage_nanocores(&a, &a), None);
        assert_eq!(cpu_usage_nanocores(&b, &a), None);
        Ok(())
    }

    #[test]
    fn usage_never_exceeds_the_cpus() -> Result<(), Error> {
        let a = parse_stat("cpu 0 0 0 10\ncpu0 0 0 0 10\n")?;
        // Every tick in between was busy.
        let b = parse_stat("cpu 100 0 0 10\ncpu0 100 0 0 10\n")?;
        assert_eq!(cpu_usage_nanocores(&a, &b), Some(1_000_000_000));
        Ok(())
    }

    #[test]
    fn old_kernels_with_four_cpu_fields() -> Result<(), Error> {
        let s = parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\n")?;
        assert_eq!(s.times.busy(), 6);
        assert_eq!(s.times.total(), 10);
        assert_eq!(s.boot_time, None);
        Ok(())
    }

    #[test]
    fn bad_stat_is_an_error() {
        for bad in [
            "",
            "cpu0 1 2 3 4\n",
            "cpu 1 2 3\ncpu0 1 2 3\n",
            "cpu 1 2 x 4\ncpu0 1 2 3 4\n",
            "cpu 1 2 3 4\n",
            "cpu -1 2 3 4\ncpu0 1 2 3 4\n",
            "\u{0}\u{1}binary",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meminfo_fixture() -> Result<(), Error> {
        let m = parse_meminfo(MEMINFO)?;
        assert_eq!(m.total_bytes, 24_576_000 * 1024);
        assert_eq!(m.available_bytes, 23_341_433 * 1024);
        assert_eq!(m.working_set_bytes(), 1_234_567 * 1024);
        Ok(())
    }

    #[test]
    fn meminfo_without_memavailable_falls_back() -> Result<(), Error> {
        let m =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")?;
        assert_eq!(m.available_bytes, 400 * 1024);
        assert_eq!(m.working_set_bytes(), 600 * 1024);
        Ok(())
    }

    #[test]
    fn bad_meminfo_is_an_error() {
        for bad in [
            "",
            "MemFree: 1 kB\n",
            "MemTotal: lots kB\nMemFree: 1 kB\n",
            "MemTotal: 1 MB\nMemFree: 1 kB\n",
            "MemTotal: 1 kB\n",
            "MemTotal: 99999999999999999999 kB\nMemFree: 1 kB\n",
        ] {
            assert!(parse_meminfo(bad).is_err(), "{bad:?}");
        }
    }
}
