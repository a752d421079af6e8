//! The hypernetwork plugin end to end through the CLI: `fit` → state → `prune` and `bench`
//! with the state, two states side by side in one run, and its one-line errors. A small
//! digits zoo and a short fit keep it to seconds; quality is measured in `docs/HYPERNET.md`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use hyperprune_tests::{digits_zoo, hyperprune, jsonl, load_model, one_line_error, read_masks, text};

/// A 6-member digits zoo: 3 train, 1 val, 2 test members.
fn zoo() -> &'static Path {
    static ZOO: OnceLock<PathBuf> = OnceLock::new();
    ZOO.get_or_init(|| digits_zoo("hypernet-zoo", 6, 3, "0.5,0.17,0.33"))
}

/// Options of a fit that takes seconds.
const SHORT: [&str; 6] = ["--opt", "steps=30", "--opt", "val_every=10", "--opt", "val_samples=128"];

fn fit(arch: &str) -> PathBuf {
    let state = tempfile::tempdir().unwrap().keep().join(format!("hypernet-{arch}.state"));
    let arch_opt = format!("arch={arch}");
    let mut args = vec!["fit", "--pruner", "hypernet", "--zoo", zoo().to_str().unwrap(), "--out"];
    args.extend([state.to_str().unwrap(), "--opt", &arch_opt, "-q"]);
    args.extend(SHORT);
    let o = hyperprune(&args);
    assert!(o.status.success(), "{:?}", text(&o));
    state
}

/// States fitted once per test process.
fn states() -> &'static (PathBuf, PathBuf) {
    static STATES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    STATES.get_or_init(|| (fit("pointwise"), fit("equivariant")))
}

fn members(split: &str) -> Vec<PathBuf> {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(zoo().join("zoo.json")).unwrap()).unwrap();
    let list = meta["members"].as_array().unwrap();
    list.iter().filter(|m| m["split"] == split).map(|m| zoo().join(m["file"].as_str().unwrap())).collect()
}

fn prune(model: &Path, out: &Path, sparsity: &str, extra: &[&str]) -> Output {
    let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--pruner", "hypernet", "--sparsity", sparsity];
    args.extend(["--out", out.to_str().unwrap(), "-q"]);
    args.extend(extra);
    hyperprune(&args)
}

#[test]
fn a_fitted_state_prunes_unseen_members_exactly_and_reproducibly_with_no_data() {
    let (pointwise, equivariant) = states();
    let dir = tempfile::tempdir().unwrap();
    let curve = pointwise.with_file_name("hypernet-pointwise.fit.jsonl");
    let rows = jsonl(&curve);
    assert!(rows.iter().any(|r| r.get("val_retention").is_some()), "validated on the val member: {rows:?}");
    assert!(rows.iter().any(|r| r.get("loss").is_some()), "loss rows: {rows:?}");
    for model in members("test") {
        let n = load_model(&model).prunable_count();
        for (state, sparsity) in [(pointwise, "0.6"), (equivariant, "0.9")] {
            let opt = format!("state={}", state.display());
            let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
            for out in [&a, &b] {
                let o = prune(&model, out, sparsity, &["--opt", &opt]);
                assert!(o.status.success(), "{:?}", text(&o));
            }
            let masks = read_masks(&dir.path().join("a.masks.safetensors"));
            assert_eq!(masks, read_masks(&dir.path().join("b.masks.safetensors")), "same state, same masks");
            let pruned = masks.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count();
            let s: f64 = sparsity.parse().unwrap();
            assert_eq!(pruned, (s * n as f64).round() as usize, "exact sparsity {s} with {}", state.display());
            // The default floor (1 % of a layer, at least one weight) holds after the default
            // refinement step too.
            for (name, m) in &masks {
                let kept = m.iter().filter(|&&k| k).count();
                assert!(kept >= m.len().div_ceil(100).max(1), "{name}: {kept} of {} kept, below the floor", m.len());
            }
        }
    }
}

