//! Learnable pruners end to end with the `learner` fixture: `hyperprune fit`, its curve and
//! checkpoint, the host-level `state=FILE` option in `prune` and `bench`, the errors around
//! states, and the host refusing data to a pruner that declared it needs none.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use hyperprune_tests::{
    digits_zoo, fixtures, hyperprune, hyperprune_with_env, jsonl, load_model, one_line_error, read_masks, text,
    write_model,
};

/// A 4-member digits zoo, trained once per test process: 2 train, 1 val, 1 test member.
fn zoo() -> &'static Path {
    static ZOO: OnceLock<PathBuf> = OnceLock::new();
    ZOO.get_or_init(|| digits_zoo("learn-zoo", 4, 2, "0.5,0.25,0.25"))
}

fn learner() -> String {
    fixtures().learner.to_str().unwrap().to_string()
}

/// `hyperprune --plugin <learner> <args>`.
fn with_learner(args: &[&str]) -> Output {
    let plugin = learner();
    let mut all = vec!["--plugin", plugin.as_str()];
    all.extend(args);
    hyperprune(&all)
}

fn fit(zoo: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["fit", "--pruner", "learner", "--zoo", zoo.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    with_learner(&args)
}

fn prune(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--pruner", "learner", "--sparsity", "0.75"];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    with_learner(&args)
}

/// A fitted state, made once per test process.
fn fitted_state() -> &'static Path {
    static STATE: OnceLock<PathBuf> = OnceLock::new();
    STATE.get_or_init(|| {
        let state = tempfile::tempdir().unwrap().keep().join("learner.state");
        let o = fit(zoo(), &state, &["-q"]);
        assert!(o.status.success(), "{:?}", text(&o));
        state
    })
}

/// The zoo's test member's file.
fn test_member(zoo: &Path) -> PathBuf {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(zoo.join("zoo.json")).unwrap()).unwrap();
    let member = meta["members"].as_array().unwrap().iter().find(|m| m["split"] == "test").expect("a test member");
    zoo.join(member["file"].as_str().unwrap())
}

