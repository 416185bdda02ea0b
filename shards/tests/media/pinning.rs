//! `--media-cpu N` pins the media thread (the binary, so the thread is found by its name).

use crate::http::wait_until;
use crate::support::spawn_binary;

fn media_thread_cpus(pid: u32) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .find_map(|e| {
            let task = e.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            if comm.trim() != "media" {
                return None;
            }
            let status = std::fs::read_to_string(task.join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
}

#[test]
fn media_cpu_pins_the_media_thread() {
    let dir = testkit::temp_dir("media-pin");
    let flags = ["--media-listen", "127.0.0.1:0", "--media-cpu", "0"];
    let (mut child, _) = spawn_binary(&dir, &flags);
    let pid = child.id();
    wait_until("the media thread runs on CPU 0 only", || {
        media_thread_cpus(pid).as_deref() == Some("0")
    });
    child.kill().unwrap();
    child.wait().unwrap();
}
