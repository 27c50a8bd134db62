//! Host resources read over SSH from `/proc` and `df`, for hosts without an agent.

use fleetbus_schemas::events::agent::Resources;

use crate::error::ExecError;

/// One remote command printing every input in marked sections; CPU is two `/proc/stat` samples
/// 200 ms apart.
pub(crate) const COMMAND: &str =
    "echo '#loadavg'; cat /proc/loadavg; echo '#uptime'; cat /proc/uptime; \
echo '#meminfo'; cat /proc/meminfo; echo '#stat1'; head -n 1 /proc/stat; sleep 0.2; \
echo '#stat2'; head -n 1 /proc/stat; echo '#df'; df -Pk /";

fn section<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("#{name}\n");
    let start = out.find(&marker)? + marker.len();
    let rest = &out[start..];
    let end = rest.find("\n#").map(|i| i + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn cpu_times(line: &str) -> Option<(u64, u64)> {
    let nums: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    if nums.len() < 4 {
        return None;
    }
    let total: u64 = nums.iter().sum();
    // idle + iowait
    let idle = nums[3] + nums.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

/// Parses the output of [`COMMAND`].
pub(crate) fn parse(out: &str) -> Result<Resources, ExecError> {
    let bad =
        |what: &str| ExecError::Invalid(format!("cannot read {what} from the resources output"));
    let load: Vec<f32> = section(out, "loadavg")
        .ok_or_else(|| bad("/proc/loadavg"))?
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    if load.len() != 3 {
        return Err(bad("/proc/loadavg"));
    }
    let uptime_s = section(out, "uptime")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| bad("/proc/uptime"))? as u64;
    let meminfo = section(out, "meminfo").ok_or_else(|| bad("/proc/meminfo"))?;
    let mem = |key: &str| {
        meminfo.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
    };
    let mem_total_kb = mem("MemTotal").ok_or_else(|| bad("MemTotal"))?;
    let mem_available = mem("MemAvailable").ok_or_else(|| bad("MemAvailable"))?;
    let s1 = section(out, "stat1")
        .and_then(cpu_times)
        .ok_or_else(|| bad("/proc/stat"))?;
    let s2 = section(out, "stat2")
        .and_then(cpu_times)
        .ok_or_else(|| bad("/proc/stat"))?;
    let dt = s2.0.saturating_sub(s1.0);
    let di = s2.1.saturating_sub(s1.1);
    let cpu_pct = if dt == 0 {
        0.0
    } else {
        (100.0 * (dt.saturating_sub(di)) as f64 / dt as f64) as f32
    };
    let df_line = section(out, "df")
        .and_then(|s| s.lines().nth(1))
        .ok_or_else(|| bad("df"))?;
    let df: Vec<u64> = df_line
        .split_whitespace()
        .skip(1)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    if df.len() != 2 {
        return Err(bad("df"));
    }
    Ok(Resources {
        cpu_pct,
        mem_total_kb,
        mem_used_kb: mem_total_kb.saturating_sub(mem_available),
        disk_total_kb: df[0],
        disk_used_kb: df[1],
        load1: load[0],
        load5: load[1],
        load15: load[2],
        uptime_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_looking_sample() {
        let out = "#loadavg\n0.50 0.40 0.30 1/200 999\n#uptime\n12345.67 100.0\n#meminfo\nMemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:    4000 kB\n#stat1\ncpu  100 0 100 800 0 0 0 0 0 0\n#stat2\ncpu  150 0 150 900 0 0 0 0 0 0\n#df\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 1000 250 750 25% /\n";
        let r = parse(out).unwrap();
        assert_eq!(r.load1, 0.5);
        assert_eq!(r.load15, 0.3);
        assert_eq!(r.uptime_s, 12345);
        assert_eq!(r.mem_total_kb, 16000);
        assert_eq!(r.mem_used_kb, 12000);
        assert_eq!(r.disk_total_kb, 1000);
        assert_eq!(r.disk_used_kb, 250);
        assert!((r.cpu_pct - 50.0).abs() < 0.01, "{}", r.cpu_pct);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("nope").is_err());
    }
}
