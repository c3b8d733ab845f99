//! The scenarios. Each starts (or targets) a server, spreads its connections over worker
//! processes, measures, prints a table and a final JSON line.

pub mod fanout;
pub mod idle_rss;
pub mod rooms;

use crate::Target;

/// How many workers `clients` connections need, at most `--per-worker` each.
fn workers_for(target: &Target, clients: usize) -> usize {
    clients.div_ceil(target.per_worker as usize).max(1)
}

/// CPU cores of this machine (shared by the server and the load generator).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The note printed under every result: the load generator shares the machine.
fn print_machine_note(latency: bool) {
    let cores = cores();
    println!("  note: {cores} CPU cores, shared by the server and the load generator (same machine, loopback).");
    if latency {
        println!(
            "  Client CPU time competes with the server's, and a client busy reading other sockets reads a\n  \
             push later: latencies include that."
        );
    }
}
