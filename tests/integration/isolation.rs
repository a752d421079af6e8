//! A harness third-party code cannot break or fool: plugins that prune nothing, set mask
//! bits for weights that do not exist, abort, segfault, loop or allocate without bound each
//! give error rows while the bench completes and the other pruner's rows stay what they are
//! without the fixture; one writer per run folder; numbers bit-identical through merge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use hyperprune_tests::{digits_zoo, ensure_built, fixtures, hyperprune, hyperprune_with_env, release_dir, text};

/// A 2-member digits zoo (all test members), trained once per test process.
fn zoo() -> &'static Path {
    static ZOO: OnceLock<PathBuf> = OnceLock::new();
    ZOO.get_or_init(|| digits_zoo("isolation-zoo", 2, 2, "0,0,1"))
}

fn bench_args<'a>(out: &'a Path, pruners: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let plugin = fixtures().misbehave.to_str().unwrap();
    let mut args = vec!["--plugin", plugin, "bench", "--zoo", zoo().to_str().unwrap(), "--pruners", pruners];
    args.extend(["--compression", "2,8", "--out", out.to_str().unwrap(), "-q"]);
    args.extend(extra);
    args
}

/// `hyperprune prune` of `model` with the fixture in `mode` at sparsity 0.75.
fn prune_misbehave(model: &Path, mode: &str, isolate: &str, out: &Path) -> std::process::Output {
    let (plugin, mode) = (fixtures().misbehave.to_str().unwrap(), format!("mode={mode}"));
    let (model, out) = (model.to_str().unwrap(), out.to_str().unwrap());
    hyperprune(&[
        "--plugin",
        plugin,
        "prune",
        "--model",
        model,
        "--pruner",
        "misbehave",
        "--opt",
        &mode,
        "--sparsity",
        "0.75",
        "--isolate",
        isolate,
        "--out",
        out,
    ])
}

/// The rows of a run as JSON objects, `prune_seconds` dropped (the only field that may
/// differ between two runs of the same task).
fn rows(run: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(run.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let serde_json::Value::Object(mut m) = serde_json::from_str(l).unwrap() else {
                panic!("not an object: {l}")
            };
            m.remove("prune_seconds");
            m
        })
        .collect()
}

/// Magnitude's rows without any fixture beside it.
fn magnitude_alone() -> &'static Vec<serde_json::Map<String, serde_json::Value>> {
    static ROWS: OnceLock<Vec<serde_json::Map<String, serde_json::Value>>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let run = tempfile::tempdir().unwrap();
        let o = hyperprune(&bench_args(run.path(), "magnitude", &[]));
        assert!(o.status.success(), "{:?}", text(&o));
        rows(run.path())
    })
}

/// Benches the fixture in `mode` beside magnitude; checks that every fixture row is an
/// error containing `expected`, that the bench completed, and that magnitude's rows equal
/// those of a run without the fixture.
fn misbehaving(mode: &str, extra: &[&str], expected: &str) {
    let run = tempfile::tempdir().unwrap();
    let option = format!("misbehave.mode={mode}");
    let mut more = vec!["--opt", option.as_str()];
    more.extend(extra);
    let o = hyperprune(&bench_args(run.path(), "misbehave,magnitude", &more));
    assert!(o.status.success(), "the bench completes: {:?}", text(&o));
    let all = rows(run.path());
    assert_eq!(all.len(), 8, "2 members x 2 pruners x 2 compressions");
    let (fixture, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r["pruner"] == "misbehave");
    for row in &fixture {
        assert_eq!(row["status"], "error", "{row:?}");
        let error = row["error"].as_str().unwrap();
        assert!(error.contains(expected), "mode {mode}: expected '{expected}' in '{error}'");
    }
    assert_eq!(&others, magnitude_alone(), "mode {mode}: magnitude's rows are what they are without the fixture");
    let summary = std::fs::read_to_string(run.path().join("summary.md")).unwrap();
    let fixture_line = summary.lines().find(|l| l.contains("misbehave")).unwrap_or_default();
    assert!(!fixture_line.contains("**"), "a fixture with no ok row is never shown as best: {fixture_line}");
}

