//! The log file's failure paths, each with the fault injected: a failed directory sync after
//! a compaction's rename, short and failed writes, a failed rename, a real full disk (a small
//! tmpfs), and the directory sync owed when a log is first created.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::log_file::{Fault, LogError, LogFaults, LogFile, LogOp, ReplaceError};

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("sb-logfile-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `f` on a thread of its own with its own ring (the log file does its I/O through the
/// calling thread's io_uring, as on a shard).
fn on_shard<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || engine::block_on(async move { f().await }).expect("ring starts"))
        .join()
        .expect("test body ran");
}

/// The file's bytes without the zeros the log writes ahead of its end (preallocation).
fn logical(path: &Path) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    while b.last() == Some(&0) {
        b.pop();
    }
    b
}

async fn open(path: &Path, faults: &Arc<LogFaults>) -> LogFile {
    LogFile::open_with(path, Some(faults.clone()))
        .await
        .expect("log opens")
}

#[test]
fn after_a_renamed_compaction_whose_directory_sync_failed_appends_go_to_the_new_file() {
    let dir = temp_dir("dirsync");
    let path = dir.join("shard-0.log");
    on_shard(move || async move {
        let faults = Arc::new(LogFaults::default());
        let mut log = open(&path, &faults).await;
        log.append_sync(b"old-garbage-".to_vec()).await.unwrap();
        faults.arm(Fault::SyncDir, 2);
        match log.replace_with(b"SNAPSHOT".to_vec()).await {
            Err(ReplaceError::NotDurable(e)) => assert_eq!(e.op, LogOp::SyncDir),
            other => panic!("expected NotDurable, got {other:?}"),
        }
        assert!(log.dir_sync_pending());
        assert_eq!(logical(&path), b"SNAPSHOT", "renamed");
        // The next append retries the directory sync first, and fails with it.
        let e = log.append_sync(b"+A".to_vec()).await.unwrap_err();
        assert_eq!(e.op, LogOp::SyncDir);
        assert_eq!(logical(&path), b"SNAPSHOT", "nothing written");
        // Then it goes through, into the file the path names (not the deleted old one).
        log.append_sync(b"+A".to_vec()).await.unwrap();
        assert!(!log.dir_sync_pending());
        assert_eq!(faults.hits(Fault::SyncDir), 2);
        log.append_sync(b"+B".to_vec()).await.unwrap();
        assert_eq!(logical(&path), b"SNAPSHOT+A+B");
        assert_eq!(log.len(), 12);
    });
}

#[test]
fn a_short_or_failed_snapshot_write_or_rename_leaves_the_log_untouched() {
    let dir = temp_dir("snapshort");
    let path = dir.join("shard-0.log");
    on_shard(move || async move {
        let faults = Arc::new(LogFaults::default());
        let mut log = open(&path, &faults).await;
        log.append_sync(b"kept".to_vec()).await.unwrap();
        for fault in [Fault::SnapshotShort, Fault::Rename] {
            faults.arm(fault, 1);
            match log.replace_with(vec![b'S'; 40_000]).await {
                Err(ReplaceError::NotReplaced(e)) => {
                    if fault == Fault::SnapshotShort {
                        assert_eq!(e.op, LogOp::WriteSnapshot);
                        assert_eq!(e.kind(), std::io::ErrorKind::WriteZero, "{e}");
                    }
                }
                other => panic!("{fault:?}: expected NotReplaced, got {other:?}"),
            }
            assert_eq!(faults.hits(fault), 1);
            assert!(
                !path.with_extension("compact").exists(),
                "temp file removed"
            );
            log.append_sync(b"+".to_vec()).await.unwrap();
        }
        assert_eq!(logical(&path), b"kept++");
    });
}

#[test]
fn a_failed_or_short_append_is_cut_before_the_retry_so_no_garbage_stays_mid_file() {
    let dir = temp_dir("appendshort");
    let path = dir.join("shard-0.log");
    on_shard(move || async move {
        let faults = Arc::new(LogFaults::default());
        let mut log = open(&path, &faults).await;
        log.append_sync(b"one|".to_vec()).await.unwrap();
        for fault in [Fault::AppendShort, Fault::AppendWrite, Fault::Sync] {
            faults.arm(fault, 1);
            let e: LogError = log.append_sync(b"two-long|".to_vec()).await.unwrap_err();
            assert_eq!(log.len(), 4, "{fault:?}: nothing counted as written ({e})");
        }
        // A retry of a different (shorter) batch: what the short write left is gone.
        log.append_sync(b"2|".to_vec()).await.unwrap();
        assert_eq!(logical(&path), b"one|2|");
    });
}