#[test]
fn fit_writes_a_state_and_a_curve_and_pruning_with_it_matches_the_benchs_own_fit() {
    let state = fitted_state();
    let dir = state.parent().unwrap();
    let bytes = std::fs::read(state).unwrap();
    let mut parts = bytes.splitn(3, |&b| b == b'\n');
    assert_eq!(parts.next(), Some(&b"hyperprune-state/1"[..]), "the host's magic line");
    let header: serde_json::Value = serde_json::from_slice(parts.next().unwrap()).unwrap();
    assert_eq!((header["pruner"].as_str(), header["fit_zoo"]["name"].as_str()), (Some("learner"), Some("learn-zoo")));
    assert_eq!(header["fit_zoo"]["archs"], serde_json::json!(["cnn-digits"]));
    let saved: serde_json::Value = serde_json::from_slice(parts.next().unwrap()).unwrap();
    assert_eq!((saved["format"].as_str(), saved["arch"].as_str()), (Some("learner-v1"), Some("cnn-digits")));
    assert!(!dir.join("learner.state.checkpoint").exists(), "the checkpoint goes once the state is written");
    let curve = jsonl(&dir.join("learner.fit.jsonl"));
    assert_eq!(curve.len(), 1, "{curve:?}");
    // Served during fit (fit_needs_data): digits has 1,347 train images, so the val slice is
    // ⌊1347 / 10⌋ = 134 of them; distilling a model into itself (all-ones mask) costs nothing
    // beyond f32 rounding of identical logits.
    assert_eq!((curve[0]["members"].as_u64(), curve[0]["val_members"].as_u64()), (Some(2), Some(1)));
    assert_eq!(curve[0]["val_samples"].as_u64(), Some(134), "{curve:?}");
    assert!(curve[0]["distill_loss"].as_f64().unwrap().abs() < 1e-6, "{curve:?}");

    let model = test_member(zoo());
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    for out in [&a, &b] {
        let o = prune(&model, out, &["--opt", &format!("state={}", state.display())]);
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let masks = read_masks(&dir.join("a.masks.safetensors"));
    assert_eq!(masks, read_masks(&dir.join("b.masks.safetensors")));
    let n = load_model(&model).prunable_count();
    assert_eq!(masks.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count(), (0.75 * n as f64).round() as usize);

    // A bench fits the same pruner on the same zoo to the same state, and its rows match a
    // bench that loads the state fitted above.
    let in_run = tempfile::tempdir().unwrap();
    let loaded = tempfile::tempdir().unwrap();
    let bench = |out: &Path, extra: &[&str]| {
        let mut args = vec!["bench", "--zoo", zoo().to_str().unwrap(), "--pruners", "learner", "--compression", "4"];
        args.extend(["--out", out.to_str().unwrap(), "-q"]);
        args.extend(extra);
        let o = with_learner(&args);
        assert!(o.status.success(), "{:?}", text(&o));
        jsonl(&out.join("results.jsonl"))
    };
    let rows = bench(in_run.path(), &[]);
    let keyed: Vec<PathBuf> = std::fs::read_dir(in_run.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert_eq!(keyed.len(), 1, "{keyed:?}");
    let name = keyed[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("learner-") && name.len() == "learner-01234567.bin".len(), "keyed by a hash: {name}");
    assert_eq!(std::fs::read(&keyed[0]).unwrap(), std::fs::read(state).unwrap());
    assert!(keyed[0].with_extension("fit.jsonl").is_file());
    let state_opt = format!("learner.state={}", state.display());
    let again = bench(loaded.path(), &["--opt", &state_opt]);
    let kept: Vec<String> = std::fs::read_dir(loaded.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // A given state is loaded, not refitted; only its fit curve comes along, for the report.
    assert_eq!(kept, vec!["learner-learner.fit.jsonl".to_string()]);
    assert_eq!(
        std::fs::read(loaded.path().join("state/learner-learner.fit.jsonl")).unwrap(),
        std::fs::read(dir.join("learner.fit.jsonl")).unwrap()
    );
    assert_eq!(rows.len(), 1);
    for (x, y) in rows.iter().zip(&again) {
        assert_eq!((&x["status"], &x["data"]), (&serde_json::json!("ok"), &serde_json::json!("none")), "{x}");
        assert_eq!(x["pruned_accuracy"], y["pruned_accuracy"]);
        assert_eq!(x["calib_samples"], 0);
    }
}

#[test]
fn a_learner_whose_load_state_aborts_is_one_error_line_under_isolation() {
    // The bench fits in a worker, then loads the state in a probe worker before loading it
    // in its own process: the abort ends the probe, and the bench says so in one line.
    let run = tempfile::tempdir().unwrap();
    let (plugin, zoo, out) = (learner(), zoo().to_str().unwrap(), run.path().to_str().unwrap());
    let o = hyperprune_tests::hyperprune_with_env(
        &["--plugin", &plugin, "bench", "--zoo", zoo, "--pruners", "learner", "--compression", "4", "--out", out, "-q"],
        &[("HYPERPRUNE_FIXTURE_ABORT_IN_LOAD_STATE", "1")],
    );
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "a clean failure, not an abort: {stderr}");
    assert!(stderr.contains("plugin 'learner' crashed while loading the state"), "{stderr}");
    assert!(stderr.contains("the worker aborted (SIGABRT)"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn an_interrupted_fit_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("learner.state");
    let checkpoint = dir.path().join("learner.state.checkpoint");
    // Interrupted from outside its options, so the rerun is the same fit.
    let plugin = learner();
    let args = ["--plugin", &plugin, "fit", "--pruner", "learner", "--zoo", zoo().to_str().unwrap()];
    let o = hyperprune_with_env(
        &[&args[..], &["--out", state.to_str().unwrap(), "-q"]].concat(),
        &[("HYPERPRUNE_FIXTURE_INTERRUPT_FIT", "1")],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("interrupted after the checkpoint"), "{:?}", text(&o));
    assert!(checkpoint.is_file() && !state.exists(), "the checkpoint stays, no state is written");
    // A checkpoint written with --opt interrupt=true is another fit's: it is not resumed.
    let other = dir.path().join("other.state");
    let o = fit(zoo(), &other, &["--opt", "interrupt=true", "-q"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let other_checkpoint = std::fs::read(dir.path().join("other.state.checkpoint")).unwrap();
    let o = fit(zoo(), &other, &[]);
    one_line_error(
        &o,
        &["other.state.checkpoint", "a checkpoint of another fit", "option interrupt = true, this fit false"],
    );
    assert_eq!(std::fs::read(dir.path().join("other.state.checkpoint")).unwrap(), other_checkpoint, "left as it was");
    let o = fit(zoo(), &state, &[]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    assert!(stdout.contains("resumed from a checkpoint"), "{stdout}");
    assert!(state.is_file() && !checkpoint.exists());
    let curve = jsonl(&dir.path().join("learner.fit.jsonl"));
    assert_eq!(curve.len(), 2, "the resumed fit appends to the curve: {curve:?}");
    assert_eq!((&curve[0]["resumed"], &curve[1]["resumed"]), (&serde_json::json!(false), &serde_json::json!(true)));
}

#[test]
fn a_corrupt_or_missing_state_file_is_bad_input_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 1);
    let out = dir.path().join("out.safetensors");
    let corrupt = dir.path().join("corrupt.state");
    std::fs::write(&corrupt, b"\x00\x01 not json").unwrap();
    let o = prune(&model, &out, &["--opt", &format!("state={}", corrupt.display())]);
    one_line_error(&o, &["corrupt.state", "pruner 'learner' cannot load this state", "not a learner state"]);
    let foreign = dir.path().join("foreign.state");
    std::fs::write(&foreign, br#"{"format": "hypernet-v3", "layers": []}"#).unwrap();
    let o = prune(&model, &out, &["--opt", &format!("state={}", foreign.display())]);
    one_line_error(&o, &["foreign.state", "\"hypernet-v3\", expected 'learner-v1'"]);
    let missing = dir.path().join("missing.state");
    let o = prune(&model, &out, &["--opt", &format!("state={}", missing.display())]);
    one_line_error(&o, &["missing.state", "state file not found", "hyperprune fit --pruner learner"]);
    let run = dir.path().join("run");
    let o = with_learner(&[
        "bench",
        "--zoo",
        zoo().to_str().unwrap(),
        "--pruners",
        "learner",
        "--opt",
        &format!("learner.state={}", corrupt.display()),
        "--out",
        run.to_str().unwrap(),
        "-q",
    ]);
    one_line_error(&o, &["corrupt.state", "cannot load this state"]);
    assert!(!out.exists());
}

#[test]
fn a_state_fitted_on_another_architecture_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "lenet5", 1);
    let out = dir.path().join("out.safetensors");
    let o = prune(&model, &out, &["--opt", &format!("state={}", fitted_state().display())]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 2, "a warning and the error: {stderr}");
    assert!(
        lines[0].contains("fitted on zoo 'learn-zoo' (digits cnn-digits), now applied to a model of lenet5"),
        "{stderr}"
    );
    assert!(lines[1].contains("state was fitted on arch 'cnn-digits', this model is 'lenet5'"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn a_learnable_pruner_without_a_state_must_be_fitted_first() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 1);
    let o = prune(&model, &dir.path().join("out.safetensors"), &[]);
    one_line_error(
        &o,
        &[
            "pruner 'learner' must be fitted first: run `hyperprune fit --pruner learner --zoo DIR --out learner.state`, \
           then pass --opt state=learner.state",
        ],
    );
}

#[test]
fn fit_refuses_a_zoo_without_train_members_and_pruners_that_learn_nothing() {
    let test_only = digits_zoo("test-only", 1, 2, "0,0,1");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.state");
    let o = fit(&test_only, &state, &[]);
    one_line_error(&o, &[test_only.to_str().unwrap(), "no trained members in its train split"]);
    assert!(!state.exists());
    let o = hyperprune(&["fit", "--pruner", "magnitude", "--zoo", zoo().to_str().unwrap(), "--out", "/tmp/x.state"]);
    one_line_error(&o, &["pruner 'magnitude' is not learnable"]);
    let model = write_model(dir.path(), "cnn-digits", 1);
    let o = hyperprune(&[
        "prune",
        "--model",
        model.to_str().unwrap(),
        "--pruner",
        "magnitude",
        "--sparsity",
        "0.5",
        "--opt",
        "state=x.state",
        "--out",
        dir.path().join("o.safetensors").to_str().unwrap(),
    ]);
    one_line_error(&o, &["pruner 'magnitude' learns nothing"]);
}

#[test]
fn a_data_free_pruner_is_refused_every_data_service_and_a_data_aware_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "cnn-digits", 1);
    let misbehave = fixtures().misbehave.to_str().unwrap().to_string();
    let o = hyperprune(&[
        "--plugin",
        &misbehave,
        "prune",
        "--model",
        model.to_str().unwrap(),
        "--pruner",
        "misbehave",
        "--opt",
        "mode=probe-data",
        "--sparsity",
        "0.5",
        "--dataset",
        "digits",
        "--out",
        dir.path().join("o.safetensors").to_str().unwrap(),
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let probe = stderr.split("probe: ").nth(1).expect("the probe's report").trim();
    let answers: Vec<&str> = probe.split(" | ").collect();
    assert_eq!(answers.len(), 8, "{probe}");
    for answer in &answers[..7] {
        assert!(answer.contains("=Unavailable: ") && answer.contains("declared it needs no data"), "{answer}");
    }
    assert!(answers[6].starts_with("input_moments="), "{probe}");
    assert!(answers[7].starts_with("checkpoint=Unavailable") && answers[7].contains("only available while fitting"));

    // In one bench: the data-free probe's rows are error rows saying what it was refused,
    // the data-aware pruner's rows used calibration data.
    let run = dir.path().join("run");
    let o = hyperprune(&[
        "--plugin",
        &misbehave,
        "bench",
        "--zoo",
        zoo().to_str().unwrap(),
        "--pruners",
        "misbehave,obs",
        "--opt",
        "misbehave.mode=probe-data",
        "--compression",
        "2",
        "--calib-samples",
        "64",
        "--out",
        run.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let rows = jsonl(&run.join("results.jsonl"));
    assert_eq!(rows.len(), 2);
    for row in rows {
        if row["pruner"] == "misbehave" {
            assert_eq!((&row["status"], &row["data"]), (&serde_json::json!("error"), &serde_json::json!("none")));
            assert!(row["error"].as_str().unwrap().contains("evaluate(val)=Unavailable"), "{row}");
        } else {
            assert_eq!((&row["status"], &row["data"]), (&serde_json::json!("ok"), &serde_json::json!("train")));
            assert_eq!(row["calib_samples"], 64, "{row}");
        }
    }
    let summary = std::fs::read_to_string(run.join("summary.md")).unwrap();
    assert!(
        summary.contains("|  data |") && summary.contains("|  none |") && summary.contains("| train |"),
        "{summary}"
    );
}

#[test]
fn a_fit_in_a_worker_writes_the_same_state_and_fails_as_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("isolated.state");
    let o = fit(zoo(), &state, &["--isolate", "worker"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("fitted learner"), "{:?}", text(&o));
    assert_eq!(std::fs::read(&state).unwrap(), std::fs::read(fitted_state()).unwrap());
    // A fit that fails after its checkpoint: one line, the checkpoint stays for a resume.
    let broken = dir.path().join("broken.state");
    let o = fit(zoo(), &broken, &["--isolate", "worker", "--opt", "interrupt=true"]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted after the checkpoint"), "{stderr}");
    assert!(dir.path().join("broken.state.checkpoint").is_file() && !broken.exists());
}

#[test]
fn a_merged_zoo_of_two_architectures_fits_only_pruners_that_say_fits_any_arch() {
    let wide_spec = hyperprune_tests::root().join("studies/cnn-digits-2x.json");
    let wide = hyperprune_tests::digits_zoo_of(wide_spec.to_str().unwrap(), "wide-zoo", 4, 2, "0.5,0.25,0.25");
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed");
    let o = hyperprune_tests::zoo_merge(&mixed, &[zoo(), &wide]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("8 members (train 4, val 2, test 2)"), "{:?}", text(&o));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(mixed.join("zoo.json")).unwrap()).unwrap();
    let ids: Vec<&str> = meta["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"learn-zoo:0000") && ids.contains(&"wide-zoo:0000"), "{ids:?}");
    // Merging into an existing folder is refused.
    let again = hyperprune_tests::zoo_merge(&mixed, &[zoo(), &wide]);
    one_line_error(&again, &["already exists"]);

    // The learner fixture fits on one architecture: refused, naming the capability.
    let o = fit(&mixed, &dir.path().join("l.state"), &[]);
    one_line_error(&o, &["differ in architecture", "fits_any_arch"]);
    // The hypernetwork fits on both and its state prunes either.
    let state = dir.path().join("h.state");
    let o = hyperprune(&[
        "fit",
        "--pruner",
        "hypernet",
        "--zoo",
        mixed.to_str().unwrap(),
        "--out",
        state.to_str().unwrap(),
        "--opt",
        "steps=20",
        "--opt",
        "val_every=10",
        "--opt",
        "calib_samples=32",
        "--opt",
        "val_samples=64",
        "-q",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let header = std::fs::read(&state).unwrap();
    let header: serde_json::Value = serde_json::from_slice(header.split(|&b| b == b'\n').nth(1).unwrap()).unwrap();
    assert_eq!(header["fit_zoo"]["archs"], serde_json::json!(["cnn-digits", "cnn-digits-2x"]));
    let run = dir.path().join("run");
    let o = hyperprune(&[
        "bench",
        "--zoo",
        mixed.to_str().unwrap(),
        "--pruners",
        "hypernet",
        "--opt",
        &format!("hypernet.state={}", state.display()),
        "--compression",
        "4",
        "--out",
        run.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let rows = jsonl(&run.join("results.jsonl"));
    let archs: std::collections::BTreeSet<&str> = rows.iter().map(|r| r["arch"].as_str().unwrap()).collect();
    assert_eq!(archs.into_iter().collect::<Vec<_>>(), ["cnn-digits", "cnn-digits-2x"]);
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
}