#[test]
fn a_pruner_that_prunes_nothing_is_an_error_not_the_best() {
    misbehaving(
        "prune-nothing",
        &[],
        "achieved sparsity 0.000000 (0 of 3592 weights pruned) differs from the requested",
    );
}

#[test]
fn mask_bits_past_a_layers_end_are_an_error() {
    misbehaving("stray-bits", &[], "has bits set past its");
}

#[test]
fn an_aborting_plugin_is_an_error_row() {
    misbehaving("abort", &[], "the worker aborted (SIGABRT)");
}

#[test]
fn a_segfaulting_plugin_is_an_error_row() {
    misbehaving("segfault", &[], "segmentation fault (SIGSEGV)");
}

#[test]
fn a_looping_plugin_times_out() {
    misbehaving("loop", &["--timeout", "1"], "timed out after 1 s");
}

#[test]
fn a_plugin_that_allocates_without_bound_runs_out_of_its_memory() {
    misbehaving("allocate", &["--worker-memory", "256"], "ran out of memory (the worker's limit is 256 MiB");
}

#[test]
fn in_process_runs_give_the_same_rows_as_isolated_ones() {
    let run = tempfile::tempdir().unwrap();
    let o = hyperprune(&bench_args(run.path(), "magnitude", &["--isolate", "none"]));
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(&rows(run.path()), magnitude_alone());
}

#[test]
fn a_second_bench_into_a_busy_folder_refuses_and_no_key_is_written_twice() {
    ensure_built();
    let run = tempfile::tempdir().unwrap();
    // The first bench holds the folder for a few seconds: a looping fixture, 1 s timeouts.
    let first_args = bench_args(run.path(), "misbehave,magnitude", &["--opt", "misbehave.mode=loop", "--timeout", "1"]);
    let mut first = Command::new(release_dir().join("hyperprune"))
        .args(&first_args)
        .env_remove("HYPERPRUNE_PLUGIN_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = run.path().join(".lock");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(start.elapsed().as_secs() < 60, "the first bench took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = hyperprune(&bench_args(run.path(), "magnitude", &[]));
    let (_, stderr) = text(&second);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("being written by another process (pid {})", first.id())), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(first.wait().unwrap().success());
    let all = rows(run.path());
    let keys: std::collections::HashSet<String> =
        all.iter().map(|r| format!("{}|{}|{}", r["member"], r["pruner"], r["requested_sparsity"])).collect();
    assert_eq!((all.len(), keys.len()), (8, 8), "every key once");
    // The lock is released with the process: a third bench resumes and adds nothing.
    let third = hyperprune(&bench_args(run.path(), "misbehave,magnitude", &["--opt", "misbehave.mode=loop"]));
    assert!(third.status.success(), "{:?}", text(&third));
    assert_eq!(rows(run.path()).len(), 8);
}

#[test]
fn a_pruner_named_twice_is_refused() {
    let run = tempfile::tempdir().unwrap();
    let o = hyperprune(&bench_args(run.path(), "magnitude,random,magnitude", &[]));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--pruners names 'magnitude' twice"), "{stderr}");
}

#[test]
fn merge_and_resume_keep_every_number_bit_for_bit() {
    let run = tempfile::tempdir().unwrap();
    let o = hyperprune(&bench_args(run.path(), "magnitude,random", &["--stop-after", "3"]));
    assert!(o.status.success(), "{:?}", text(&o));
    let before = std::fs::read_to_string(run.path().join("results.jsonl")).unwrap();
    let o = hyperprune(&bench_args(run.path(), "magnitude,random", &[]));
    assert!(o.status.success(), "{:?}", text(&o));
    let resumed = std::fs::read_to_string(run.path().join("results.jsonl")).unwrap();
    assert!(resumed.starts_with(&before), "resuming appends; it never rewrites a row");
    assert_eq!(resumed.lines().count(), 8);
    let merged = tempfile::tempdir().unwrap();
    let out = merged.path().join("m");
    let o = hyperprune(&["bench", "merge", "--out", out.to_str().unwrap(), run.path().to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let after = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(after, resumed, "a merge writes every row byte for byte, so every float bit for bit");
    // And the parsed numbers are the written ones: no float changes on a read-back.
    for line in after.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&row).unwrap().len(), line.len(), "{line}");
    }
}