#[test]
fn a_new_log_syncs_its_directory_and_a_failure_there_is_an_error() {
    let dir = temp_dir("create");
    let nested = dir.join("a/b");
    let path = nested.join("shard-0.log");
    on_shard(move || async move {
        let faults = Arc::new(LogFaults::default());
        faults.arm(Fault::SyncDir, 1);
        let e = LogFile::open_with(&path, Some(faults.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.op, LogOp::SyncDir, "{e}");
        // Opening again syncs the directory that the failed open left unsynced.
        let log = LogFile::open_with(&path, Some(faults.clone()))
            .await
            .unwrap();
        assert!(!log.dir_sync_pending());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "the log is the owner's only");
        assert_eq!(mode(&nested), 0o700);
    });
}

#[test]
fn a_full_disk_under_a_compaction_keeps_the_log_whole() {
    let dir = temp_dir("tmpfs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(dir.clone());
    let path = dir.join("shard-0.log");
    let filler = dir.join("filler");
    on_shard(move || async move {
        let mut log = LogFile::open(&path).await.unwrap();
        log.append_sync(vec![b'L'; 8_192]).await.unwrap();
        // Leave less room than the snapshot needs.
        std::fs::write(&filler, vec![0u8; 40 * 1024]).unwrap_or(());
        let err = log.replace_with(vec![b'S'; 40_000]).await.unwrap_err();
        assert!(matches!(err, ReplaceError::NotReplaced(_)), "{err}");
        assert_eq!(logical(&path), vec![b'L'; 8_192], "log untouched");
        assert!(!path.with_extension("compact").exists());
        // Appends still work once space returns.
        std::fs::remove_file(&filler).unwrap();
        log.append_sync(b"tail".to_vec()).await.unwrap();
        assert_eq!(logical(&path).len(), 8_196);
        assert_eq!(log.len(), 8_196);
    });
}

#[test]
fn appends_overwrite_zeros_written_ahead_so_the_size_changes_once_per_chunk() {
    use engine::log_file::LOG_PREALLOC_BYTES;
    let dir = temp_dir("prealloc");
    let path = dir.join("shard-0.log");
    on_shard(move || async move {
        let mut log = LogFile::open(&path).await.unwrap();
        log.append_sync(b"first".to_vec()).await.unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, LOG_PREALLOC_BYTES, "zeros up to the chunk boundary");
        for _ in 0..100 {
            log.append_sync(vec![b'x'; 1000]).await.unwrap();
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            size,
            "no growth inside"
        );
        assert_eq!(log.len(), 5 + 100_000);
        assert_eq!(logical(&path).len(), 5 + 100_000);
        log.append_sync(vec![b'y'; LOG_PREALLOC_BYTES as usize])
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * LOG_PREALLOC_BYTES,
            "past the end: the next boundary after the batch"
        );
    });
}

#[test]
fn a_snapshot_larger_than_a_write_piece_lands_whole_and_appends_follow_it() {
    let dir = temp_dir("pieces");
    let path = dir.join("shard-0.log");
    let piece = engine::log_file::SNAPSHOT_WRITE_PIECE_BYTES;
    // Two and a half pieces of bytes that differ from piece to piece (and never zero).
    let snapshot: Vec<u8> = (0..piece * 5 / 2).map(|i| (i % 251 + 1) as u8).collect();
    let want = snapshot.clone();
    let check = path.clone();
    on_shard(move || async move {
        let faults = Arc::new(LogFaults::default());
        let mut log = open(&path, &faults).await;
        log.append_sync(b"old".to_vec()).await.unwrap();
        log.replace_with(snapshot).await.expect("replaced");
        assert_eq!(log.len(), (piece * 5 / 2) as u64);
        log.append_sync(b"+A".to_vec()).await.unwrap();
    });
    let mut all = want;
    all.extend_from_slice(b"+A");
    assert_eq!(logical(&check), all);
}
