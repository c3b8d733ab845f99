//! The operating-system side of the benchmarks: the open-file limit, the shared wall clock,
//! and what `/proc` says about a process (resident memory, CPU time).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
///
/// Child processes (workers, the spawned server) inherit it.
pub fn raise_nofile_limit() -> Result<libc::rlim_t> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                bail!("setrlimit(RLIMIT_NOFILE, {}): {}", lim.rlim_max, std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Wall-clock microseconds since the Unix epoch. Every process of a run reads the same
/// `CLOCK_REALTIME`, so a send time taken in one process and an arrival time taken in another
/// can be subtracted.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Resident set size (`VmRSS`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// User and system CPU time of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).context("utime")?;
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).context("stime")?;
    Ok((utime, stime))
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// CPU time of a process (or of several together: a cluster's nodes) over an interval:
/// `CpuMeter::start(pid)` or `CpuMeter::start_all(pids)`, then `elapsed()`.
pub struct CpuMeter {
    start: Vec<(u32, (u64, u64))>,
}

/// CPU seconds used over an interval.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuTime {
    pub user_secs: f64,
    pub system_secs: f64,
}

impl CpuTime {
    pub fn total(&self) -> f64 {
        self.user_secs + self.system_secs
    }
}

impl std::fmt::Display for CpuTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s ({:.2} user + {:.2} system)", self.total(), self.user_secs, self.system_secs)
    }
}

impl CpuMeter {
    pub fn start(pid: u32) -> Result<CpuMeter> {
        CpuMeter::start_all(&[pid])
    }

    pub fn start_all(pids: &[u32]) -> Result<CpuMeter> {
        let start = pids.iter().map(|p| Ok((*p, cpu_ticks(*p)?))).collect::<Result<Vec<_>>>()?;
        Ok(CpuMeter { start })
    }

    /// CPU time used since the start, summed over the processes.
    pub fn elapsed(&self) -> Result<CpuTime> {
        let hz = clock_ticks_per_sec() as f64;
        let (mut u, mut s) = (0u64, 0u64);
        for (pid, (u0, s0)) in &self.start {
            let (u1, s1) = cpu_ticks(*pid)?;
            u += u1.saturating_sub(*u0);
            s += s1.saturating_sub(*s0);
        }
        Ok(CpuTime { user_secs: u as f64 / hz, system_secs: s as f64 / hz })
    }
}