#[test]
fn a_failed_merge_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let o =
        hyperprune(&["bench", "merge", "--out", out.to_str().unwrap(), dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(!out.exists(), "nothing left behind");
}

/// Benches the fixture in `mode` (a failure while configuring) beside magnitude: the bench
/// completes with magnitude's rows alone and one warning containing `expected`; returns
/// stderr.
fn configuring_fails(mode: &str, expected: &str) -> String {
    let run = tempfile::tempdir().unwrap();
    let option = format!("misbehave.mode={mode}");
    let o = hyperprune(&bench_args(run.path(), "misbehave,magnitude", &["--opt", &option]));
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("misbehave: disabled for this bench: plugin 'misbehave' {expected}")), "{stderr}");
    assert_eq!(&rows(run.path()), magnitude_alone());
    stderr
}

#[test]
fn a_plugin_that_panics_while_configuring_sits_out_and_the_others_run() {
    let stderr = configuring_fails("panic-in-configure", "panicked: fixture panic in configure");
    assert!(!stderr.contains("panicked at"), "no panic hook text: {stderr}");
}

#[test]
fn a_plugin_that_aborts_while_configuring_sits_out_and_the_others_run() {
    // Configuring is tried in a worker first, so the abort ends the worker, not the bench.
    configuring_fails("abort-in-configure", "crashed while configuring: the worker aborted (SIGABRT)");
    // prune and fit under --isolate worker say the same in one line and exit non-zero.
    let dir = tempfile::tempdir().unwrap();
    let model = hyperprune_tests::write_model(dir.path(), "cnn-digits", 1);
    let out = dir.path().join("pruned.safetensors");
    let o = prune_misbehave(&model, "abort-in-configure", "worker", &out);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("plugin 'misbehave' crashed while configuring: the worker aborted (SIGABRT)"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_plugin_that_aborts_while_loading_is_a_file_that_failed_to_load() {
    // `info` aborts as the host loads the file: under --isolate worker (the bench default) the
    // file is tried in a worker first; found on the plugin path it is a warning, asked for by
    // name it is an unknown pruner that names the file and the crash.
    let plugin = fixtures().misbehave.to_str().unwrap().to_string();
    let bench = |out: &Path, pruners: &str| {
        let (zoo, out) = (zoo().to_str().unwrap(), out.to_str().unwrap());
        hyperprune_with_env(
            &["bench", "--zoo", zoo, "--pruners", pruners, "--compression", "2,8", "--out", out, "-q"],
            &[("HYPERPRUNE_PLUGIN_PATH", &plugin), ("HYPERPRUNE_FIXTURE_ABORT_IN_INFO", "1")],
        )
    };
    let run = tempfile::tempdir().unwrap();
    let o = bench(run.path(), "magnitude");
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("skipped a plugin that cannot load"), "{stderr}");
    assert!(stderr.contains("the plugin crashed while loading: the worker aborted (SIGABRT)"), "{stderr}");
    assert_eq!(&rows(run.path()), magnitude_alone());
    let other = tempfile::tempdir().unwrap();
    let o = bench(other.path(), "misbehave");
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown pruner 'misbehave'") && stderr.contains("crashed while loading"), "{stderr}");
}

#[test]
fn prune_in_a_worker_survives_an_abort_and_matches_in_process_masks() {
    let dir = tempfile::tempdir().unwrap();
    let model = hyperprune_tests::write_model(dir.path(), "cnn-digits", 1);
    let prune = |mode: &str, isolate: &str, out: &Path| prune_misbehave(&model, mode, isolate, out);
    let aborted = dir.path().join("aborted.safetensors");
    let o = prune("abort", "worker", &aborted);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("plugin 'misbehave': the worker aborted (SIGABRT)"), "{stderr}");
    assert!(!aborted.exists(), "nothing written");
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    assert!(prune("ok", "worker", &a).status.success());
    assert!(prune("ok", "none", &b).status.success());
    let masks = |p: &Path| {
        hyperprune_tests::read_masks(
            &p.with_file_name(format!("{}.masks.safetensors", p.file_stem().unwrap().to_str().unwrap())),
        )
    };
    assert_eq!(masks(&a), masks(&b));
}