#[test]
fn refine_distils_the_networks_mask_on_the_stored_inputs_with_no_data_and_an_exact_budget() {
    let (pointwise, _) = states();
    let dir = tempfile::tempdir().unwrap();
    let model = &members("test")[0];
    let n = load_model(model).prunable_count();
    let state = format!("state={}", pointwise.display());
    let mut masks = Vec::new();
    for (name, refine) in [("plain", "refine=0"), ("refined", "refine=5")] {
        let out = dir.path().join(format!("{name}.safetensors"));
        // No --dataset: the refinement reads the inputs the state stores, not data.
        let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--pruner", "hypernet", "--sparsity", "0.75"];
        args.extend(["--out", out.to_str().unwrap(), "--opt", &state, "--opt", refine, "-vv"]);
        let o = hyperprune(&args);
        let (_, stderr) = text(&o);
        assert!(o.status.success(), "{stderr}");
        if refine == "refine=5" {
            assert!(
                stderr.contains("refine: 5 steps of size 0.005 on 32 stored inputs, distillation loss"),
                "{stderr}"
            );
        }
        // A prune-time option: the state fitted with the default is not "fitted with refine=0".
        assert!(!stderr.contains("fitted with"), "{stderr}");
        let m = read_masks(&dir.path().join(format!("{name}.masks.safetensors")));
        let pruned = m.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count();
        assert_eq!(pruned, (0.75 * n as f64).round() as usize, "{name}: exact sparsity");
        masks.push(m);
    }
    assert_ne!(masks[0], masks[1], "five distillation steps swap weights");
    // The fit chose the default step's size on the val member: the best mean val retention
    // of its candidates (the first on ties), which a default prune then takes.
    let curve = jsonl(&pointwise.with_file_name("hypernet-pointwise.fit.jsonl"));
    let candidates: Vec<(f64, f64)> = curve
        .iter()
        .filter_map(|r| {
            let by = r.get("val_retention_by_compression")?.as_array()?;
            let mean = by.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / by.len() as f64;
            Some((r.get("refine_step")?.as_f64()?, mean))
        })
        .collect();
    assert_eq!(candidates.len(), 5, "one curve row per candidate size: {curve:?}");
    let chosen = candidates.iter().fold(candidates[0], |b, &c| if c.1 > b.1 + 1e-9 { c } else { b }).0;
    let out = dir.path().join("default.safetensors");
    let mut args = vec!["prune", "--model", model.to_str().unwrap(), "--pruner", "hypernet", "--sparsity", "0.75"];
    args.extend(["--out", out.to_str().unwrap(), "--opt", &state, "-vv"]);
    let (_, stderr) = text(&hyperprune(&args));
    assert!(stderr.contains(&format!("refine: one step of size {chosen} on 16 stored inputs")), "{stderr}");
    let o = prune(
        model,
        &dir.path().join("t.safetensors"),
        "0.75",
        &["--opt", &state, "--opt", "refine=5", "--opt", "mask=threshold"],
    );
    one_line_error(&o, &["refine", "mask=threshold"]);
}

#[test]
fn two_states_bench_side_by_side_without_sharing_rows() {
    let (pointwise, equivariant) = states();
    let run = tempfile::tempdir().unwrap();
    for (state, arch) in [(pointwise, "pointwise"), (equivariant, "equivariant")] {
        let state_opt = format!("hypernet.state={}", state.display());
        let arch_opt = format!("hypernet.arch={arch}");
        let o = hyperprune(&[
            "bench",
            "--zoo",
            zoo().to_str().unwrap(),
            "--pruners",
            "hypernet",
            "--compression",
            "2,8",
            "--opt",
            &state_opt,
            "--opt",
            &arch_opt,
            "--out",
            run.path().to_str().unwrap(),
            "-q",
        ]);
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.path().join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * 2 * 2, "2 states x 2 test members x 2 compressions");
    for r in &rows {
        assert_eq!((&r["status"], &r["data"]), (&serde_json::json!("ok"), &serde_json::json!("none")), "{r}");
        assert_eq!(r["options"]["state"].as_str().map(str::len), Some(16), "the state's fingerprint: {r}");
    }
    let fingerprints: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["options"]["state"].as_str().unwrap()).collect();
    assert_eq!(fingerprints.len(), 2);
    let summary = std::fs::read_to_string(run.path().join("summary.md")).unwrap();
    // Named by the option that differs and by how each state was fitted, not by fingerprint.
    assert!(summary.contains("hypernet (arch=equivariant) [fitted on "), "{summary}");
    assert!(summary.contains("hypernet (arch=pointwise) [fitted on "), "{summary}");
    assert!(summary.lines().filter(|l| l.starts_with("| hypernet")).all(|l| !l.contains("state=")), "{summary}");
}

