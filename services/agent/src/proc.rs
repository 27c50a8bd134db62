//! Resource readings from `/proc` and `df`. The parsers take text so they are tested on fixtures;
//! [`read_resources`] does the I/O.

use std::path::Path;
use std::time::Duration;

use fleetbus_schemas::events::agent::Resources;

use crate::AgentError;

/// Cumulative CPU time counters from the first (`cpu `) line of `/proc/stat`, in jiffies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuSample {
    /// Time spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// Total time over all states.
    pub total: u64,
}

impl CpuSample {
    /// Busy percentage between an earlier sample and this one, 0–100. Zero elapsed time
    /// (or counters that went backwards, e.g. a CPU hot-unplug) gives 0.
    pub(crate) fn busy_pct_since(&self, earlier: &CpuSample) -> f32 {
        let total = self.total.saturating_sub(earlier.total);
        let busy = self.busy.saturating_sub(earlier.busy).min(total);
        if total == 0 {
            return 0.0;
        }
        (busy as f64 * 100.0 / total as f64) as f32
    }
}

fn bad(what: &'static str, reason: impl Into<String>) -> AgentError {
    AgentError::Parse {
        what,
        reason: reason.into(),
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`:
/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`.
/// Guest time is already included in user/nice, so it is not added again.
pub(crate) fn parse_stat(text: &str) -> Result<CpuSample, AgentError> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad("/proc/stat", "no aggregate 'cpu ' line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            bad(
                "/proc/stat",
                format!("non-numeric counter in {line:?}: {e}"),
            )
        })?;
    if fields.len() < 4 {
        return Err(bad(
            "/proc/stat",
            format!(
                "expected at least 4 counters on the cpu line, found {}",
                fields.len()
            ),
        ));
    }
    // user nice system idle iowait irq softirq steal
    let counted: &[u64] = &fields[..fields.len().min(8)];
    let total: u64 = counted.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuSample {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Memory from `/proc/meminfo`: `(total_kb, used_kb)` where used = total − available.
/// Kernels before 3.14 have no `MemAvailable`; then free + buffers + cached stands in.
pub(crate) fn parse_meminfo(text: &str) -> Result<(u64, u64), AgentError> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let total = field("MemTotal").ok_or_else(|| bad("/proc/meminfo", "no MemTotal line"))?;
    let available = match field("MemAvailable") {
        Some(a) => a,
        None => {
            let free = field("MemFree")
                .ok_or_else(|| bad("/proc/meminfo", "no MemAvailable or MemFree line"))?;
            free + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0)
        }
    };
    Ok((total, total.saturating_sub(available)))
}

/// Load averages from `/proc/loadavg`: `0.52 0.58 0.59 1/467 12345`.
pub(crate) fn parse_loadavg(text: &str) -> Result<(f32, f32, f32), AgentError> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f32>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Ok((a, b, c)),
        _ => Err(bad(
            "/proc/loadavg",
            format!("expected three load averages, found {:?}", text.trim()),
        )),
    }
}

/// Seconds since boot from `/proc/uptime`: `350735.47 234388.90`.
pub(crate) fn parse_uptime(text: &str) -> Result<u64, AgentError> {
    let first = text
        .split_whitespace()
        .next()
        .ok_or_else(|| bad("/proc/uptime", "empty"))?;
    let secs: f64 = first
        .parse()
        .map_err(|e| bad("/proc/uptime", format!("{first:?}: {e}")))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad("/proc/uptime", format!("{first:?} is not a duration")));
    }
    Ok(secs as u64)
}

/// `(total_kb, used_kb)` from `df -Pk PATH` output (POSIX format: one header line, then
/// `Filesystem 1024-blocks Used Available Capacity Mounted-on`).
pub(crate) fn parse_df(text: &str) -> Result<(u64, u64), AgentError> {
    let line = text
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| bad("df -Pk", "no data line after the header"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // The file system name may contain spaces, so count from the end: … total used avail cap mount.
    if fields.len() < 6 {
        return Err(bad("df -Pk", format!("expected 6 columns, found {line:?}")));
    }
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|e| bad("df -Pk", format!("{s:?} in {line:?}: {e}")))
    };
    // Mount points may contain spaces too; the capacity column ends with '%'.
    let cap = fields
        .iter()
        .rposition(|f| f.ends_with('%'))
        .filter(|&i| i >= 3)
        .ok_or_else(|| bad("df -Pk", format!("no capacity column in {line:?}")))?;
    Ok((num(fields[cap - 3])?, num(fields[cap - 2])?))
}

async fn read(path: &Path, what: &'static str) -> Result<String, AgentError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| bad(what, format!("cannot read {}: {e}", path.display())))
}

/// Reads one CPU sample.
pub(crate) async fn cpu_sample(proc_root: &Path) -> Result<CpuSample, AgentError> {
    parse_stat(&read(&proc_root.join("stat"), "/proc/stat").await?)
}