#[test]
fn a_bench_stopped_and_resumed_mid_call_does_not_time_the_call_out() {
    ensure_built();
    let run = tempfile::tempdir().unwrap();
    let mark = run.path().join("in-a-call");
    // Each call takes 1.5 s against a 3 s timeout; supervisor and worker are stopped for 4 s
    // in the first (as Ctrl-Z or SIGSTOP would) and continued.
    let args = bench_args(run.path(), "misbehave", &["--opt", "misbehave.mode=slow", "--timeout", "3"]);
    let child = Command::new(release_dir().join("hyperprune"))
        .args(&args)
        .env_remove("HYPERPRUNE_PLUGIN_PATH")
        .env("HYPERPRUNE_FIXTURE_SLOW_MARK", &mark)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !mark.exists() {
        assert!(start.elapsed().as_secs() < 60, "the first call starts");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
        // The workers are the supervisor's children.
        assert!(Command::new("pkill").args([sig, "-P", &pid]).status().unwrap().success());
    };
    signal("-STOP");
    std::thread::sleep(std::time::Duration::from_secs(4));
    signal("-CONT");
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let all = rows(run.path());
    assert!(!all.is_empty());
    let errors: Vec<&serde_json::Value> = all.iter().map(|r| &r["error"]).filter(|e| !e.is_null()).collect();
    assert!(errors.is_empty(), "no call timed out: {errors:?}");
}

#[test]
fn ctrl_c_cancels_the_running_call_keeps_the_written_rows_and_the_bench_resumes() {
    ensure_built();
    let run = tempfile::tempdir().unwrap();
    // Magnitude's rows of member 0 come first; then the fixture loops, ignoring cancelled().
    let args = bench_args(run.path(), "magnitude,misbehave", &["--opt", "misbehave.mode=loop"]);
    let child = Command::new(release_dir().join("hyperprune"))
        .args(&args)
        .env_remove("HYPERPRUNE_PLUGIN_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let results = run.path().join("results.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&results).unwrap_or_default().lines().count() < 2 {
        assert!(start.elapsed().as_secs() < 60, "magnitude's first rows are written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300)); // the fixture is looping now
    let interrupted_at = std::time::Instant::now();
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let waited = interrupted_at.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted: 2 new rows written"), "{stderr}");
    assert!(stderr.contains("run the same command again to resume"), "{stderr}");
    assert!((4.5..30.0).contains(&waited), "cancelled, 5 s of grace, then killed: {waited:.1} s");
    assert_eq!(rows(run.path()).len(), 2, "the rows written before Ctrl-C stay, no row for the cancelled call");
    // Resuming finishes the run; the looping fixture now times out into error rows.
    let o =
        hyperprune(&bench_args(run.path(), "magnitude,misbehave", &["--opt", "misbehave.mode=loop", "--timeout", "1"]));
    assert!(o.status.success(), "{:?}", text(&o));
    let all = rows(run.path());
    assert_eq!(all.len(), 8);
    assert_eq!(all.iter().filter(|r| r["pruner"] == "misbehave" && r["status"] == "error").count(), 4);
}