#[test]
fn pruning_without_a_state_or_with_a_broken_one_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = &members("test")[0];
    let out = dir.path().join("p.safetensors");
    one_line_error(&prune(model, &out, "0.5", &[]), &["hypernet", "fit"]);
    // Outside the fitted sparsity range: a warning, and the mask all the same.
    let (pointwise, _) = states();
    let opt = format!("state={}", pointwise.display());
    let o = prune(model, &dir.path().join("far.safetensors"), "0.99", &["--opt", &opt]);
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("outside the fitted range [0.3, 0.97]"), "{stderr}");
    let broken = dir.path().join("broken.state");
    std::fs::write(&broken, b"not a state").unwrap();
    let opt = format!("state={}", broken.display());
    one_line_error(&prune(model, &out, "0.5", &["--opt", &opt]), &["broken.state"]);
    // The learner fixture's state is JSON of another format: refused, naming the file.
    let foreign = dir.path().join("foreign.state");
    std::fs::write(&foreign, br#"{"format":"learner-v1","arch":"cnn-digits"}"#).unwrap();
    let opt = format!("state={}", foreign.display());
    one_line_error(&prune(model, &out, "0.5", &["--opt", &opt]), &["foreign.state"]);
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_fit_says_what_it_chose_at_info_level_and_its_validations_with_v() {
    let dir = tempfile::tempdir().unwrap();
    let fit = |name: &str, extra: &[&str]| {
        let state = dir.path().join(name);
        let mut args = vec!["fit", "--pruner", "hypernet", "--zoo", zoo().to_str().unwrap()];
        args.extend(["--out", state.to_str().unwrap()]);
        args.extend(SHORT);
        args.extend(extra);
        let o = hyperprune(&args);
        let (_, stderr) = text(&o);
        assert!(o.status.success(), "{stderr}");
        stderr
    };
    let stderr = fit("told.state", &[]);
    // The plugin's choices and summary show without -v (a bench's per-call lines do not).
    assert!(stderr.contains("[hypernet] base score: layer normalisation alpha"), "{stderr}");
    assert!(stderr.contains("[hypernet] fitted in"), "{stderr}");
    // Each validation is on the progress bar and in the curve; its line needs -v.
    assert!(!stderr.contains("step 10: val retention"), "{stderr}");
    let stderr = fit("told-v.state", &["-v"]);
    assert!(stderr.contains("step 10: val retention"), "{stderr}");
}

#[test]
fn a_fit_that_never_beats_its_start_says_the_state_prunes_like_magnitude() {
    // A learning rate far too large wrecks every step after the first, so validation keeps
    // step 0 (the untrained network: magnitude pruning, global or layer-normalised as the
    // base chosen on val, with floors), and the fit says so.
    let state = tempfile::tempdir().unwrap().keep().join("wrecked.state");
    let mut args = vec!["fit", "--pruner", "hypernet", "--zoo", zoo().to_str().unwrap(), "--out"];
    args.extend([state.to_str().unwrap(), "--opt", "lr=50", "-q"]);
    args.extend(SHORT);
    let o = hyperprune(&args);
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let curve = state.with_file_name("wrecked.fit.jsonl");
    let checks: Vec<(u64, f64)> =
        jsonl(&curve).iter().filter_map(|r| Some((r["step"].as_u64()?, r.get("val_retention")?.as_f64()?))).collect();
    assert_eq!(checks.first().map(|c| c.0), Some(0), "{checks:?}");
    assert!(checks.len() > 1 && checks[1..].iter().all(|c| c.1 < checks[0].1), "{checks:?}");
    assert!(stderr.contains("validation kept step 0"), "{stderr}");
    assert!(stderr.contains("prunes by magnitude ("), "{stderr}");
}

#[test]
fn a_fit_on_synthetic_inputs_sees_no_image_in_process_or_in_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let fit_to = |name: &str, extra: &[&str]| -> PathBuf {
        let state = dir.path().join(name);
        let mut args = vec!["fit", "--pruner", "hypernet", "--zoo", zoo().to_str().unwrap(), "--out"];
        args.extend([state.to_str().unwrap()]);
        args.extend(SHORT);
        args.extend(extra);
        let o = hyperprune(&args);
        assert!(o.status.success(), "{:?}", text(&o));
        state
    };
    let synthetic = ["--opt", "fit_data=synthetic"];
    let here = fit_to("here.state", &synthetic);
    let worker = fit_to("worker.state", &[&synthetic[..], &["--isolate", "worker", "-q"]].concat());
    let real = fit_to("real.state", &["-q"]);
    let bytes = std::fs::read(&here).unwrap();
    let header: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&bytes).lines().nth(1).unwrap()).unwrap();
    assert_eq!(header["options"]["fit_data"], "synthetic", "the state says how it was fitted: {header}");
    let curve = std::fs::read_to_string(here.with_file_name("here.fit.jsonl")).unwrap();
    assert!(curve.lines().any(|l| l.contains("\"loss\"")), "it fitted: {curve}");
    assert!(!curve.contains("val_retention"), "no image, so no validation: {curve}");
    // Every state prunes unseen members exactly; the worker's equals the in-process one, and
    // the zoo's images give another.
    let model = &members("test")[0];
    let n = load_model(model).prunable_count();
    let masks = |state: &Path, sparsity: &str| {
        let opt = format!("state={}", state.display());
        let o = prune(model, &dir.path().join("p.safetensors"), sparsity, &["--opt", &opt]);
        assert!(o.status.success(), "{:?}", text(&o));
        read_masks(&dir.path().join("p.masks.safetensors"))
    };
    let mut differ = false;
    for sparsity in ["0.5", "0.75", "0.9"] {
        let m = masks(&here, sparsity);
        let s: f64 = sparsity.parse().unwrap();
        assert_eq!(m.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count(), (s * n as f64).round() as usize);
        assert_eq!(m, masks(&worker, sparsity), "the worker fits on the same synthetic inputs");
        differ |= m != masks(&real, sparsity);
    }
    assert!(differ, "synthetic inputs change the fit");
    // Only real or synthetic.
    let o = hyperprune(&[
        "fit",
        "--pruner",
        "hypernet",
        "--zoo",
        zoo().to_str().unwrap(),
        "--out",
        "x.state",
        "--opt",
        "fit_data=noise",
    ]);
    one_line_error(&o, &["fit_data", "real or synthetic", "noise"]);
}