/// Reads everything but the CPU percentage, which the caller computes from two samples.
pub(crate) async fn read_resources(
    proc_root: &Path,
    disk_path: &Path,
    cpu_pct: f32,
) -> Result<Resources, AgentError> {
    let (mem_total_kb, mem_used_kb) =
        parse_meminfo(&read(&proc_root.join("meminfo"), "/proc/meminfo").await?)?;
    let (load1, load5, load15) =
        parse_loadavg(&read(&proc_root.join("loadavg"), "/proc/loadavg").await?)?;
    let uptime_s = parse_uptime(&read(&proc_root.join("uptime"), "/proc/uptime").await?)?;
    let df = crate::services::run_command(
        "df",
        &["-Pk".as_ref(), disk_path.as_os_str()],
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| bad("df -Pk", e))?;
    let (disk_total_kb, disk_used_kb) = parse_df(&df.stdout)?;
    Ok(Resources {
        cpu_pct,
        mem_total_kb,
        mem_used_kb,
        disk_total_kb,
        disk_used_kb,
        load1,
        load5,
        load15,
        uptime_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_1: &str = "cpu  4705 356 584 3699 23 23 0 0 0 0\n\
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
intr 114930548 113199788 3 0 5 263 0 4 [... lots more numbers ...]\n\
ctxt 1990473\nbtime 1062191376\n";
    const STAT_2: &str = "cpu  4805 356 684 3799 23 23 0 0 0 0\n";

    #[test]
    fn cpu_percentage_comes_from_the_difference_of_two_samples() {
        let a = parse_stat(STAT_1).unwrap();
        assert_eq!(a.total, 4705 + 356 + 584 + 3699 + 23 + 23);
        assert_eq!(a.busy, a.total - 3699 - 23);
        let b = parse_stat(STAT_2).unwrap();
        // 100 user + 100 system busy, 100 idle: two thirds busy.
        let pct = b.busy_pct_since(&a);
        assert!((pct - 66.666_67).abs() < 0.01, "{pct}");
        assert_eq!(a.busy_pct_since(&a), 0.0);
        // Counters going backwards never give a negative or >100 value.
        assert_eq!(a.busy_pct_since(&b), 0.0);
    }

    #[test]
    fn stat_garbage_is_a_parse_error_naming_the_file() {
        for bad in ["", "intr 1 2 3\n", "cpu  a b c d\n", "cpu  1 2\n"] {
            let err = parse_stat(bad).unwrap_err().to_string();
            assert!(err.contains("/proc/stat"), "{err}");
        }
    }

    #[test]
    fn meminfo_uses_available_and_falls_back_without_it() {
        let modern = "MemTotal:        2048000 kB\nMemFree:          100000 kB\n\
MemAvailable:    1024000 kB\nBuffers:           50000 kB\nCached:           300000 kB\n";
        assert_eq!(parse_meminfo(modern).unwrap(), (2_048_000, 1_024_000));
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        assert_eq!(parse_meminfo(old).unwrap(), (1000, 600));
        assert!(parse_meminfo("MemFree: 1 kB\n").is_err());
        // A prefix of another field's name does not match it.
        assert!(parse_meminfo("MemTotalX: 5 kB\n").is_err());
    }

    #[test]
    fn loadavg_and_uptime_parse_and_reject_garbage() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n").unwrap(),
            (0.52, 0.58, 0.59)
        );
        assert!(parse_loadavg("0.5 x 0.1").is_err());
        assert!(parse_loadavg("").is_err());
        assert_eq!(parse_uptime("350735.47 234388.90\n").unwrap(), 350_735);
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1 2").is_err());
        assert!(parse_uptime("up 2").is_err());
    }

    #[test]
    fn df_posix_output_parses_even_with_spaces_in_names() {
        let df = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
/dev/sda1         10000000  4000000   6000000      40% /\n";
        assert_eq!(parse_df(df).unwrap(), (10_000_000, 4_000_000));
        let spaced = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
my disk 200 50 150 25% /mnt/my disk\n";
        assert_eq!(parse_df(spaced).unwrap(), (200, 50));
        assert!(parse_df("Filesystem 1024-blocks\n").is_err());
        assert!(parse_df("h\n/dev/x a b c 1% /\n").is_err());
    }

    #[tokio::test]
    async fn this_machine_yields_plausible_resources() {
        let a = cpu_sample(Path::new("/proc")).await.unwrap();
        let r = read_resources(Path::new("/proc"), Path::new("/"), 0.0)
            .await
            .unwrap();
        assert!(a.total > 0);
        assert!(r.mem_total_kb > 0 && r.mem_used_kb <= r.mem_total_kb);
        assert!(r.disk_total_kb > 0 && r.disk_used_kb <= r.disk_total_kb);
    }
}