/// The hypernetwork's own metadata in a state file the host wrote: after the host's two
/// header lines, the plugin's safetensors, whose metadata holds it as JSON.
fn plugin_meta(state: &Path) -> serde_json::Value {
    let bytes = std::fs::read(state).unwrap();
    let mut at = 0;
    for _ in 0..2 {
        at += bytes[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[at + 8..at + 8 + len]).unwrap();
    serde_json::from_str(header["__metadata__"]["hyperprune.hypernet"].as_str().unwrap()).unwrap()
}

#[test]
fn on_an_mlp_the_unit_stage_reads_the_input_moments_and_gives_up_whole_first_layer_units() {
    let spec = hyperprune_tests::root().join("tests/data/mlp-digits.json");
    let zoo = hyperprune_tests::digits_zoo_of(spec.to_str().unwrap(), "mlp-zoo", 6, 3, "0.5,0.17,0.33");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("mlp.state");
    let mut args = vec!["fit", "--pruner", "hypernet", "--zoo", zoo.to_str().unwrap(), "--out"];
    args.extend([state.to_str().unwrap(), "--opt", "units_q=0.3", "-q"]);
    args.extend(SHORT);
    let o = hyperprune(&args);
    assert!(o.status.success(), "{:?}", text(&o));
    // The host served the moments of the 8×8 digits through the ABI; the state keeps them.
    let units = &plugin_meta(&state)["units"];
    assert_eq!((units["q_max"].as_f64(), units["dim"].as_u64()), (Some(0.3), Some(64)), "{units}");
    assert!(units["samples"].as_u64().unwrap() > 100, "{units}");
    let rows = jsonl(&state.with_file_name("mlp.fit.jsonl"));
    assert!(rows.iter().any(|r| r["unit_stage_q_max"] == 0.3), "every check scores the stage: {rows:?}");
    // The conv nets of the other tests have no stage.
    assert!(plugin_meta(&states().0).get("units").is_none());

    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(zoo.join("zoo.json")).unwrap()).unwrap();
    let test = meta["members"].as_array().unwrap().iter().find(|m| m["split"] == "test").unwrap();
    let model = zoo.join(test["file"].as_str().unwrap());
    let n = load_model(&model).prunable_count();
    // Units given up whole: no weight into them, none of the next layer reading them.
    let given_up = |state: &Path, sparsity: &str| -> usize {
        let opt = format!("state={}", state.display());
        let o = prune(&model, &dir.path().join("p.safetensors"), sparsity, &["--opt", &opt]);
        assert!(o.status.success(), "{:?}", text(&o));
        let masks = read_masks(&dir.path().join("p.masks.safetensors"));
        let s: f64 = sparsity.parse().unwrap();
        assert_eq!(masks.iter().flat_map(|(_, m)| m).filter(|&&k| !k).count(), (s * n as f64).round() as usize);
        let (first, next) = (&masks[0].1, &masks[1].1);
        (0..32)
            .filter(|&o| first[o * 64..(o + 1) * 64].iter().all(|&k| !k) && (0..16).all(|r| !next[r * 32 + o]))
            .count()
    };
    // None at 2×; ⌊q(s) · 32⌋ at least (magnitude also empties a few dead units): at 10×
    // q = 0.3 · (log₂ 10 − 1) / 4 gives 5, from 32× on q = 0.3 gives 9. Which units go is
    // checked in the plugin's unit tests.
    assert_eq!(given_up(&state, "0.5"), 0);
    assert!(given_up(&state, "0.9") >= 5);
    assert!(given_up(&state, "0.97") >= 9);
}
